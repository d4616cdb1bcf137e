"""Training: the smoke experiment runs end to end through DeepSpeed and exports a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dualcodec.config import Experiment, load_experiment
from dualcodec.train import CropSampler, fixed_crops

ROOT = Path(__file__).resolve().parents[1]
TRAIN_DIR = ROOT.parent / "shared" / "data" / "images" / "train"


def test_crop_sampler_shapes_and_augmentation_preserve_pixels():
    image = np.arange(40 * 30 * 3, dtype=np.uint32).reshape(40, 30, 3).astype(np.uint8)
    sampler = CropSampler([image], crop=16, seed=0)
    batch = sampler.batch(8)
    assert batch.shape == (8, 3, 16, 16) and batch.dtype == torch.uint8
    # flips and rotations permute pixels; they never invent values
    assert set(batch.unique().tolist()) <= set(np.unique(image).tolist())


def test_fixed_crops_are_the_same_every_time():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)]
    assert torch.equal(fixed_crops(images, 32, 3), fixed_crops(images, 32, 3))


def test_smoke_experiment_file_loads():
    exp = load_experiment(ROOT / "experiments" / "smoke.toml")
    assert isinstance(exp, Experiment) and exp.train.deepspeed == "ds_smoke.json"


@pytest.mark.slow
def test_smoke_training_exports_a_loadable_model(tmp_path):
    if not TRAIN_DIR.is_dir():
        pytest.skip(f"training images not found at {TRAIN_DIR}")
    cmd = [sys.executable, "-m", "dualcodec.cli", "train", str(ROOT / "experiments" / "smoke.toml"),
           "--set", f"train.out_dir='{tmp_path}'", "--set", f"data.train_dir='{TRAIN_DIR}'", "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "smoke"
    from dualcodec.model import load_model

    loaded = load_model(str(run / "model.pt"))
    assert loaded.name == "smoke" and len(loaded.fingerprint) == 16
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    val = [r["val"] for r in records if "val" in r]
    assert val and all(np.isfinite(v["loss"]) for v in val)
    assert json.loads((run / "experiment.json").read_text())["train"]["name"] == "smoke"
