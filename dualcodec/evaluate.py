"""Rate-distortion measured on real files: encode, decode, compare; Bjontegaard deltas.

Every point encodes a source into a real dualcodec MP4, decodes it, and compares the
decoded RGB frames with the source's RGB frames (both read by
:class:`dualcodec.video.VideoReader`). The rate is the whole file: base layer, side
stream and container overhead.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from dualcodec.codec import LayeredCodec, decode
from dualcodec.video import VideoReader


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two uint8 arrays of the same shape (data range 0..255)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


@dataclass(frozen=True)
class RDPoint:
    source: str
    label: str
    qp: int
    frames: int
    width: int
    height: int
    file_bytes: int
    base_bytes: int
    side_bytes: int
    psnr_rgb: float  # mean over frames of per-frame RGB PSNR
    encode_seconds: float
    decode_seconds: float

    @property
    def bpp(self) -> float:
        return 8.0 * self.file_bytes / (self.frames * self.width * self.height)


def measure(codec: LayeredCodec, source: Path, label: str, qp: int, max_frames: int | None = None) -> RDPoint:
    """Encode ``source`` to a temporary file, decode it, and measure size and PSNR."""
    with tempfile.TemporaryDirectory() as tmp:
        encoded = Path(tmp) / "encoded.mp4"
        report = codec.encode(source, encoded, max_frames=max_frames)
        start = time.time()
        loaded = getattr(codec.layers, "loaded", None)
        decoded = list(decode(encoded, str(loaded.path) if loaded else None).frames)
        decode_seconds = time.time() - start
    originals = VideoReader(source).frames()
    scores = [psnr(original, frame) for original, frame in zip(originals, decoded)]
    return RDPoint(str(source), label, qp, report.frames, report.width, report.height, report.file_bytes,
                   report.base_bytes, report.side_bytes, float(np.mean(scores)), report.seconds, decode_seconds)


def sweep(
    sources: Sequence[Path],
    codecs: dict[str, Callable[[int], LayeredCodec]],
    qps: Iterable[int],
    max_frames: int | None = None,
    progress: bool = True,
) -> list[RDPoint]:
    """Every source at every QP with every codec; ``codecs`` maps a label to ``qp -> codec``."""
    from tqdm import tqdm

    qps = list(qps)
    jobs = [(label, make, qp, src) for label, make in codecs.items() for qp in qps for src in sources]
    points = []
    for label, make, qp, src in tqdm(jobs, desc="rd sweep", disable=not progress, dynamic_ncols=True):
        points.append(measure(make(qp), src, label, qp, max_frames))
    return points


def curve(points: Sequence[RDPoint], label: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean bpp and mean PSNR per QP over all sources of one label, sorted by QP."""
    qps = sorted({p.qp for p in points if p.label == label})
    rate = [np.mean([p.bpp for p in points if p.label == label and p.qp == q]) for q in qps]
    dist = [np.mean([p.psnr_rgb for p in points if p.label == label and p.qp == q]) for q in qps]
    return np.array(rate), np.array(dist)


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    from scipy.interpolate import PchipInterpolator

    order = np.argsort(x)
    return float(PchipInterpolator(x[order], y[order]).integrate(lo, hi))


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float:
    """Bjontegaard delta rate in percent (piecewise cubic interpolation of log-rate over PSNR).

    Negative: the test needs fewer bits than the anchor for the same quality.
    """
    la, lt = np.log(np.asarray(rate_anchor, float)), np.log(np.asarray(rate_test, float))
    pa, pt = np.asarray(psnr_anchor, float), np.asarray(psnr_test, float)
    lo, hi = max(pa.min(), pt.min()), min(pa.max(), pt.max())
    if hi <= lo:
        return float("nan")
    diff = (_pchip_integral(pt, lt, lo, hi) - _pchip_integral(pa, la, lo, hi)) / (hi - lo)
    return (math.exp(diff) - 1.0) * 100.0


def bd_psnr(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float:
    """Bjontegaard delta PSNR in dB (PSNR over log-rate, piecewise cubic)."""
    la, lt = np.log(np.asarray(rate_anchor, float)), np.log(np.asarray(rate_test, float))
    pa, pt = np.asarray(psnr_anchor, float), np.asarray(psnr_test, float)
    lo, hi = max(la.min(), lt.min()), min(la.max(), lt.max())
    if hi <= lo:
        return float("nan")
    return (_pchip_integral(lt, pt, lo, hi) - _pchip_integral(la, pa, lo, hi)) / (hi - lo)
