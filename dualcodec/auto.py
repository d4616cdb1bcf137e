"""``--scale auto``: the encoder picks each file's scale by rate-distortion.

The candidates are the plain codec (scale 1: the base codec alone at full resolution)
and each learned model offered (2x, 4x). Every candidate encodes the file at the
requested QP (or CRF) and is decoded; one more plain encode, ``STEP`` quantiser steps
coarser, gives the plain codec's rate-distortion curve near that point. In the plane
of BD-rate (PSNR-YUV over log rate) a candidate's gain is its PSNR-YUV minus the plain
curve's at the candidate's own rate: the line through the two plain points, which lies
above a concave curve outside the two points. The candidate with the largest gain is
written if that gain exceeds ``MARGIN_DB``, else plain is: the margin covers the error of
the line, and keeps a curve of mixed choices from sagging below the plain codec's where
it switches (its pchip segment between a plain and a learned point). The file is the chosen candidate's own
standard MP4; its header records the mode and scale, the report says why.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dualcodec.basecodec import Planes
from dualcodec.codec import EncodeReport, LayeredCodec, decode, decompress
from dualcodec.errors import DualcodecError
from dualcodec.outputs import STDIO, atomic_path
from dualcodec.video import VideoReader, open_writer
from dualcodec.yuv import YUVFormat

STEP = 6  # quantiser steps between the two plain points: about half the rate for H.264 and HEVC
MARGIN_DB = 0.3  # PSNR-YUV a candidate must gain over the plain codec's line to be kept


@dataclass(frozen=True)
class Trial:
    """One candidate's encode: what it is, its whole-file bytes, its PSNR-YUV over the sequence."""

    mode: str
    scale: int
    file_bytes: int
    psnr_yuv: float

    def describe(self, gain: float | None = None) -> str:
        against = "" if gain is None else f", {gain:+.2f} dB against the plain codec at that rate"
        return f"{self.scale}x {self.mode} ({self.file_bytes} B, {self.psnr_yuv:.2f} dB{against})"


def psnr_yuv(source: Iterable[Planes], decoded: Iterable[Planes], bit_depth: int) -> float:
    """PSNR-YUV (6:1:1) of decoded frames against their sources, each plane's MSE taken over
    the whole sequence (as many frames as ``decoded`` has)."""
    peak = (1 << bit_depth) - 1
    sse, count = np.zeros(3), np.zeros(3)
    for x, x_hat in zip(source, decoded):
        for i, (a, b) in enumerate(((x.y, x_hat.y), (x.u, x_hat.u), (x.v, x_hat.v))):
            sse[i] += float(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2))
            count[i] += a.size
    psnr = [99.0 if e == 0 else 10 * math.log10(peak * peak * c / e) for e, c in zip(sse, count)]
    return (6 * psnr[0] + psnr[1] + psnr[2]) / 8


def plain_curve_at(rate: float, a: Trial, b: Trial) -> float:
    """PSNR-YUV of the line through two plain trials at ``rate`` bytes (PSNR over log rate)."""
    (r0, p0), (r1, p1) = sorted(((t.file_bytes, t.psnr_yuv) for t in (a, b)))
    if r0 == r1:
        return max(p0, p1)
    slope = (p1 - p0) / (math.log(r1) - math.log(r0))
    return p0 + slope * (math.log(rate) - math.log(r0))


def choose(trials: Sequence[Trial]) -> tuple[int, str]:
    """``trials``: plain, each candidate, then plain ``STEP`` steps coarser. The index of the
    trial to keep and why (see the module docstring)."""
    plain, coarse, candidates = trials[0], trials[-1], trials[1:-1]
    gains = [t.psnr_yuv - plain_curve_at(t.file_bytes, plain, coarse) for t in candidates]
    best = max(range(len(gains)), key=gains.__getitem__, default=None)
    kept = 1 + best if best is not None and gains[best] > MARGIN_DB else 0
    described = [t.describe(g) for t, g in zip(trials[:-1], [None, *gains])]
    tried = "; ".join(d for i, d in enumerate(described) if i != kept)
    return kept, f"scale auto: kept {described[kept]}; tried {tried}"


class AutoCodec:
    """Codes with whichever of ``candidates`` (the plain codec first) pays best; ``coarser``
    is the plain codec ``STEP`` quantiser steps coarser."""

    mode = "auto"

    def __init__(self, candidates: Sequence[LayeredCodec], coarser: LayeredCodec) -> None:
        if not candidates or candidates[0].layers.mode != "plain":
            raise ValueError("the plain codec must be the first candidate")
        self.codecs = [*candidates, coarser]

    @property
    def model_path(self) -> Path | None:
        return next((c.model_path for c in self.codecs if c.model_path is not None), None)

    def _model(self, codec: LayeredCodec) -> str | None:
        return str(codec.model_path) if codec.model_path else None

    def encode(self, source: Path, destination: Path, progress: bool = False,
               max_frames: int | None = None) -> EncodeReport:
        """Encode the file ``source`` with every candidate and keep the best one's file."""
        start = time.time()
        destination = Path(destination)
        with tempfile.TemporaryDirectory(prefix=".dualcodec-auto-", dir=destination.parent) as tmp:
            if str(source) == STDIO:  # every candidate reads the source: keep a copy of the pipe
                source = _spool(Path(tmp) / "stdin.y4m", max_frames)
            reports, trials = [], []
            for i, codec in enumerate(self.codecs):
                path = Path(tmp) / f"candidate{i}.mp4"
                desc = f"try {codec.layers.scale}x {codec.layers.mode}"
                report = codec.encode(source, path, progress=progress, max_frames=max_frames, desc=desc)
                video = decode(path, self._model(codec))
                quality = psnr_yuv(VideoReader(source).frames(), video.frames, video.format.bit_depth)
                reports.append(report)
                trials.append(Trial(report.mode, report.scale, report.file_bytes, quality))
            kept, why = choose(trials)
            with atomic_path(destination) as out:
                os.replace(Path(tmp) / f"candidate{kept}.mp4", out)
        return replace(reports[kept], seconds=time.time() - start, choice=why)

    def compress(self, frames: Iterable[Planes], fmt: YUVFormat, rate: Fraction = Fraction(25)) -> bytes:
        """In memory: :meth:`LayeredCodec.compress` of the candidate that pays best."""
        frames = list(frames)
        streams, trials = [], []
        for codec in self.codecs:
            data = codec.compress(frames, fmt, rate)
            video = decompress(data, self._model(codec))
            streams.append(data)
            trials.append(Trial(video.header.mode, video.header.scale, len(data),
                                psnr_yuv(frames, video.frames, fmt.bit_depth)))
        return streams[choose(trials)[0]]


def _spool(path: Path, max_frames: int | None) -> Path:
    """Standard input's y4m, copied to ``path`` (its first ``max_frames`` frames)."""
    reader = VideoReader(Path(STDIO))
    info = reader.info
    writer = open_writer("y4m", path, info.width, info.height, info.rate, info.format)
    try:
        for n, planes in enumerate(reader.frames()):
            if max_frames is not None and n >= max_frames:
                break
            writer.write(planes)
    finally:
        writer.close()
    if not path.stat().st_size:
        raise DualcodecError("standard input holds no frame")
    return path
