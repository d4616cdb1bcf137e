"""End-to-end training with DeepSpeed, the real base codec in the loop.

``dualcodec train EXPERIMENT.toml`` builds the model from ``[model]``, draws random
crops (with flips and 90-degree rotations) from ``[data] train_dir``, and minimises

    loss = D(x, x_hat) + lmbda(qp) * (side_bits + base_bits) / pixels + aux_loss

where ``qp`` is drawn per step from ``[base] qp_min..qp_max``. ``base_bits`` is the
real encoder's bits with the gradient of the rho-domain estimate (:mod:`dualcodec.proxy`);
``aux_loss`` trains the entropy model's quantiles (their own parameter group, no weight
decay). The DeepSpeed JSON owns the batch size, optimizer, schedule (and so the number
of steps) and precision. The run folder holds the resolved experiment, the DeepSpeed
JSON, a JSON-lines log and ``model.pt``, exported at the best validation loss.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dualcodec.config import Experiment
from dualcodec.errors import DualcodecError
from dualcodec.model import DualLayerModel, lmbda_at, save_model
from dualcodec.proxy import RealCodecLayer
from dualcodec.video import IMAGE_SUFFIXES

class CropSampler:
    """Random augmented crops from images held in memory (uint8 ``[B,3,c,c]``)."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int) -> None:
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise DualcodecError(f"no training image is at least {crop} pixels on each side")
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        out = np.empty((size, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(size):
            im = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(im.shape[0] - self.crop + 1)
            x = self.rng.integers(im.shape[1] - self.crop + 1)
            patch = im[y : y + self.crop, x : x + self.crop]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[i] = np.rot90(patch, self.rng.integers(4))
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def fixed_crops(images: list[np.ndarray], crop: int, per_image: int) -> torch.Tensor:
    """The same validation crops every time: a regular grid over each image."""
    out = []
    for im in images:
        h, w = im.shape[:2]
        for k in range(per_image):
            y = (h - crop) * k // max(per_image - 1, 1)
            x = (w - crop) * (per_image - 1 - k) // max(per_image - 1, 1)
            out.append(im[y : y + crop, x : x + crop])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def load_images(folder: Path) -> list[np.ndarray]:
    from PIL import Image

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DualcodecError(f"no training images found under {folder}")
    return [np.asarray(Image.open(p).convert("RGB")) for p in files]


@dataclass
class StepStats:
    loss: float
    distortion: float
    side_bpp: float
    base_bpp: float
    psnr: float


def _distortion(x_hat: torch.Tensor, x_f: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l1":
        return (x_hat - x_f).abs().mean()
    return ((x_hat - x_f) ** 2).mean()


def _loss(model_out, x: torch.Tensor, exp: Experiment, qp: int, step: int | None = None) -> tuple[torch.Tensor, StepStats]:
    """The training loss; ``step`` (``None`` in validation) ramps the side-bits weight in."""
    x_f = x.float() / 255.0
    x_hat = model_out.x_hat.float()
    distortion = _distortion(x_hat, x_f, exp.loss.distortion)
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    side_bpp = model_out.side_bits.sum() / pixels
    base_bpp = model_out.base_bits.sum() / pixels
    side_weight = 1.0
    if step is not None and exp.loss.side_rate_warmup > 0:
        side_weight = min(1.0, step / exp.loss.side_rate_warmup)
    rate = side_weight * side_bpp + (base_bpp if exp.loss.base_rate else 0.0)
    loss = distortion + lmbda_at(exp.loss.lmbda, qp) * rate
    mse = ((x_hat.detach().clamp(0, 1) - x_f) ** 2).mean()
    stats = StepStats(loss.item(), distortion.item(), side_bpp.item(), base_bpp.item(), (-10 * torch.log10(mse)).item())
    return loss, stats


def _single_process_env() -> None:
    """Without a launcher, DeepSpeed looks for MPI; describe a one-process world instead."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:  # a free port, so several runs can share a machine
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)


def train(exp: Experiment, experiment_path: Path, progress: bool = True) -> Path:
    """Run one experiment; returns the path of the exported model file."""
    import deepspeed
    from tqdm import tqdm

    base_dir = Path(experiment_path).parent
    ds_path = base_dir / exp.train.deepspeed
    try:
        ds_config = json.loads(ds_path.read_text())
    except FileNotFoundError:
        raise DualcodecError(f"DeepSpeed config not found: {ds_path}") from None
    steps = int(ds_config["scheduler"]["params"]["total_num_steps"])

    run_dir = Path(exp.train.out_dir) / exp.train.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "experiment.json").write_text(json.dumps(asdict(exp), indent=2))
    (run_dir / "deepspeed.json").write_text(json.dumps(ds_config, indent=2))

    torch.manual_seed(exp.train.seed)
    images = load_images(Path(exp.data.train_dir))
    if len(images) <= exp.data.val_images:
        raise DualcodecError(f"need more than {exp.data.val_images} images in {exp.data.train_dir}")
    val_x = fixed_crops(images[: exp.data.val_images], exp.data.crop, exp.data.val_crops)
    sampler = CropSampler(images[exp.data.val_images :], exp.data.crop, exp.train.seed)
    qp_rng = np.random.default_rng(exp.train.seed + 1)

    _single_process_env()
    model = DualLayerModel(exp.model)
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    groups = [{"params": main}] + ([{"params": aux, "weight_decay": 0.0}] if aux else [])
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=ds_config)
    batch = engine.train_micro_batch_size_per_gpu()

    log = (run_dir / "log.jsonl").open("a")
    best = float("inf")
    model_path = run_dir / "model.pt"
    start = time.time()
    bar = tqdm(range(1, steps + 1), desc=exp.train.name, disable=not progress, dynamic_ncols=True)
    for step in bar:
        engine.train()
        qp = int(qp_rng.integers(exp.base.qp_min, exp.base.qp_max + 1))
        x = sampler.batch(batch).to(engine.device)
        out = engine(x, RealCodecLayer(exp.base.codec, exp.base.preset, qp))
        loss, stats = _loss(out, x, exp, qp, step)
        aux_loss = model.aux_loss() if aux else 0.0
        engine.backward(loss + aux_loss)
        engine.step()
        if step % exp.train.log_every == 0:
            bar.set_postfix(loss=f"{stats.loss:.4f}", psnr=f"{stats.psnr:.2f}", side=f"{stats.side_bpp:.3f}")
            log.write(json.dumps({"step": step, "time": time.time() - start, "qp": qp, "lr": engine.get_lr()[0],
                                  "train": asdict(stats)}) + "\n")
        if step % exp.train.val_every == 0 or step == steps:
            val = validate(model, val_x, exp)
            log.write(json.dumps({"step": step, "time": time.time() - start, "val": asdict(val)}) + "\n")
            log.flush()
            if val.loss < best:
                best = val.loss
                save_model(model, exp.model, exp.train.name, model_path, exp.loss.lmbda)
                model.train()
    log.close()
    return model_path


@torch.no_grad()
def validate(model: DualLayerModel, val_x: torch.Tensor, exp: Experiment) -> StepStats:
    """Loss on the fixed validation crops at ``[train] val_qp``, real codec, no augmentation."""
    model.eval()
    totals = np.zeros(5)
    chunks = val_x.split(16)
    device = next(model.parameters()).device
    for x in chunks:
        x = x.to(device)
        out = model(x, RealCodecLayer(exp.base.codec, exp.base.preset, exp.train.val_qp))
        _, stats = _loss(out, x, exp, exp.train.val_qp)
        totals += np.array([stats.loss, stats.distortion, stats.side_bpp, stats.base_bpp, stats.psnr])
    return StepStats(*(totals / len(chunks)))
