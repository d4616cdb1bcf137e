"""Training: the loss on 4:2:0 planes, the smoke experiment end to end through DeepSpeed,
exact resume, two ranks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dualcodec.config import Experiment, LossConfig, load_experiment
from dualcodec.errors import DualcodecError
from dualcodec.schedule import make_plan
from dualcodec.model import plane_distortion as _distortion
from dualcodec.train import World, _loss, config_fingerprint, deepspeed_config, psnr_yuv, side_weight

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"
TRAIN_DIR = ROOT.parent / "shared" / "data" / "images" / "train"
needs_data = pytest.mark.skipif(not TRAIN_DIR.is_dir(), reason=f"training images not found at {TRAIN_DIR}")


def _train_cmd(out_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dualcodec.cli", "train", str(SMOKE), "--set", f"train.out_dir='{out_dir}'",
            "--set", f"data.train_dirs=['{TRAIN_DIR}']", "-q", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """One uninterrupted smoke run, shared by the tests that compare against it."""
    if not TRAIN_DIR.is_dir():
        pytest.skip(f"training images not found at {TRAIN_DIR}")
    out = tmp_path_factory.mktemp("smoke")
    result = subprocess.run(_train_cmd(out), capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "smoke"


def test_smoke_experiment_file_loads():
    exp = load_experiment(SMOKE)
    assert isinstance(exp, Experiment) and exp.train.deepspeed == "ds_smoke.json"
    assert len(make_plan(exp.schedule).stages) == 2  # the smoke run crosses a multigrid stage change


def test_deepspeed_config_takes_the_batch_from_the_experiment_and_refuses_to_share_it(tmp_path):
    exp = load_experiment(SMOKE)
    config = deepspeed_config(exp, SMOKE, World(rank=0, size=2))
    assert config["train_batch_size"] == 4 and config["train_micro_batch_size_per_gpu"] == 2
    (tmp_path / "ds.json").write_text(json.dumps({"optimizer": {"type": "Adam"}, "train_batch_size": 8}))
    (tmp_path / "exp.toml").write_text('[train]\ndeepspeed = "ds.json"\n')
    with pytest.raises(DualcodecError, match="train_batch_size, optimizer"):
        deepspeed_config(load_experiment(tmp_path / "exp.toml"), tmp_path / "exp.toml", World(0, 1))
    with pytest.raises(DualcodecError, match="does not split over 3 ranks"):
        deepspeed_config(exp, SMOKE, World(rank=0, size=3))


def test_fingerprint_ignores_where_the_run_lives_but_not_what_it_trains():
    exp = load_experiment(SMOKE)
    moved = load_experiment(SMOKE, ["train.out_dir=elsewhere"])
    changed = load_experiment(SMOKE, ["loss.lmbda=0.5"])
    config = deepspeed_config(exp, SMOKE, World(0, 1))
    assert config_fingerprint(exp, config) == config_fingerprint(moved, config)
    assert config_fingerprint(exp, config) != config_fingerprint(changed, config)


def test_a_run_recorded_before_a_setting_existed_resumes_while_the_setting_keeps_its_default():
    from dataclasses import asdict

    exp = load_experiment(SMOKE)
    config = deepspeed_config(exp, SMOKE, World(0, 1))
    old = asdict(exp)  # as an older dualcodec, without data.flip and loss.skip_weight, recorded it
    del old["data"]["flip"], old["loss"]["skip_weight"], old["train"]["out_dir"]
    import hashlib
    import json

    recorded = hashlib.sha256(json.dumps({"experiment": old, "deepspeed": config}, sort_keys=True).encode()).hexdigest()[:16]
    assert config_fingerprint(exp, config, old) == recorded != config_fingerprint(exp, config)
    used = load_experiment(SMOKE, ["data.flip=false"])
    assert config_fingerprint(used, config, old) != recorded


def _unit_planes(b=2, h=8, w=12, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Planes on the unit scale of 8-bit limited-range code values (as crops_to_planes gives)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(16, 236, (b, 1, h, w), generator=gen).float()
    uv = torch.randint(16, 241, (b, 2, h // 2, w // 2), generator=gen).float()
    return (y - 16) / 219, (uv - 128) / 224 + 0.5


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_distortion_weighs_y_cb_cr_six_one_one(kind):
    y, uv = _unit_planes()

    def error(e):
        return abs(e) if kind == "l1" else e * e

    assert _distortion(y, uv, y, uv, kind).item() == 0.0
    # An error in luma alone counts 6/8 of its mean ...
    assert _distortion(y + 0.1, uv, y, uv, kind).item() == pytest.approx(6 * error(0.1) / 8)
    # ... in one chroma plane 1/8 (the mean over that plane), whichever plane it is.
    for c in (0, 1):
        uv_hat = uv.clone()
        uv_hat[:, c] -= 0.2
        assert _distortion(y, uv_hat, y, uv, kind).item() == pytest.approx(error(0.2) / 8)
    # Luma has 4x the samples of each chroma plane: weighting per plane, not per sample.
    both = _distortion(y + 0.1, uv - 0.2, y, uv, kind).item()
    assert both == pytest.approx((6 * error(0.1) + 2 * error(0.2)) / 8)


def test_distortion_is_l1_or_squared_error():
    y, uv = _unit_planes()
    y_hat = y + torch.linspace(-0.3, 0.3, y.numel()).view_as(y)
    l1 = _distortion(y_hat, uv, y, uv, "l1").item()
    mse = _distortion(y_hat, uv, y, uv, "mse").item()
    assert l1 == pytest.approx(6 / 8 * (y_hat - y).abs().mean().item())
    assert mse == pytest.approx(6 / 8 * ((y_hat - y) ** 2).mean().item())


def test_training_psnr_is_psnr_yuv_of_the_8_bit_planes():
    from dualcodec.basecodec import Planes
    from dualcodec.metrics import psnr_yuv as planes_psnr_yuv

    y, uv = _unit_planes(b=1, h=16, w=16)
    gen = torch.Generator().manual_seed(1)
    y_hat = y + 0.02 * torch.randn(y.shape, generator=gen)
    uv_hat = uv + 0.01 * torch.randn(uv.shape, generator=gen)

    def planes(y, uv):  # unit scale back to rounded, clamped 8-bit code values
        codes_y = (16 + 219 * y).round().clamp(0, 255).numpy().astype(np.uint8)
        codes_uv = (128 + 224 * (uv - 0.5)).round().clamp(0, 255).numpy().astype(np.uint8)
        return Planes(codes_y[0, 0], codes_uv[0, 0], codes_uv[0, 1])

    expected = planes_psnr_yuv(planes(y_hat, uv_hat), planes(y, uv)).weighted
    assert psnr_yuv(y_hat, uv_hat, y, uv) == pytest.approx(expected, abs=1e-3)
    assert 25 < expected < 45


def test_loss_is_distortion_plus_lmbda_times_bits_per_luma_pixel():
    from dualcodec.model import ForwardOutput, lmbda_at

    y, uv = _unit_planes(b=2, h=8, w=12)
    y_hat, uv_hat = y + 0.05, uv - 0.02
    side_bits, base_bits = torch.tensor([96.0, 192.0]), torch.tensor([480.0, 960.0])
    out = ForwardOutput(y_hat, uv_hat, y[..., ::2, ::2], uv[..., ::2, ::2], side_bits, base_bits)
    pixels = 2 * 8 * 12  # luma samples
    distortion = (6 * 0.05 + 2 * 0.02) / 8
    for base_rate in (True, False):
        exp = Experiment(loss=LossConfig(distortion="l1", lmbda=0.02, base_rate=base_rate, side_rate_warmup=10))
        loss, stats = _loss(out, y, uv, exp, qp=38, side=side_weight(exp.loss, None))
        rate = side_bits.sum() / pixels + (base_bits.sum() / pixels if base_rate else 0.0)
        assert stats.distortion == pytest.approx(distortion, rel=1e-5)
        assert stats.side_bpp == pytest.approx(288 / pixels) and stats.base_bpp == pytest.approx(1440 / pixels)
        assert loss.item() == pytest.approx(distortion + lmbda_at(0.02, 38) * rate.item(), rel=1e-5)
        assert stats.psnr == pytest.approx(psnr_yuv(y_hat, uv_hat, y, uv))
    # The side bits count with the weight given (side_weight: ramped in, times side_lmbda) ...
    exp = Experiment(loss=LossConfig(distortion="l1", lmbda=0.02, base_rate=False))
    for side in (0.0, 0.5, 3.0):
        loss, stats = _loss(out, y, uv, exp, qp=32, side=side)
        assert loss.item() == pytest.approx(distortion + 0.02 * side * 288 / pixels, rel=1e-5)
        assert stats.side_bpp == pytest.approx(288 / pixels)  # ... and are reported unweighed


def test_skip_weight_adds_the_distortion_of_the_output_with_every_block_skipped():
    from dualcodec.model import ForwardOutput

    y, uv = _unit_planes(b=2, h=8, w=12)
    bits = torch.zeros(2)
    out = ForwardOutput(y + 0.05, uv - 0.02, y[..., ::2, ::2], uv[..., ::2, ::2], bits, bits, y + 0.1, uv + 0.1)
    chosen, skipped = (6 * 0.05 + 2 * 0.02) / 8, 0.1
    for weight in (0.0, 0.5, 2.0):
        exp = Experiment(loss=LossConfig(distortion="l1", base_rate=False, skip_weight=weight))
        loss, stats = _loss(out, y, uv, exp, qp=32, side=1.0)
        assert loss.item() == pytest.approx(chosen + weight * skipped, rel=1e-5)
        assert stats.distortion == pytest.approx(chosen, rel=1e-5)  # the chosen output's, as the encoder makes it
    with pytest.raises(DualcodecError, match="needs loss.train_skip"):
        LossConfig(skip_weight=1.0, train_skip=False)


def test_side_weight_waits_ramps_and_scales():
    def weights(**loss):
        config = LossConfig(**loss)
        return [side_weight(config, step) for step in (0, 4, 5, 10, 15, 20, 100)] + [side_weight(config, None)]

    assert weights() == [1.0] * 8
    assert weights(side_rate_warmup=10) == [0.0, 0.4, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert weights(side_rate_delay=5) == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert weights(side_rate_delay=10, side_rate_warmup=10) == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    assert weights(side_lmbda=0.25, side_rate_delay=10, side_rate_warmup=10) == [
        0.0, 0.0, 0.0, 0.0, 0.125, 0.25, 0.25, 0.25]  # validation: fully ramped in
    assert weights(side_lmbda=0.0) == [0.0] * 8


@pytest.mark.parametrize("field", ["lmbda", "side_lmbda", "side_rate_delay", "side_rate_warmup"])
def test_negative_loss_weights_and_steps_are_refused(field):
    with pytest.raises(DualcodecError, match="must not be negative"):
        LossConfig(**{field: -1})


@needs_data
@pytest.mark.slow
def test_smoke_training_exports_a_model_logs_and_checkpoints(smoke_run):
    from dualcodec.model import load_model

    loaded = load_model(str(smoke_run / "model.pt"))
    assert loaded.name == "smoke" and len(loaded.fingerprint) == 16
    records = _records(smoke_run)
    val = [r["val"] for r in records if "val" in r]
    assert len(val) == 2 and all(np.isfinite(v["loss"]) for v in val)
    plan = make_plan(load_experiment(SMOKE).schedule)
    for r in records:
        if "lr" in r:  # the rate the scheduler holds for the next step
            assert r["lr"] == pytest.approx(plan.lr_at(r["step"]) if r["step"] < plan.total else 0.0, abs=1e-12)
            assert r["crop"] == plan.stage_at(r["step"] - 1).crop
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(smoke_run / "tensorboard"))
    board.Reload()
    assert {"train/loss", "train/side_bpp", "train/base_bpp", "train/psnr", "val/loss", "val/psnr", "lr",
            "images_per_second"} <= set(board.Tags()["scalars"])
    assert board.Tags()["images"] == ["val/original | bicubic | dualcodec"]
    assert (smoke_run / "checkpoints" / "latest").read_text().strip() == "step0000020"
    assert json.loads((smoke_run / "experiment.json").read_text())["fingerprint"]


@needs_data
@pytest.mark.slow
def test_a_killed_run_resumes_exactly_from_its_last_checkpoint(smoke_run, tmp_path):
    run = tmp_path / "smoke"
    # Kill as soon as a mid-run checkpoint exists (the run is skipped if it finishes first).
    proc = subprocess.Popen(_train_cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not (latest.exists() and latest.read_text().strip() >= "step0000010") and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be killed")
    killed_at = int(latest.read_text().strip()[4:])
    assert killed_at < 20

    result = subprocess.run(_train_cmd(tmp_path, "--resume"), capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, reference = _records(run), _records(smoke_run)
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    for mine, theirs in zip(resumed, reference):
        for key in ("lr", "qp", "crop"):
            assert mine.get(key) == theirs.get(key)
        # same data, same random state: the same losses
        for part in ("train", "val"):
            if part in theirs:
                assert mine[part]["loss"] == pytest.approx(theirs[part]["loss"], rel=1e-4)


@needs_data
@pytest.mark.slow
def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_to_overwrite(smoke_run):
    out = str(smoke_run.parent)
    changed = subprocess.run([*_train_cmd(Path(out), "--resume"), "--set", "loss.lmbda=0.5"], capture_output=True,
                             text=True, timeout=300, env=_env())
    assert changed.returncode == 1 and "another configuration" in changed.stderr
    again = subprocess.run(_train_cmd(Path(out)), capture_output=True, text=True, timeout=300, env=_env())
    assert again.returncode == 1 and "--resume" in again.stderr


@pytest.mark.slow
def test_a_run_starts_from_the_weights_of_train_init(smoke_run, tmp_path):
    from dualcodec.model import load_model

    start = load_model(str(smoke_run / "model.pt"))
    init = f"train.init='{smoke_run / 'model.pt'}'"
    # A learning rate of 1e-12 leaves the weights where they started: the run's export is the init's model.
    tuned = subprocess.run([*_train_cmd(tmp_path), "--set", init, "--set", "schedule.steps=2", "--set", "schedule.lr=1e-12",
                            "--set", "train.val_every=2", "--set", "train.images_every=0"],
                           capture_output=True, text=True, timeout=300, env=_env())
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    end = load_model(str(tmp_path / "smoke" / "model.pt"))
    for (name, a), b in zip(start.model.named_parameters(), end.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    other = subprocess.run([*_train_cmd(tmp_path / "other"), "--set", init, "--set", "model.up_width=12"],
                           capture_output=True, text=True, timeout=300, env=_env())
    assert other.returncode == 1 and "model.up_width differ" in other.stderr
    assert len(other.stderr.strip().splitlines()[-1]) < 300 and "Traceback" not in other.stderr


WORKER = """
import hashlib, sys, torch
from pathlib import Path
import dualcodec.data as data
from dualcodec.config import load_experiment
from dualcodec.train import train

