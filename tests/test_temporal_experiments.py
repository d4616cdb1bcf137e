"""The temporal experiments' own pieces (``experiments/temporal_headroom.py``,
``experiments/temporal_prefilter.py`` and ``experiments/temporal_heldout.py``): motion
compensation finds a known shift, the pre-filter averages noise where the neighbours agree
and leaves the frame alone where they do not, and the held-out clips hold no training
frame."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import temporal_headroom  # noqa: E402
import temporal_heldout  # noqa: E402
import temporal_prefilter  # noqa: E402

from dualcodec.basecodec import Planes  # noqa: E402


def _planes(rng, height=64, width=96):
    return [torch.from_numpy(rng.uniform(0, 255, size).astype(np.float32))
            for size in ((height, width), (height // 2, width // 2), (height // 2, width // 2))]


def test_compensation_finds_a_known_shift():
    rng = np.random.default_rng(0)
    reference = _planes(rng)
    target = temporal_headroom.shifted(reference, 4, -2)
    moved = temporal_headroom.compensated(reference, target, block=16, search=6)
    for m, t in zip(moved, target):
        assert torch.equal(m[8:-8, 8:-8], t[8:-8, 8:-8])  # inside: the replicated edges aside


def _frame(y, u, v, dtype=np.uint8):
    return Planes(*(np.clip(np.rint(p), 0, 255).astype(dtype) for p in (y, u, v)))


def test_the_prefilter_averages_noise_where_the_neighbours_agree():
    rng = np.random.default_rng(1)
    clean = [rng.uniform(40, 210, s).round() for s in ((64, 64), (32, 32), (32, 32))]
    noisy = [_frame(*(c + rng.normal(0, 4, c.shape) for c in clean)) for _ in range(3)]
    filtered = temporal_prefilter.prefiltered(noisy, qp=37, bit_depth=8, strength=1.5, block=8, search=4)
    assert filtered[1:] == noisy[1:]

    def error(frame):
        return float(np.mean((frame.y.astype(np.float64) - clean[0]) ** 2))

    assert error(filtered[0]) < 0.75 * error(noisy[0])


def test_the_prefilter_leaves_a_key_frame_alone_where_the_neighbours_differ():
    rng = np.random.default_rng(2)
    frames = [_frame(*(rng.uniform(0, 255, s) for s in ((32, 32), (16, 16), (16, 16)))) for _ in range(3)]
    filtered = temporal_prefilter.prefiltered(frames, qp=22, bit_depth=8, strength=1.5, block=8, search=2)
    assert np.mean(np.abs(filtered[0].y.astype(int) - frames[0].y.astype(int))) < 1.0


def test_the_blend_oracle_takes_the_weight_that_reaches_the_source():
    rng = np.random.default_rng(3)
    current, previous = _planes(rng), _planes(rng)
    source = [c + 0.25 * (p - c) for c, p in zip(current, previous)]  # a quarter of the way to previous
    out = temporal_headroom.rebuild_decoded(current, [previous], source, block=16, search=0, blend=True)
    for o, s in zip(out, source):
        assert torch.allclose(o, s, atol=1e-3)
    chosen = temporal_headroom.rebuild_decoded(current, [previous], source, block=16, search=0)
    assert float(temporal_headroom.block_error(chosen, source, 16).sum()) > 1.0  # a choice of three cannot


def test_the_two_sided_oracle_takes_the_mean_of_all_three_where_it_is_the_source():
    rng = np.random.default_rng(4)
    current, previous, after = _planes(rng), _planes(rng), _planes(rng)
    source = [(c + p + a) / 3 for c, p, a in zip(current, previous, after)]
    out = temporal_headroom.rebuild_decoded(current, [previous, after], source, block=16, search=0)
    for o, s in zip(out, source):
        assert torch.allclose(o, s, atol=1e-4)
    one_sided = temporal_headroom.rebuild_decoded(current, [previous], source, block=16, search=0)
    assert float(temporal_headroom.block_error(one_sided, source, 16).sum()) > 1.0


def test_the_held_out_clips_start_at_a_validation_frame_and_hold_no_training_frame(tmp_path):
    import av
    from PIL import Image

    from dualcodec.data import split_sources

    folder = tmp_path / "frames" / "clip_64x48"
    folder.mkdir(parents=True)
    ramp = np.linspace(0, 60, 64)[None, :, None] + np.linspace(0, 30, 48)[:, None, None]
    for i in range(1, 101):  # smooth pictures, each frame 3 levels brighter than the one before (modulo 90)
        Image.fromarray((ramp + 3 * i % 90 + [0, 20, 40]).astype(np.uint8)).save(folder / f"frame_{i:06d}.png")
    clips = temporal_heldout.heldout_clips(tmp_path / "frames", 6)
    train, val = split_sources([tmp_path / "frames"], 0.03, 5)
    assert list(clips) == ["clip_64x48"] and clips["clip_64x48"][0] == val[1]  # the middle of three
    assert len(clips["clip_64x48"]) == 6 and not set(clips["clip_64x48"]) & set(train)
    temporal_heldout.write_y4m(clips["clip_64x48"], tmp_path / "clip.y4m")
    with av.open(str(tmp_path / "clip.y4m")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    for frame, file in zip(frames, clips["clip_64x48"]):  # each its own frame, in order, through 4:2:0
        assert np.abs(frame - np.asarray(Image.open(file), dtype=np.float64)).mean() < 1.5
