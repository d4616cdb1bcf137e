"""``--scale auto``: the encoder picks each file's scale by rate-distortion.

The candidates are the plain codec (scale 1: the base codec alone at full resolution)
and each learned model offered (2x, 4x). Every candidate encodes the file at the
requested QP (or CRF) and is decoded; the plain codec is also encoded ``STEP``, then
``2 STEP``, ... quantiser steps coarser (the last at the codec's top quantiser) until its
rate is at or below every candidate's, so that the plain codec's own curve is measured
around each candidate's rate. In the plane of BD-rate (PSNR-YUV over log rate) a
candidate's gain is its PSNR-YUV minus the plain curve's at the candidate's rate, linear
between the two plain points around it. A candidate smaller than the plain codec at its
top quantiser is not compared: no plain file that small exists to measure it against (an
extrapolated line kept SVT-AV1 4x files 11 dB below the plain codec at the requested QP).
Of the others, the one with the largest gain is written if that gain exceeds ``MARGIN_DB``, else
the plain codec at the requested quantiser is: the margin covers the error of the
interpolation, and keeps a curve of mixed choices from sagging below the plain codec's
where it switches (its pchip segment between a plain and a learned point). The file is
the chosen candidate's own standard MP4; its header records the mode and scale, the
report says why. A source of more than twice ``STRETCHES`` GOPs is judged on
``STRETCHES`` of its GOPs spread over it, and then coded once by the candidate chosen.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from dualcodec.basecodec import Planes, max_qp
from dualcodec.codec import EncodeReport, LayeredCodec, PlainLayers, decode, decompress
from dualcodec.errors import DualcodecError
from dualcodec.outputs import STDIO, atomic_path
from dualcodec.video import VideoReader, open_writer
from dualcodec.yuv import YUVFormat

STEP = 6  # quantiser steps between the two plain points: about half the rate for H.264 and HEVC
# A source of more than twice STRETCHES GOPs is judged on STRETCHES of its GOPs spread
# over it, then coded once by the candidate chosen: a minute of 1080p at GOP 32 is judged
# on 128 frames a trial, not 1800. Whole GOPs, so that key frames weigh in the trials as
# they will in the file.
STRETCHES = 4
MARGIN_DB = 0.3  # PSNR-YUV a candidate must gain over the plain codec's line to be kept


@dataclass(frozen=True)
class Trial:
    """One candidate's encode: what it is, its whole-file bytes, its PSNR-YUV over the sequence."""

    mode: str
    scale: int
    file_bytes: int
    psnr_yuv: float

    def describe(self, gain: float | None = None, note: str = "") -> str:
        against = "" if gain is None else f", {gain:+.2f} dB against the plain codec at that rate"
        return f"{self.scale}x {self.mode} ({self.file_bytes} B, {self.psnr_yuv:.2f} dB{against}{note})"


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


def plain_curve_at(rate: float, plain: Sequence[Trial]) -> float:
    """PSNR-YUV of the plain codec's curve at ``rate`` bytes: linear in PSNR over log rate
    between the two plain trials around it (beyond them, the line through the nearest two)."""
    points = sorted({(t.file_bytes, t.psnr_yuv) for t in plain})
    if len(points) == 1 or points[0][0] == points[-1][0]:
        return max(p for _, p in points)
    i = next((k for k in range(1, len(points) - 1) if points[k][0] >= rate), len(points) - 1)
    (r0, p0), (r1, p1) = points[i - 1], points[i]
    return p0 + (p1 - p0) / (math.log(r1) - math.log(r0)) * (math.log(rate) - math.log(r0))


