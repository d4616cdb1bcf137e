"""What ``--scale auto``'s scale-1 trial cost, and that leaving it out changes no choice.

    python experiments/auto_cost.py [--frames 8] [--qp 32] [--repeats 2] [-o FILE] CLIPS...

For each clip, the shipped ``--scale auto`` (the plain codec against the 2x and 4x
models) and the same with the family's scale-1 model tried too (``default_x1``, as auto
did before) encode the first ``--frames`` frames in turns, ``--repeats`` times each, after
one warm-up encode; it prints and writes each variant's wall-clock seconds (median), the
kept mode and scale, and the file's bytes, which must agree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", type=Path, nargs="+")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--qp", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    from dualcodec.auto import AutoCodec
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import make_codec

    settings = BaseCodecSettings(qp=args.qp)
    shipped = make_codec(settings, None, "default", "auto")
    variants = {"shipped": shipped,
                "with_x1": AutoCodec(shipped.plain, [make_codec(settings, None, "default", 1), *shipped.candidates])}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        shipped.encode(args.clips[0], Path(tmp) / "warm.mp4", max_frames=args.frames)  # compile the graphs
        for clip in args.clips:
            seconds = {name: [] for name in variants}
            kept = {}
            for _ in range(args.repeats):
                for name, codec in variants.items():
                    began = time.perf_counter()
                    report = codec.encode(clip, Path(tmp) / f"{name}.mp4", max_frames=args.frames)
                    seconds[name].append(time.perf_counter() - began)
                    kept[name] = (report.mode, report.scale, report.file_bytes)
            if len(set(kept.values())) != 1:
                print(f"{clip.name}: the variants keep different files: {kept}", file=sys.stderr)
                return 1
            results[clip.name] = {name: round(statistics.median(s), 2) for name, s in seconds.items()}
            results[clip.name]["kept"] = list(kept["shipped"])
            print(f"{clip.name}: {results[clip.name]}", flush=True)
    if args.output:
        args.output.write_text(json.dumps({"frames": args.frames, "qp": args.qp, "repeats": args.repeats,
                                           "clips": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
