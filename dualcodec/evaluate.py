"""Rate-distortion measured on real files: encode, decode, compare.

Every point encodes a source into a real dualcodec MP4, decodes it, and compares the
decoded frames with the source's frames, in the source's own 4:2:0 planes (read by
:class:`dualcodec.video.VideoReader`)::

    source --encode--> file.mp4 --decode--> x_hat      rate: the whole file's bytes
       |                                      |        (base layer + side stream + rest)
       +------------- x ----------------------+--> PSNR-YUV (planes), VMAF (luma, over the
                                                   sequence); PSNR RGB, MS-SSIM, LPIPS (both
                                                   sides converted to R'G'B' alike, with the
                                                   source's matrix)

A sweep (one codec, every input, every QP) becomes one results file in CompressAI's
layout (``{"name", "description", "results": {"bpp": [...], "psnr-rgb": [...], ...}}``,
one list entry per QP, each the mean over the inputs), so CompressAI's own plotting
utility (``python -m compressai.utils.plot``) reads it; the per-input points ride along
under ``"inputs"``.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dualcodec.basecodec import Planes
from dualcodec.codec import LayeredCodec, decode
from dualcodec.errors import DualcodecError
from dualcodec.video import VideoReader
from dualcodec.yuv import YUVFormat


@dataclass(frozen=True)
class RDPoint:
    """One source coded at one QP. Quality is the mean over frames of the per-frame value."""

    source: str
    qp: int
    frames: int
    width: int
    height: int
    file_bytes: int
    base_bytes: int
    side_bytes: int
    psnr_rgb: float
    psnr_y: float
    psnr_u: float
    psnr_v: float
    psnr_yuv: float  # (6 Y + U + V) / 8
    ms_ssim: float  # NaN for frames under 161 pixels on a side
    lpips: float  # AlexNet, v0.1
    encode_seconds: float
    decode_seconds: float
    mode: str = ""  # the file's mode and scale (what --scale auto chose)
    scale: int = 0
    vmaf: float = float("nan")  # v0.6.1, over the sequence (NaN: measured before VMAF was)

    @property
    def bpp(self) -> float:
        return 8.0 * self.file_bytes / (self.frames * self.width * self.height)

    @property
    def other_bytes(self) -> int:
        """Container overhead (headers, indexes) and audio."""
        return self.file_bytes - self.base_bytes - self.side_bytes


@dataclass(frozen=True)
class FrameQuality:
    psnr_rgb: float
    psnr_y: float
    psnr_u: float
    psnr_v: float
    psnr_yuv: float
    ms_ssim: float
    lpips: float


def frame_quality(x: Planes, x_hat: Planes, fmt: YUVFormat) -> FrameQuality:
    """Every metric of one decoded frame ``x_hat`` against its source ``x`` (planes of ``fmt``)."""
    from dualcodec import metrics
    from dualcodec.video import planes_to_rgb

    yuv = metrics.psnr_yuv(x, x_hat, fmt.bit_depth)
    rgb, rgb_hat = planes_to_rgb(x, fmt), planes_to_rgb(x_hat, fmt)
    return FrameQuality(metrics.psnr(rgb, rgb_hat), yuv.y, yuv.u, yuv.v, yuv.weighted,
                        metrics.ms_ssim(rgb, rgb_hat), metrics.lpips(rgb, rgb_hat))


def measure(codec, source: Path, qp: int, max_frames: int | None = None, runtime: str = "auto",
            threads: int | None = None, start: int = 0, bit_depth: int | None = None) -> RDPoint:
    """Encode ``source`` (from frame ``start`` on, at ``bit_depth``: see
    :class:`~dualcodec.video.VideoReader`) to a temporary file, decode it (the learned
    layers on ``runtime``), and measure size, quality and time against the source at that
    depth. The file carries none of the source's tags (a phone's creation time costs a
    dual file 72 bytes): the rate is the coding's."""
    with tempfile.TemporaryDirectory() as tmp:
        encoded = Path(tmp) / "encoded.mp4"
        report = codec.encode(source, encoded, max_frames=max_frames, start=start, tags=False,  # the coding alone
                              bit_depth=bit_depth)
        began = time.perf_counter()
        video = decode(encoded, str(codec.model_path) if codec.model_path else None, runtime=runtime, threads=threads)
        decoded = list(video.frames)
        decode_seconds = time.perf_counter() - began
    if len(decoded) != report.frames:
        raise DualcodecError(f"{source}: encoded {report.frames} frames but decoded {len(decoded)}")
    from dualcodec.metrics import vmaf

    originals = list(itertools.islice(VideoReader(source, bit_depth=bit_depth).frames(start), len(decoded)))
    scores = [frame_quality(x, x_hat, video.format) for x, x_hat in zip(originals, decoded)]
    mean = {k: float(np.mean([asdict(s)[k] for s in scores])) for k in asdict(scores[0])}
    return RDPoint(str(source), qp, report.frames, report.width, report.height, report.file_bytes,
                   report.base_bytes, report.side_bytes, **mean, encode_seconds=report.seconds,
                   decode_seconds=decode_seconds, mode=report.mode, scale=report.scale,
                   vmaf=vmaf(originals, decoded, video.format.bit_depth))


