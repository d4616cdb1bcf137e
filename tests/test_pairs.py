"""Precomputed base layers: the packed layout, the augmentation, what dualcodec pairs writes,
and training on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dualcodec.basecodec import Planes
from dualcodec.config import load_experiment
from dualcodec.data import TRAINING_FORMAT, TrainStream, crops_to_planes
from dualcodec.errors import DualcodecError
from dualcodec.nets.common import bicubic_down
from dualcodec.pairs import INDEX, PairSet, augment, channels, pack, unpack, write_pairs
from dualcodec.yuv import planes_to_unit

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"


def _planes(rng, h: int, w: int) -> Planes:
    return Planes(*(rng.integers(16, 236, size, dtype=np.uint8) for size in [(h, w), (h // 2, w // 2), (h // 2, w // 2)]))


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_unpack_returns_the_packed_planes_on_the_unit_scale(scale):
    rng = np.random.default_rng(scale)
    h, w = 8 * scale, 12 * scale
    source = _planes(rng, h, w)
    bases = [_planes(rng, h // scale, w // scale) for _ in range(3)]
    packed = pack(source, bases, scale)
    assert packed.shape == (h // (2 * scale), w // (2 * scale), channels(scale, 3)) and packed.dtype == np.uint8

    def unit(p: Planes):
        y = torch.from_numpy(p.y).float()[None, None]
        uv = torch.from_numpy(np.stack([p.u, p.v])).float()[None]
        return planes_to_unit(y, uv, TRAINING_FORMAT)

    for index, base in enumerate(bases):
        got = unpack(torch.from_numpy(packed)[None], scale, index)
        for a, b in zip(got, [*unit(source), *unit(base)]):
            assert torch.equal(a, b)


def test_augment_moves_every_plane_of_a_sample_alike_and_reaches_all_eight_orientations():
    torch.manual_seed(0)
    n = 64
    y = torch.rand(1, 1, 8, 8).expand(n, 1, 8, 8).contiguous()
    uv = F.avg_pool2d(y, 2).repeat(1, 2, 1, 1)  # chroma sited at the centre of its 2x2 block
    y_out, uv_out = augment([y, uv])
    assert torch.allclose(F.avg_pool2d(y_out, 2).repeat(1, 2, 1, 1), uv_out)
    orientations = {tuple(torch.round(y_out[i].flatten() * 1e4).tolist()) for i in range(n)}
    assert len(orientations) == 8
    flips_only = {tuple(torch.round(t.flatten() * 1e4).tolist())
                  for t in (y[0], y[0].flip(-1), y[0].flip(-2), y[0].flip(-1).flip(-2))}
    kept = augment([y], rotate=False)[0]
    assert {tuple(torch.round(kept[i].flatten() * 1e4).tolist()) for i in range(n)} == flips_only
    assert torch.equal(augment([y], rotate=False, flip=False)[0], y)  # data.flip = data.rotate = false


def _image(path: Path, seed: int, size=(72, 56)) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    smooth = F.interpolate(torch.from_numpy(rng.random((1, 3, 9, 7))), size=size[::-1], mode="bicubic")
    rgb = (smooth[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    """Two images and a video's three identical frames (72x56 RGB; 70x54 would be cut)."""
    root = tmp_path_factory.mktemp("pictures")
    (root / "images").mkdir()
    (root / "video").mkdir()
    _image(root / "images" / "a.png", 0)
    _image(root / "images" / "b.png", 1, size=(74, 58))
    for i in range(3):
        _image(root / "video" / f"frame_{i:06d}.png", 2)
    return sorted(root.rglob("*.png"))


@pytest.fixture(scope="module")
def written(pictures, tmp_path_factory) -> PairSet:
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    assert write_pairs(pictures, out, 2, "h264", None, (32, 22), progress=False) == 5
    return PairSet.open(out)


def test_pairs_hold_each_picture_cut_to_whole_tiles_and_its_decoded_bicubic_base(written, pictures):
    from PIL import Image

    assert written.qps == (22, 32) and {p.resolve() for p in written.sources} == {p.resolve() for p in pictures}
    for file, source in zip(written.files, written.sources):
        rgb = np.asarray(Image.open(source).convert("RGB"))[:56, :72]  # 74x58 is cut to 72x56
        y, uv = crops_to_planes(torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None])
        for index, qp in enumerate(written.qps):
            got_y, got_uv, y_lr_hat, uv_lr_hat = unpack(torch.from_numpy(np.load(file))[None], 2, index)
            assert torch.allclose(got_y, y, atol=1e-6) and torch.allclose(got_uv, uv, atol=1e-6)
            error = (y_lr_hat - bicubic_down(y, 2)).square().mean()
            assert 0 < error < {22: 1e-4, 32: 1e-3}[qp]  # coded, and close to what was coded
        bpp = written.bpp[str(file)]
        assert bpp[0] > bpp[1] > 0  # QP 22 costs more than QP 32