seen = []
next_batch = data.TrainStream.next
def recording_next(self):
    x = next_batch(self)
    seen.append(hashlib.sha256(x.numpy().tobytes()).hexdigest())
    return x
data.TrainStream.next = recording_next
smoke, out, train_dir, dump = sys.argv[1:5]
exp = load_experiment(smoke, [f"train.out_dir='{out}'", f"data.train_dirs=['{train_dir}']", "schedule.steps=6",
                              "train.val_every=6", "train.checkpoint_every=100", "train.images_every=0"])
result = train(exp, Path(smoke), progress=False)
# parameters only: rank 0 also fills the entropy coder's tables (buffers) when it exports
torch.save({"weights": dict(result.model.named_parameters()), "batches": seen}, dump)
"""


@needs_data
@pytest.mark.slow
def test_two_cpu_ranks_average_gradients_to_identical_weights(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    procs = []
    for rank in range(2):
        env = {**_env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port}
        cmd = [sys.executable, "-c", WORKER, str(SMOKE), str(tmp_path), str(TRAIN_DIR), str(tmp_path / f"rank{rank}.pt")]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    dumps = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert len(dumps[0]["batches"]) == 6 and not set(dumps[0]["batches"]) & set(dumps[1]["batches"])
    initial = load_experiment(SMOKE)
    from dualcodec.model import DualLayerModel

    torch.manual_seed(initial.train.seed)
    start = dict(DualLayerModel(initial.model).named_parameters())
    for name, tensor in dumps[0]["weights"].items():
        assert torch.equal(tensor, dumps[1]["weights"][name]), f"{name} differs between ranks"
    assert any(not torch.equal(dumps[0]["weights"][n], start[n]) for n in start), "training changed nothing"
    assert len(_records(tmp_path / "smoke")) > 0  # rank 0 wrote the log


@needs_data
@pytest.mark.slow
def test_early_stopping_ends_the_run_when_validation_stops_improving(tmp_path):
    # A learning rate far too high makes the validation loss worsen within a few validations.
    cmd = [*_train_cmd(tmp_path), "--set", "schedule.lr=0.5", "--set", "train.val_every=2", "--set", "train.patience=2",
           "--set", "train.images_every=0"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(tmp_path / "smoke")
    stop = [r for r in records if "early_stop" in r]
    assert len(stop) == 1 and stop[0]["step"] < 20 and "early stop" in result.stderr
    losses = [r["val"]["loss"] for r in records if "val" in r]
    assert min(losses[-2:]) >= min(losses)  # the last `patience` validations did not improve
    assert stop[0]["early_stop"]["best"] == pytest.approx(min(losses))


def _cars_frames(folder: Path, count: int) -> Path:
    """The first ``count`` frames of the shared cars clip as a frame folder under ``folder``
    (skips without the shared data)."""
    clip = ROOT.parent / "shared" / "data" / "video" / "cars_320x240_30f.y4m"
    if not clip.is_file():
        pytest.skip(f"video not found at {clip}")
    from dualcodec.data import write_frames

    folder.mkdir()
    write_frames(clip, folder / clip.stem, max_frames=count)
    return folder


@pytest.mark.slow
def test_temporal_cycle_trains_on_clips_from_frame_folders(tmp_path):
    _cars_frames(tmp_path / "frames", 12)
    cmd = [sys.executable, "-m", "dualcodec.cli", "train", str(SMOKE), "--set", f"train.out_dir='{tmp_path}'",
           "--set", f"data.train_dirs=['{tmp_path / 'frames'}']", "--set", "schedule.steps=8", "--set", "schedule.crops=[32]",
           "--set", "schedule.crop_fractions=[1]", "--set", "schedule.clips=[1, 3]", "--set", "schedule.clip_fractions=[1, 1]",
           "--set", "train.log_every=2", "--set", "train.val_every=8", "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    train = [r for r in _records(tmp_path / "smoke") if "train" in r]
    assert [r["clip"] for r in train] == [1, 1, 3, 3]
    # a clip of 3 frames puts 3x the pictures through each step
    assert all(np.isfinite(r["train"]["loss"]) for r in train)


@pytest.mark.slow
def test_a_temporal_model_fine_tunes_from_its_per_frame_model_on_clips_coded_as_videos(tmp_path):
    from dualcodec.config import ModelConfig
    from dualcodec.model import DualLayerModel, load_model, save_model

    _cars_frames(tmp_path / "frames", 16)
    per_frame = {"up_width": 8, "side_width": 16, "down_width": 16, "up_form": "folded", "up_chroma": "own",
                 "side_stream": False}  # smoke.toml's model, folded, per frame
    torch.manual_seed(0)
    start = DualLayerModel(ModelConfig(**per_frame))
    save_model(start, ModelConfig(**per_frame), "per_frame", tmp_path / "per_frame.pt", 0.01)
    settings = [f"data.train_dirs=['{tmp_path / 'frames'}']", "model.up_form='folded'", "model.up_chroma='own'",
                "model.side_stream=false", "model.temporal=true", f"train.init='{tmp_path / 'per_frame.pt'}'",
                "schedule.steps=4", "schedule.crops=[32]", "schedule.crop_fractions=[1]", "schedule.clips=[3]",
                "data.val_clip=3", "data.val_gap=2", "train.log_every=2", "train.val_every=4", "train.images_every=0"]
    cmd = [sys.executable, "-m", "dualcodec.cli", "train", str(SMOKE), "--set", f"train.out_dir='{tmp_path}'", "-q"]
    result = subprocess.run([*cmd, *(a for s in settings for a in ("--set", s))], capture_output=True, text=True,
                            timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(tmp_path / "smoke")
    val = [r for r in records if "val" in r]
    assert [r["step"] for r in val] == [0, 4]  # a fine-tune's log starts with its starting point
    assert all(r["val"]["alignment"] > 0 for r in val)  # the motion's loss, on clips of 3
    assert [r["clip"] for r in records if "train" in r] == [3, 3]
    tuned = load_model(str(tmp_path / "smoke" / "model.pt"))
    assert tuned.config.temporal and tuned.model.temporal
    def alone(name: str, *options: str) -> dict:
        """schedule.temporal_only: the temporal part trained alone, the rest keeping the init's weights."""
        done = subprocess.run([*cmd, *(a for s in settings for a in ("--set", s)), "--set", "schedule.temporal_only=true",
                               *(a for o in options for a in ("--set", o)), "--set", f"train.name='{name}'"],
                              capture_output=True, text=True, timeout=300, env=_env())
        assert done.returncode == 0, done.stderr[-3000:]
        weights = load_model(str(tmp_path / name / "model.pt")).model.state_dict()
        assert all(torch.equal(weights[k], v) for k, v in start.state_dict().items())
        return weights

    weights = alone("alone", "model.temporal_width=8")  # here its wide form
    assert any(weights[k].abs().sum() > 0 for k in weights if k.endswith("memory_motion.6.weight"))
    assert any(k.endswith("memory_branch.0.weight") for k in weights)
    # the two-sided experiment (model.temporal_ahead) starts from the same per-frame model
    weights = alone("ahead", "model.temporal_ahead=true")
    assert weights["upsampler.memory_ahead_in.weight"].abs().sum() > 0
    # another per-frame configuration is not a start for this temporal model
    other = subprocess.run([*cmd, *(a for s in settings for a in ("--set", s)), "--set", "model.up_width=12",
                            "--set", "train.name='other'"], capture_output=True, text=True, timeout=300, env=_env())
    assert other.returncode == 1 and "model.temporal, model.up_width differ" in other.stderr

def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())


def test_the_codec_does_not_import_the_training_stack():
    result = _python("import sys\nimport dualcodec.cli, dualcodec.codec, dualcodec.evaluate, dualcodec.data\n"
                     "print(sorted(m for m in ('deepspeed', 'nvidia.dali', 'tensorboard') if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_training_without_the_train_extra_is_a_one_line_error():
    # As if DeepSpeed and DALI were not installed: an import of either fails.
    result = _python("import sys\nsys.modules['deepspeed'] = None\nsys.modules['nvidia'] = None\n"
                     "from dualcodec.cli import main\n"
                     f"sys.exit(main(['train', {str(SMOKE)!r}, '-q']))")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == ("dualcodec: error: training needs DeepSpeed, NVIDIA DALI, "
                                                      "which this installation lacks: pip install 'dualcodec[train]'")
