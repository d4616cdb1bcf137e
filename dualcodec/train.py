"""End-to-end training with DeepSpeed, the real base codec in the loop.

``dualcodec train EXPERIMENT.toml`` builds the model from ``[model]``, streams augmented
crops (random crop, flips, 90-degree rotations; :mod:`dualcodec.data`, NVIDIA DALI)
from ``[data] train_dirs`` (validation held out from every source) and minimises

    loss = D(x, x_hat) + lmbda(qp) * (w(t) * side_bits + base_bits) / pixels  (+ alignment_weight * A)

on 4:2:0 planes (:func:`dualcodec.data.crops_to_planes`), ``D`` weighing Y, Cb and Cr
6:1:1 as PSNR-YUV does, ``pixels`` the luma samples.

where ``qp`` is drawn per step from ``[base] qp_min..qp_max`` (the same on every rank).
``base_bits`` is the real encoder's bits with the gradient of the rho-domain estimate
(:mod:`dualcodec.proxy`), or, with ``[data] pairs``, the bits of a base layer coded
beforehand from whole pictures (:mod:`dualcodec.pairs`; the QPs drawn are then the
pairs' QPs in that range); ``w(t)`` ramps the side bits in (:func:`side_weight`), and with
``[loss] train_skip`` each block is enhanced or skipped as the encoder would choose.
A temporal model (``model.temporal``) trained on clips adds its motion's alignment error
``A`` (:meth:`~dualcodec.nets.upsampler.FoldedUpsampler.alignment_error`).

The crop size, clip length, batch and learning rate follow ``[schedule]``
(:mod:`dualcodec.schedule`: multigrid stages, linear scaling, warm-up, restarts). The
DeepSpeed JSON owns precision, gradient clipping and ZeRO.

Distributed: launched by ``deepspeed`` (or any launcher that sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), each rank reads its
own shard; DeepSpeed averages gradients. Training statistics are all-reduced before
rank 0 logs them; only rank 0 writes the log, TensorBoard and the exported model.

The run folder ``out_dir/name`` holds ``experiment.json``, ``deepspeed.json``,
``log.jsonl``, ``tensorboard/``, ``checkpoints/`` (DeepSpeed checkpoints every
``checkpoint_every`` steps and at each better validation loss, with each rank's data
and random state) and ``model.pt``, exported at the best validation loss.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dualcodec.config import Experiment, LossConfig
from dualcodec.data import TRAINING_FORMAT, crops_to_planes
from dualcodec.errors import DualcodecError
from dualcodec.model import DualLayerModel, lmbda_at, plane_distortion, save_model
from dualcodec.pairs import PairSet
from dualcodec.proxy import RealCodecLayer
from dualcodec.schedule import Plan, Stage, make_plan

_OWNED_BY_EXPERIMENT = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                        "optimizer", "scheduler")


@dataclass(frozen=True)
class StepStats:
    loss: float  # rate-distortion: what validation picks the model by (a temporal model's alignment term apart)
    distortion: float
    side_bpp: float
    base_bpp: float
    psnr: float
    alignment: float = 0.0  # a temporal model's alignment error on clips (FRVSR's motion loss)


def psnr_yuv(y_hat, uv_hat, y, uv) -> float:
    """PSNR-YUV (6:1:1) in dB of unit-scale planes, as 8-bit code values of the training format."""
    from dualcodec.data import TRAINING_FORMAT
    from dualcodec.yuv import quantize_planes, unit_to_planes

    fmt = TRAINING_FORMAT
    rec = quantize_planes(*unit_to_planes(y_hat.detach().float(), uv_hat.detach().float(), fmt), fmt)
    ref = unit_to_planes(y.float(), uv.float(), fmt)
    values = [10 * torch.log10(fmt.max_code ** 2 / ((a - b) ** 2).mean().clamp_min(1e-10))
              for a, b in ((rec[0], ref[0]), (rec[1][:, :1], ref[1][:, :1]), (rec[1][:, 1:], ref[1][:, 1:]))]
    return float((6 * values[0] + values[1] + values[2]) / 8)


def side_weight(loss: LossConfig, step: int | None) -> float:
    """The side bits' weight in units of ``lmbda`` at ``step`` (``None``: validation, fully
    ramped in): ``side_lmbda`` times 0 for ``side_rate_delay`` steps, then linear to 1."""
    if step is None:
        return loss.side_lmbda
    if step < loss.side_rate_delay:
        return 0.0
    ramp = 1.0 if loss.side_rate_warmup == 0 else min(1.0, (step - loss.side_rate_delay) / loss.side_rate_warmup)
    return loss.side_lmbda * ramp


def _loss(model_out, y: torch.Tensor, uv: torch.Tensor, exp: Experiment, qp: int,
          side: float) -> tuple[torch.Tensor, StepStats]:
    """The training loss, the side bits weighed ``side`` (:func:`side_weight`)."""
    y_hat, uv_hat = model_out.y_hat.float(), model_out.uv_hat.float()
    distortion = plane_distortion(y_hat, uv_hat, y, uv, exp.loss.distortion)
    skipped = 0.0
    if exp.loss.skip_weight and model_out.y_skip is not None:
        skipped = plane_distortion(model_out.y_skip.float(), model_out.uv_skip.float(), y, uv, exp.loss.distortion)
    pixels = y.shape[0] * y.shape[2] * y.shape[3]
    side_bpp = model_out.side_bits.sum() / pixels
    base_bpp = model_out.base_bits.sum() / pixels
    rate = side * side_bpp + (base_bpp if exp.loss.base_rate else 0.0)
    loss = distortion + exp.loss.skip_weight * skipped + lmbda_at(exp.loss.lmbda, qp) * rate
    alignment = 0.0 if model_out.alignment is None else model_out.alignment
    stats = StepStats(loss.item(), distortion.item(), side_bpp.item(), base_bpp.item(), psnr_yuv(y_hat, uv_hat, y, uv),
                      float(alignment.detach()) if torch.is_tensor(alignment) else alignment)
    return loss + exp.loss.alignment_weight * alignment, stats


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _world() -> World:
    """The launcher's world, or a one-process world (without one, DeepSpeed looks for MPI)."""
    if "RANK" not in os.environ:
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as probe:  # a free port, so several runs can share a machine
                probe.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
        for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))


