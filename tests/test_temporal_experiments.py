"""The temporal experiments' own pieces (``experiments/temporal_headroom.py`` and
``experiments/temporal_prefilter.py``): motion compensation finds a known shift, and the
pre-filter averages noise where the neighbours agree and leaves the frame alone where
they do not."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import temporal_headroom  # noqa: E402
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
    out = temporal_headroom.rebuild_decoded(current, previous, source, block=16, search=0, blend=True)
    for o, s in zip(out, source):
        assert torch.allclose(o, s, atol=1e-3)
    chosen = temporal_headroom.rebuild_decoded(current, previous, source, block=16, search=0)
    assert float(temporal_headroom.block_error(chosen, source, 16).sum()) > 1.0  # a choice of three cannot