def choose(plain: Sequence[Trial], candidates: Sequence[Trial]) -> tuple[int | None, str]:
    """The index of the candidate to keep (``None``: the plain codec at the requested
    quantiser, ``plain[0]``) and why (see the module docstring). ``plain[1:]``: the
    coarser plain trials; a candidate below the smallest of them is not compared."""
    floor = min(t.file_bytes for t in plain)
    gains = [t.psnr_yuv - plain_curve_at(t.file_bytes, plain) if t.file_bytes >= floor else None
             for t in candidates]
    compared = [i for i, g in enumerate(gains) if g is not None]
    best = max(compared, key=gains.__getitem__, default=None)
    kept = best if best is not None and gains[best] > MARGIN_DB else None
    below = f", below the plain codec's smallest file ({floor} B): not compared"
    tried = [plain[0].describe()] + [t.describe(g) if g is not None else t.describe(note=below)
                                     for t, g in zip(candidates, gains)]
    chosen = 0 if kept is None else 1 + kept
    others = "; ".join(d for i, d in enumerate(tried) if i != chosen)
    return kept, f"scale auto: kept {tried[chosen]}; tried {others}"


class AutoCodec:
    """Codes with the plain codec ``plain`` or whichever of ``candidates`` pays best."""

    mode = "auto"

    def __init__(self, plain: LayeredCodec, candidates: Sequence[LayeredCodec]) -> None:
        if plain.layers.mode != "plain":
            raise ValueError("AutoCodec compares its candidates with the plain codec")
        self.plain, self.candidates = plain, list(candidates)

    @property
    def model_path(self) -> Path | None:
        """The candidates' model file, if they share one; ``None`` for a family of built-in
        models, which a decoder finds by the name in the file's header."""
        paths = {c.model_path for c in self.candidates if c.model_path is not None}
        return paths.pop() if len(paths) == 1 else None

    def coarser(self, steps: int, bit_depth: int = 8) -> LayeredCodec | None:
        """The plain codec ``steps`` quantiser steps coarser, or at the codec's top for
        ``bit_depth``-bit frames where that is nearer; ``None`` once ``steps - STEP`` steps
        already reached the top."""
        s = self.plain.settings
        top = max_qp(s.codec, bit_depth)
        now = s.qp if s.qp is not None else s.crf
        if now + steps - STEP >= top:
            return None
        settings = dataclasses.replace(s, qp=None if s.qp is None else min(s.qp + steps, top),
                                       crf=None if s.crf is None else min(s.crf + steps, top))
        return LayeredCodec(PlainLayers(), settings, self.plain.audio)

    def _trials(self, run, bit_depth: int) -> tuple[list, list, list]:
        """``run(codec) -> (result, Trial)`` for the plain codec, every candidate, and the plain
        codec coarser by ``STEP`` at a time until its rate is at or below every candidate's
        (so each candidate's rate lies between two plain trials), for ``bit_depth``-bit frames."""
        plain_result, plain_trial = run(self.plain)
        results, trials = zip(*(run(c) for c in self.candidates)) if self.candidates else ((), ())
        plain_trials = [plain_trial]
        lowest = min((t.file_bytes for t in trials), default=plain_trial.file_bytes)
        steps = 0
        while plain_trials[-1].file_bytes > lowest or len(plain_trials) < 2:
            steps += STEP
            codec = self.coarser(steps, bit_depth)
            if codec is None:
                break
            plain_trials.append(run(codec)[1])
        return [plain_result, *results], plain_trials, list(trials)

    def encode(self, source: Path, destination: Path, progress: bool = False,
               max_frames: int | None = None, start: int = 0, tags: bool = True,
               rate: Fraction | None = None, bit_depth: int | None = None) -> EncodeReport:
        """Encode the file ``source`` (from frame ``start`` on) with every candidate and keep
        the best one's file (with the source's ``tags``, a folder's ``rate``, at ``bit_depth``,
        as :meth:`LayeredCodec.encode`; judged against the source at that depth). A
        source of more than twice ``STRETCHES`` GOPs is judged on ``STRETCHES`` of its GOPs
        spread over it (:func:`_stretches`), and then coded by the candidate chosen."""
        began = time.time()
        destination = Path(destination)
        with tempfile.TemporaryDirectory(prefix=".dualcodec-auto-", dir=destination.parent) as tmp:
            if str(source) == STDIO:  # every candidate reads the source: keep a copy of the pipe
                source, start = _spool(Path(tmp) / "stdin.y4m", VideoReader(Path(STDIO)), start, max_frames), 0
            reader = VideoReader(source, rate, bit_depth)
            span = reader.info.span(start, max_frames)
            gop = self.plain.settings.gop
            sampled = span is not None and span > 2 * STRETCHES * gop
            judged = (_spool(Path(tmp) / "sample.y4m", reader, start, span, _stretches(span, gop)) if sampled
                      else source)
            count = iter(range(1 << 30))

            def run(codec: LayeredCodec):
                path = Path(tmp) / f"trial{next(count)}.mp4"
                desc = f"try {codec.layers.scale}x {codec.layers.mode}"
                report = codec.encode(judged, path, progress=progress, max_frames=None if sampled else max_frames,
                                      desc=desc, start=0 if sampled else start, tags=tags, rate=rate,
                                      bit_depth=bit_depth)
                video = decode(path, str(codec.model_path) if codec.model_path else None)
                quality = psnr_yuv(VideoReader(judged, rate, bit_depth).frames(0 if sampled else start), video.frames,
                                   video.format.bit_depth)
                return (report, path), Trial(report.mode, report.scale, report.file_bytes, quality)

            results, plain, candidates = self._trials(run, reader.info.format.bit_depth)
            kept, why = choose(plain, candidates)
            report, path = results[0 if kept is None else 1 + kept]
            if sampled:
                why += f" (judged on {STRETCHES} GOPs of {gop} frames spread over the {span})"
                chosen = self.plain if kept is None else self.candidates[kept]
                report = chosen.encode(source, destination, progress=progress, max_frames=max_frames, start=start,
                                       tags=tags, rate=rate, bit_depth=bit_depth)
            else:
                with atomic_path(destination) as out:
                    os.replace(path, out)
        return replace(report, seconds=time.time() - began, choice=why)

    def compress(self, frames: Iterable[Planes], fmt: YUVFormat, rate: Fraction = Fraction(25)) -> bytes:
        """In memory: :meth:`LayeredCodec.compress` of the candidate that pays best."""
        frames = list(frames)

        def run(codec: LayeredCodec):
            data = codec.compress(frames, fmt, rate)
            video = decompress(data, str(codec.model_path) if codec.model_path else None)
            return data, Trial(video.header.mode, video.header.scale, len(data),
                               psnr_yuv(frames, video.frames, fmt.bit_depth))

        streams, plain, candidates = self._trials(run, fmt.bit_depth)
        kept, _ = choose(plain, candidates)
        return streams[0 if kept is None else 1 + kept]