def deepspeed_config(exp: Experiment, experiment_path: Path, world: World) -> dict:
    """The DeepSpeed JSON named by the experiment, with the experiment's batch filled in."""
    path = Path(experiment_path).parent / exp.train.deepspeed
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise DualcodecError(f"DeepSpeed config not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise DualcodecError(f"{path} is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise DualcodecError(f"{path} is not a DeepSpeed config: not UTF-8 text (JSON)") from None
    clash = [key for key in _OWNED_BY_EXPERIMENT if key in config]
    if clash:
        raise DualcodecError(f"{path} sets {', '.join(clash)}: batch, optimizer and schedule belong to the "
                             "experiment's [schedule] section")
    if exp.schedule.batch % world.size:
        raise DualcodecError(f"schedule.batch={exp.schedule.batch} does not split over {world.size} ranks")
    config.update(train_batch_size=exp.schedule.batch, train_micro_batch_size_per_gpu=exp.schedule.batch // world.size,
                  gradient_accumulation_steps=1)
    config.setdefault("steps_per_print", 10**9)
    return config


def config_fingerprint(exp: Experiment, ds_config: dict, saved: dict | None = None) -> str:
    """What a checkpoint may resume under: everything but where the run folder lives.

    ``saved``: the experiment a run folder recorded. A setting it lacks (added to dualcodec
    since) is left out where it holds its default, so a run resumes under a newer version
    that does not use the setting, and is refused where it does."""
    tree = asdict(exp)
    del tree["train"]["out_dir"]
    if saved is not None:
        defaults = asdict(Experiment())
        for section, values in tree.items():
            for key in [k for k in values if k not in saved.get(section, {}) and values[k] == defaults[section][k]]:
                del values[key]
    blob = json.dumps({"experiment": tree, "deepspeed": ds_config}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _all_reduce_mean(values: np.ndarray, world: World) -> np.ndarray:
    if world.size == 1:
        return values
    import torch.distributed as dist

    tensor = torch.from_numpy(np.asarray(values, dtype=np.float64))
    dist.all_reduce(tensor)
    return tensor.numpy() / world.size


class RunLog:
    """Rank 0's JSON-lines log and TensorBoard writer; other ranks hold a silent one."""

    def __init__(self, run_dir: Path, world: World, start_step: int) -> None:
        self.active = world.is_main
        if not self.active:
            return
        from torch.utils.tensorboard import SummaryWriter

        path = run_dir / "log.jsonl"
        if path.exists():  # a resumed run forgets what happened after its checkpoint
            kept = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= start_step]
            path.write_text("".join(line + "\n" for line in kept))
        self.file = path.open("a")
        self.board = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def record(self, step: int, entry: dict, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self.file.write(json.dumps({"step": step, **entry}) + "\n")
        self.file.flush()
        for key, value in scalars.items():
            self.board.add_scalar(key, value, step)

    def images(self, step: int, tag: str, grid: torch.Tensor) -> None:
        if self.active:
            self.board.add_image(tag, grid, step)

    def close(self) -> None:
        if self.active:
            self.file.close()
            self.board.close()


@dataclass
class RunState:
    """What a checkpoint carries besides DeepSpeed's model, optimizer and scheduler state."""

    step: int = 0  # steps completed
    elapsed: float = 0.0  # training seconds before this process
    best: float = float("inf")
    stale: int = 0  # validations since the best one


@dataclass(frozen=True)
class TrainResult:
    model_path: Path  # exported at the best validation loss (written by rank 0)
    steps: int  # steps completed
    best_loss: float
    early_stop: bool
    model: DualLayerModel  # this rank's trained model, as it stands after the last step


def _checkpoint_paths(run_dir: Path) -> tuple[Path, Path]:
    return run_dir / "checkpoints", run_dir / "checkpoints" / "latest"


def _check_new_run_dir(run_dir: Path) -> None:
    """A new run writes into a new or empty folder, never over another run's files."""
    from dualcodec.outputs import check_output_folder

    if run_dir.is_dir() and any(run_dir.iterdir()):
        what = "a run" if (run_dir / "experiment.json").exists() else "files"
        raise DualcodecError(f"run folder {run_dir} already holds {what}; pass --resume to continue a run, "
                             "or set another train.name")
    check_output_folder(run_dir, [], make_parents=True)


TRAINING_STACK = {"deepspeed": "DeepSpeed", "nvidia.dali": "NVIDIA DALI", "tensorboard": "TensorBoard"}


def require_training_stack() -> None:
    """Refuse, in one line, to train without the ``dualcodec[train]`` extra."""
    import importlib.util

    def installed(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its parent package (nvidia) is missing
            return False

    missing = [name for module, name in TRAINING_STACK.items() if not installed(module)]
    if missing:
        raise DualcodecError(f"training needs {', '.join(missing)}, which this installation lacks: "
                             "pip install 'dualcodec[train]'")


def train(exp: Experiment, experiment_path: Path, progress: bool = True, resume: bool = False) -> TrainResult:
    """Run (or resume) one experiment."""
    require_training_stack()
    return Trainer(exp, experiment_path, resume).run(progress)


def _start_from(model: DualLayerModel, exp: Experiment) -> None:
    """Load the weights of the model file ``train.init`` into ``model``; its configuration
    must be the experiment's ``[model]``, or that of the same model per frame (``model.temporal``
    false, and so no temporal branch): a temporal model then starts as that model, its
    temporal part zero."""
    from dualcodec.model import load_model

    loaded = load_model(exp.train.init)
    theirs = asdict(loaded.config)
    changed = sorted(k for k, v in asdict(exp.model).items() if theirs[k] != v)
    per_frame_start = "temporal" in changed and set(changed) <= {"temporal", "temporal_width", "temporal_depth",
                                                                  "temporal_ahead"}
    if theirs["temporal"] or changed and not per_frame_start:
        raise DualcodecError(f"train.init {exp.train.init!r} is a model of another configuration "
                             f"(model.{', model.'.join(changed)} differ); fine-tuning needs the same [model] "
                             "(or, for a temporal model, the same model per frame)")
    missing, unexpected = model.load_state_dict(loaded.model.state_dict(), strict=not changed)
    if unexpected or not all(model.is_temporal_parameter(key) for key in missing):
        raise DualcodecError(f"train.init {exp.train.init!r}: weights do not fit the model "
                             f"(missing {missing}, unexpected {unexpected})")


class Trainer:
    """One rank's run: its model and DeepSpeed engine, data stream, log and checkpoints.

    :meth:`run` reads in the order a step happens: draw the QP, take a batch, step the
    engine, log, validate (exporting the model at a better loss), checkpoint.
    """

    def __init__(self, exp: Experiment, experiment_path: Path, resume: bool) -> None:
        import deepspeed

        from dualcodec.data import split_sources, validation_crops

        self.exp, self.world = exp, _world()
        ds_config = deepspeed_config(exp, experiment_path, self.world)
        self.ds_config = ds_config
        self.fingerprint = config_fingerprint(exp, ds_config)
        self.plan = make_plan(exp.schedule)
        self.run_dir = Path(exp.train.out_dir) / exp.train.name
        self.ckpt_dir, latest = _checkpoint_paths(self.run_dir)
        self._check_run_dir(resume, latest)
        self.train_files, val_files = split_sources(exp.data.train_dirs, exp.data.val_fraction, exp.data.val_gap)
        self.pairs = PairSet.open(exp.data.pairs) if exp.data.pairs else None
        if self.pairs:
            self.pairs.check(exp.model.scale, exp.base.codec, exp.base.preset, self.train_files)
            self.qps = self.pairs.qps_within(exp.base.qp_min, exp.base.qp_max)
        else:
            self.qps = tuple(range(exp.base.qp_min, exp.base.qp_max + 1))
        self.val_x = validation_crops(val_files, exp.data.val_crop, exp.data.val_crops, exp.data.val_clip)

        torch.manual_seed(exp.train.seed)  # identical initial weights on every rank
        model = DualLayerModel(exp.model)
        if exp.train.init and not resume:  # a resumed run's weights are its checkpoint's
            _start_from(model, exp)
        # A temporal model's temporal part (new, where the rest may start trained) at its own scale of the rate.
        temporal = [p for n, p in model.named_parameters() if model.is_temporal_parameter(n)]
        others = [p for n, p in model.named_parameters() if not model.is_temporal_parameter(n)]
        if exp.schedule.temporal_only:
            for p in others:
                p.requires_grad_(False)
        groups = [] if exp.schedule.temporal_only else [{"params": others, "lr": self.plan.peak_lr}]
        if temporal:
            groups.append({"params": temporal, "lr": self.plan.peak_lr * exp.schedule.temporal_lr_scale})
        optimizer = torch.optim.Adam(groups, lr=self.plan.peak_lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: self.plan.lr_at(t) / self.plan.peak_lr)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=ds_config)
        self.model: DualLayerModel = self.engine.module
        # The engine owns the batch: the experiment's, as deepspeed_config filled it in.
        self.batch = self.engine.train_micro_batch_size_per_gpu() * self.engine.gradient_accumulation_steps()
        if self.world.size > 1:  # every rank has checked the run folder before rank 0 writes into it
            import torch.distributed as dist

            dist.barrier()
        self.state = RunState()
        self.qp_rng = np.random.default_rng(exp.train.seed + 1)
        self.stage: Stage | None = None
        self.stream = None
        self.pending_stream_state = self._restore(latest) if resume else None
        if not resume:
            self._start(ds_config)
        self.log = RunLog(self.run_dir, self.world, self.state.step)

    # -- set-up --------------------------------------------------------------------------

    def _check_run_dir(self, resume: bool, latest: Path) -> None:
        if resume and not latest.exists():
            raise DualcodecError(f"nothing to resume: no checkpoint in {self.ckpt_dir}")
        if not resume:
            _check_new_run_dir(self.run_dir)
            return
        recorded = json.loads((self.run_dir / "experiment.json").read_text())
        saved, mine = recorded.pop("fingerprint", None), config_fingerprint(self.exp, self.ds_config, recorded)
        if saved != mine:
            raise DualcodecError(f"{self.run_dir} was trained under another configuration (fingerprint {saved}, now "
                                 f"{mine}); start a new run instead of resuming")

    def _start(self, ds_config: dict) -> None:
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "experiment.json").write_text(
                json.dumps({**asdict(self.exp), "fingerprint": self.fingerprint}, indent=2))
            (self.run_dir / "deepspeed.json").write_text(json.dumps(ds_config, indent=2))
            print(f"{self.exp.train.name}: {self.world.size} rank{'s' if self.world.size > 1 else ''}, global batch "
                  f"{self.batch}; {self.plan.describe()}", flush=True)

    def _restore(self, latest: Path) -> bytes | None:
        """Load the latest checkpoint; the data stream's state, if the stage has not changed."""
        _, client = self.engine.load_checkpoint(str(self.ckpt_dir))
        self.state = RunState(**client["run"])
        own = torch.load(self.ckpt_dir / latest.read_text().strip() / f"rank{self.world.rank}.pt", weights_only=False)
        self.qp_rng.bit_generator.state = own["qp_rng"]
        torch.set_rng_state(own["torch_rng"])
        if own.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(own["cuda_rng"])
        # At a stage boundary the next step starts a fresh stream, as it would have.
        return own["stream"] if own["stage"] == self.plan.stage_at(self.state.step).index else None

    # -- the loop ------------------------------------------------------------------------

    def run(self, progress: bool = True) -> TrainResult:
        from tqdm import tqdm

        exp, state = self.exp, self.state
        bar = tqdm(total=self.plan.total, initial=state.step, desc=exp.train.name,
                   disable=not (progress and self.world.is_main), dynamic_ncols=True)
        self.begin = time.time() - state.elapsed
        stop = False
        try:
            if exp.train.init and state.step == 0:  # a fine-tune's starting point, for its learning curve
                self.log.record(0, {"time": 0.0, "val": asdict(self.validate(self.val_x))}, {})
            self._window_reset()
            while state.step < self.plan.total:
                stage = self.plan.stage_at(state.step)
                stream = self.stream_for(stage, self.pending_stream_state)
                self.pending_stream_state = None
                qp = self.qps[int(self.qp_rng.integers(len(self.qps)))]
                stats = self.step(stream.next(), qp, state.step)
                state.step += 1
                bar.update(1)
                self._log_step(stats, stage, qp, bar)
                improved = False
                if state.step % exp.train.val_every == 0 or state.step == self.plan.total:
                    improved, stop = self._validate_and_export()
                if improved or stop or state.step % exp.train.checkpoint_every == 0 or state.step == self.plan.total:
                    state.elapsed = time.time() - self.begin
                    self.save_checkpoint(self.ckpt_dir, state, stream, self.qp_rng)
                if stop:
                    self._record_early_stop()
                    break
        finally:
            bar.close()
            self.log.close()
        return TrainResult(self.run_dir / "model.pt", state.step, state.best, stop, self.model)

    def _window_reset(self) -> None:
        self.window: list[np.ndarray] = []
        self.window_start, self.window_images = time.time(), 0

    def _log_step(self, stats: StepStats, stage: Stage, qp: int, bar) -> None:
        """Average the last ``log_every`` steps over the ranks into the log and TensorBoard."""
        self.window.append(np.array([getattr(stats, k) for k in StepStats.__dataclass_fields__]))
        self.window_images += self.batch * stage.clip
        if self.state.step % self.exp.train.log_every:
            return
        mean = StepStats(*_all_reduce_mean(np.mean(self.window, axis=0), self.world))
        rate = self.window_images / (time.time() - self.window_start)
        lr = self.engine.get_lr()[0]
        bar.set_postfix(loss=f"{mean.loss:.4f}", psnr=f"{mean.psnr:.2f}", lr=f"{lr:.2e}")
        self.log.record(self.state.step, {"time": time.time() - self.begin, "qp": qp, "lr": lr, "crop": stage.crop,
                                          "clip": stage.clip, "images_per_second": rate, "train": asdict(mean)},
                        {**{f"train/{k}": v for k, v in asdict(mean).items()}, "lr": lr, "images_per_second": rate})
        self._window_reset()

    def _validate_and_export(self) -> tuple[bool, bool]:
        """Validate; export the model at a better loss. ``(improved, stop early)``."""
        exp, state = self.exp, self.state
        val = self.validate(self.val_x)
        self.log.record(state.step, {"time": time.time() - self.begin, "val": asdict(val)},
                        {f"val/{k}": v for k, v in asdict(val).items()})
        validations = state.step // exp.train.val_every
        if self.world.is_main and exp.train.images_every and validations % exp.train.images_every == 0:
            first_frames = self.val_x[:4, 0] if self.val_x.dim() == 5 else self.val_x[:4]
            self.log.images(state.step, "val/original | bicubic | dualcodec", self.samples(first_frames))
        improved = val.loss < state.best
        state.best, state.stale = (val.loss, 0) if improved else (state.best, state.stale + 1)
        if improved and self.world.is_main:
            save_model(self.model, exp.model, exp.train.name, self.run_dir / "model.pt", exp.loss.lmbda)
        return improved, exp.train.patience > 0 and state.stale >= exp.train.patience

    def _record_early_stop(self) -> None:
        exp, state = self.exp, self.state
        self.log.record(state.step, {"time": time.time() - self.begin,
                                     "early_stop": {"best": state.best, "patience": exp.train.patience}}, {})
        if self.world.is_main:
            print(f"{exp.train.name}: early stop at step {state.step}: no better validation loss in "
                  f"{exp.train.patience} validations (best {state.best:.5f})", flush=True)

    def stream_for(self, stage: Stage, checkpoint: str | None):
        """The data stream of ``stage``; rebuilt (or restored from ``checkpoint``) when the stage changes."""
        if stage != self.stage or checkpoint is not None:
            from dualcodec.data import TrainStream, list_clips

            clips = stage.clip > 1
            items = list_clips(self.train_files, stage.clip) if clips else self.train_files
            items = list(self.pairs.files) if self.pairs else items
            self.stream = TrainStream(
                items, stage.crop, self.engine.train_micro_batch_size_per_gpu(), seed=self.exp.train.seed + stage.index,
                shard_id=self.world.rank, num_shards=self.world.size, device_id=self._device_id(),
                rotate=self.exp.data.rotate, crops_per_image=1 if clips else self.exp.data.crops_per_image,
                checkpoint=checkpoint, tile=2 * self.exp.model.scale if self.pairs else 0, flip=self.exp.data.flip)
            self.stage = stage
        return self.stream

    def _device_id(self) -> int | None:
        return self.engine.device.index if self.engine.device.type == "cuda" else None

    def step(self, x: torch.Tensor, qp: int, step: int) -> StepStats:
        self.engine.train()
        x = x.to(self.engine.device)
        side = side_weight(self.exp.loss, step)
        if self.pairs:
            y, uv, base = self.pairs.batch(x, qp, self.stream.sources(), self.exp.data.rotate, self.exp.data.flip)
            out = self.engine(y, uv, base, qp, TRAINING_FORMAT, self._skip_lmbda(qp, side))
        else:
            y, uv, out = self._forward(x, qp, self._skip_lmbda(qp, side))
        loss, stats = _loss(out, y, uv, self.exp, qp, side)
        self.engine.backward(loss)
        self.engine.step()
        return stats

    def _forward(self, x: torch.Tensor, qp: int, skip_lmbda: float | None):
        """Planes ``(y, uv)`` of crops ``x`` ``[B,3,c,c]`` or clips ``[B,T,3,c,c]`` (frames in
        order) and the model's output through the real base codec at ``qp``: clips are coded
        as short videos (P-frames, as in a file); a model without a side stream upsamples a
        clip's frames in order (:meth:`~dualcodec.model.DualLayerModel.forward_clips`), one
        with a side stream each frame as a picture."""
        clip = x.shape[1] if x.dim() == 5 else 1
        y, uv = crops_to_planes(x.flatten(0, 1) if clip > 1 else x)
        base = RealCodecLayer(self.exp.base.codec, self.exp.base.preset, qp, clip)
        if clip > 1 and not self.model.has_side_stream:
            return y, uv, self.engine(y.unflatten(0, (-1, clip)), uv.unflatten(0, (-1, clip)), base, qp, TRAINING_FORMAT)
        return y, uv, self.engine(y, uv, base, qp, TRAINING_FORMAT, skip_lmbda)

    def _skip_lmbda(self, qp: int, side: float) -> float | None:
        """The per-block skip choice's rate weight (``None``: train without it)."""
        return lmbda_at(self.exp.loss.lmbda, qp) * side if self.exp.loss.train_skip else None

    @torch.no_grad()
    def validate(self, val_x: torch.Tensor) -> StepStats:
        """Loss on the fixed validation crops at ``[train] val_qp``, shared among the ranks."""
        self.model.eval()
        mine = val_x[self.world.rank :: self.world.size]
        totals = np.zeros(len(StepStats.__dataclass_fields__) + 1)
        for x in mine.split(16):
            qp, side = self.exp.train.val_qp, side_weight(self.exp.loss, None)
            y, uv, out = self._forward(x.to(self.engine.device), qp, self._skip_lmbda(qp, side))
            _, stats = _loss(out, y, uv, self.exp, qp, side)
            totals += len(x) * np.array([*asdict(stats).values(), 1.0])
        totals = _all_reduce_mean(totals, self.world)
        self.model.train()
        return StepStats(*(totals[:-1] / totals[-1]))

    @torch.no_grad()
    def samples(self, x: torch.Tensor) -> torch.Tensor:
        """An image grid, one row per crop: original, bicubic baseline, dualcodec (all at ``val_qp``)."""
        from torchvision.utils import make_grid

        from dualcodec.data import TRAINING_FORMAT
        from dualcodec.nets.common import bicubic_down, bicubic_up
        from dualcodec.yuv import unit_to_planes, yuv420_to_rgb

        def rgb(y, uv):
            return yuv420_to_rgb(*unit_to_planes(y.float(), uv.float(), TRAINING_FORMAT), TRAINING_FORMAT)

        self.model.eval()
        y, uv = crops_to_planes(x.to(self.engine.device))
        base = RealCodecLayer(self.exp.base.codec, self.exp.base.preset, self.exp.train.val_qp)
        scale = self.exp.model.scale
        decoded = base(bicubic_down(y, scale), bicubic_down(uv, scale))
        bicubic = rgb(bicubic_up(decoded.y_lr_hat, scale), bicubic_up(decoded.uv_lr_hat, scale))
        out = self.engine(y, uv, base, self.exp.train.val_qp, TRAINING_FORMAT)
        self.model.train()
        rows = torch.stack([rgb(y, uv), bicubic, rgb(out.y_hat, out.uv_hat)], dim=1).flatten(0, 1)
        return make_grid(rows.clamp(0, 1), nrow=3, padding=2)

    def save_checkpoint(self, ckpt_dir: Path, state: RunState, stream, qp_rng: np.random.Generator) -> None:
        tag = f"step{state.step:07d}"
        # Each rank's data position and random state first: DeepSpeed writes ``latest``
        # last, so a process killed in between resumes from the previous checkpoint.
        (ckpt_dir / tag).mkdir(parents=True, exist_ok=True)
        torch.save({"stage": self.stage.index, "stream": stream.checkpoint(), "qp_rng": qp_rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},
                   ckpt_dir / tag / f"rank{self.world.rank}.pt")
        self.engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"run": asdict(state)})