def test_a_videos_frames_are_one_predicted_sequence_and_images_are_intra_pictures(written):
    by_name = {s.name: written.bpp[str(f)] for f, s in zip(written.files, written.sources)}
    frames = [by_name[f"frame_{i:06d}.png"] for i in range(3)]
    assert frames[0] == frames[1] == frames[2]  # the sequence's bits shared among its frames
    # Three identical frames as a sequence cost far less than three intra pictures would.
    single = write_pairs([s for s in written.sources if s.name == "frame_000000.png"],
                         written.folder.parent / "single", 2, "h264", None, (22,), progress=False)
    assert single == 1
    intra = PairSet.open(written.folder.parent / "single").bpp
    assert frames[0][0] < 0.6 * next(iter(intra.values()))[0]


def test_pairs_are_refused_for_another_scale_codec_or_training_split(written, tmp_path):
    written.check(2, "h264", None, written.sources)
    with pytest.raises(DualcodecError, match="scale 2"):
        written.check(4, "h264", None, written.sources)
    with pytest.raises(DualcodecError, match="other training files"):
        written.check(2, "h264", None, written.sources[1:])
    with pytest.raises(DualcodecError, match="none in 23..31"):
        written.qps_within(23, 31)
    with pytest.raises(DualcodecError, match="holds no complete pairs"):
        PairSet.open(tmp_path)


def test_the_stream_cuts_windows_on_the_tile_grid_and_names_their_files(written):
    stream = TrainStream(list(written.files), 32, 4, seed=0, crops_per_image=2, tile=4)
    x = stream.next()
    assert x.shape == (4, 8, 8, channels(2, 2)) and x.dtype == torch.uint8
    names = stream.sources()
    assert len(names) == 4 and names[0] == names[1] and set(names) <= {str(f) for f in written.files}
    y, uv, base = written.batch(x, 32, names, rotate=True)
    assert y.shape == (4, 1, 32, 32) and base(None, None).y_lr_hat.shape == (4, 1, 16, 16)
    assert torch.allclose(base(None, None).bits, torch.tensor([written.bpp[n][1] * 32 * 32 for n in names]))
    with pytest.raises(DualcodecError, match="whole 4-pixel tiles"):
        TrainStream(list(written.files), 30, 4, seed=0, tile=4)


@pytest.mark.parametrize("key, value, message", [
    ("model.downsampler", "'learned'", "set model.downsampler = 'bicubic'"),
    ("schedule.clips", "[1, 2]", "single pictures"),
])
def test_pairs_need_a_fixed_downsampler_and_single_pictures(key, value, message):
    extra = ["schedule.clip_fractions=[1, 1]"] if key == "schedule.clips" else []
    with pytest.raises(DualcodecError, match=message):
        load_experiment(SMOKE, ["data.pairs='x'", "model.downsampler='bicubic'", f"{key}={value}", *extra])


@pytest.mark.slow
def test_training_reads_pairs_written_by_the_cli(pictures, tmp_path):
    import shutil

    data = tmp_path / "data"
    for p in pictures:  # the video's frames and the images, as two sources
        (data / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, data / p.parent.name / p.name)
    settings = ["--set", f"data.train_dirs=['{data}']", "--set", "model.downsampler='bicubic'",
                "--set", "data.val_fraction=0.3", "--set", "data.val_gap=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pairs = subprocess.run([sys.executable, "-m", "dualcodec.cli", "pairs", str(SMOKE), "-o", str(tmp_path / "pairs"),
                            "--qp", "30", "36", "-q", *settings], capture_output=True, text=True, timeout=300, env=env)
    assert pairs.returncode == 0, pairs.stderr[-3000:]
    assert json.loads((tmp_path / "pairs" / INDEX).read_text())["qps"] == [30, 36]
    cmd = [sys.executable, "-m", "dualcodec.cli", "train", str(SMOKE), "--set", f"train.out_dir='{tmp_path}'",
           "--set", f"data.pairs='{tmp_path / 'pairs'}'", "--set", "schedule.steps=4", "--set", "schedule.crops=[32]",
           "--set", "schedule.crop_fractions=[1]", "--set", "train.log_every=1", "--set", "train.val_every=4",
           "--set", "data.val_crop=32", "--set", "train.images_every=0", "-q", *settings]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "smoke" / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if "train" in r]
    assert len(train) == 4 and {r["qp"] for r in train} <= {30, 36}
    assert all(np.isfinite(r["train"]["loss"]) and r["train"]["base_bpp"] > 0 for r in train)
    other = subprocess.run([*cmd, "--set", "data.val_fraction=0.5", "--set", "train.name='other'"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert other.returncode == 1 and "other training files" in other.stderr