def _stretches(span: int, gop: int) -> list[tuple[int, int]]:
    """(first frame, count) of ``STRETCHES`` of the GOPs of ``gop`` frames that ``span``
    frames are coded in, spread evenly from the first to the last (which may be short)."""
    gops = -(-span // gop)
    picks = sorted({round(i * (gops - 1) / (STRETCHES - 1)) for i in range(STRETCHES)})
    return [(g * gop, min(gop, span - g * gop)) for g in picks]


def _spool(path: Path, reader: VideoReader, start: int = 0, max_frames: int | None = None,
           stretches: Sequence[tuple[int, int]] | None = None) -> Path:
    """``reader``'s frames from frame ``start`` (at most ``max_frames``) copied to the y4m
    ``path``, or of those only the ``stretches`` ((first, count), counted from ``start``):
    a pipe read once, or the sample a long source is judged on."""
    info = reader.info
    writer = open_writer("y4m", path, info.width, info.height, info.rate, info.format)
    try:
        for n, planes in enumerate(reader.frames(start)):
            if max_frames is not None and n >= max_frames:
                break
            if stretches is None or any(first <= n < first + count for first, count in stretches):
                writer.write(planes)
    finally:
        writer.close()
    if not path.stat().st_size:
        raise DualcodecError("standard input holds no frame")
    return path