def sweep(
    sources: Sequence[Path],
    make_codec: Callable[[int], LayeredCodec],
    qps: Sequence[int],
    max_frames: int | None = None,
    progress: bool = True,
    desc: str = "rd sweep",
    done: Sequence[RDPoint] = (),
    on_point: Callable[[list[RDPoint]], None] | None = None,
    runtime: str = "auto",
    threads: int | None = None,
    start: int = 0,
    bit_depth: int | None = None,
) -> list[RDPoint]:
    """Every source at every QP, QP by QP; ``make_codec`` builds the codec for one QP.

    ``done``: points of an earlier run of the same sweep, kept and not measured again.
    ``on_point(points)`` runs after each new point with every point so far, so a caller can
    save them as they come. A failing point raises :class:`DualcodecError` naming its source.
    ``runtime``, ``threads``, ``start`` and ``bit_depth``: see :func:`measure`.
    """
    from tqdm import tqdm

    measured = {(p.qp, p.source) for p in done}
    points = list(done)
    jobs = [(qp, Path(src)) for qp in qps for src in sources]
    with tqdm(total=len(jobs), initial=len(measured), desc=desc, unit="point", disable=not progress,
              dynamic_ncols=True) as bar:
        for qp, src in jobs:
            if (qp, str(src)) in measured:
                continue
            try:
                points.append(measure(make_codec(qp), src, qp, max_frames, runtime, threads, start, bit_depth))
            except DualcodecError as exc:
                raise DualcodecError(f"{src} at QP {qp}: {exc}") from None
            bar.update()
            if on_point is not None:
                on_point(points)
    return points


# Per-QP means under CompressAI's key names (RDPoint field or property -> results key).
RESULT_KEYS = {
    "bpp": "bpp",
    "psnr_rgb": "psnr-rgb",
    "psnr_yuv": "psnr-yuv",
    "psnr_y": "psnr-y",
    "psnr_u": "psnr-u",
    "psnr_v": "psnr-v",
    "ms_ssim": "ms-ssim-rgb",
    "lpips": "lpips",
    "vmaf": "vmaf",
    "encode_seconds": "encoding_time",
    "decode_seconds": "decoding_time",
}


def _or_null(value):
    """JSON has no NaN: a NaN float (e.g. MS-SSIM of a small image) becomes ``None``."""
    return None if isinstance(value, float) and np.isnan(value) else value


def _mean(values: list[float]) -> float | None:
    return _or_null(float(np.mean(values)))


def results_json(points: Sequence[RDPoint], name: str, description: str, settings: dict,
                 sources: Sequence[str] | None = None, planned_qps: Sequence[int] | None = None) -> dict:
    """CompressAI's results layout: one entry per QP (sorted), each the mean over the sources.

    ``sources`` and ``planned_qps``: the sweep's plan. With ``sources``, a QP enters
    ``results`` only once every source has a point at it, so a sweep saved part way
    (``"complete": false``) never averages over a subset; all its per-source points are
    under ``inputs``. Without, each QP averages the points it has.
    """
    measured = sorted({p.qp for p in points})
    qps = measured if sources is None else [q for q in measured if set(sources) <= {p.source for p in points if p.qp == q}]
    complete = set(qps) >= set(planned_qps if planned_qps is not None else measured)
    results: dict[str, list] = {"qp": qps}
    for field, key in RESULT_KEYS.items():
        results[key] = [_mean([getattr(p, field) for p in points if p.qp == q]) for q in qps]
    for field in ("file_bytes", "base_bytes", "side_bytes", "other_bytes"):
        results[field] = [int(sum(getattr(p, field) for p in points if p.qp == q)) for q in qps]
    names = list(dict.fromkeys(p.source for p in points))
    inputs = [
        {"source": s, "points": [{k: _or_null(v) for k, v in asdict(p).items()} | {"bpp": p.bpp, "other_bytes": p.other_bytes}
                                 for p in points if p.source == s]}
        for s in names
    ]
    return {"name": name, "description": description, "settings": settings, "complete": complete,
            "results": results, "inputs": inputs}


def points_from_results(data: dict) -> list[RDPoint]:
    """The per-source points of a results file (:func:`results_json`), e.g. to resume its sweep."""
    names = {f.name for f in fields(RDPoint)}
    points = []
    for entry in data.get("inputs", []):
        for p in entry["points"]:
            values = {k: (float("nan") if v is None else v) for k, v in p.items() if k in names}
            points.append(RDPoint(**values))
    return points


def resumable_points(path: Path, settings: dict) -> list[RDPoint]:
    """The points that ``path`` holds, refused unless its sweep ran with the same ``settings``."""
    try:
        data = json.loads(Path(path).read_text())
        saved = data["settings"]
        points = points_from_results(data)
        changed = sorted(k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # ValueError: bad UTF-8 or JSON
        raise DualcodecError(f"cannot resume from {path}: not a dualcodec eval results file "
                             f"({exc.__class__.__name__})") from None
    if changed:
        raise DualcodecError(f"cannot resume {path}: it was measured with other {', '.join(changed)}; "
                             "pass -y to start over, or name another output")
    return points


def write_results(path: Path, data: dict) -> None:
    """Write JSON (NaN as null) atomically."""
    from dualcodec.outputs import atomic_path

    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
