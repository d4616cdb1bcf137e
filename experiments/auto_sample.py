"""What judging a long source on some of its GOPs saves ``--scale auto``, and what it changes.

    python experiments/auto_sample.py [--qps 32 42] [--gop 32] [-o FILE] CLIPS...

For each clip and QP, ``--scale auto`` with the shipped models encodes the whole clip
twice: as shipped (a source of more than 8 GOPs judged on 4 of them spread over it, then
coded once by the candidate chosen) and judging every candidate on the whole source, as
before (``auto.STRETCHES`` raised past any clip). It prints and
writes each variant's wall-clock seconds, the mode and scale kept, the file's bytes and
its PSNR-YUV (mean over frames, on the source's planes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", type=Path, nargs="+")
    parser.add_argument("--qps", type=int, nargs="+", default=[32, 42])
    parser.add_argument("--gop", type=int, default=32)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    from dualcodec import auto
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import decode, make_codec
    from dualcodec.video import VideoReader

    shipped = auto.STRETCHES
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for clip in args.clips:
            for qp in args.qps:
                row = {}
                for name, stretches in (("sampled", shipped), ("whole", 1 << 20)):
                    auto.STRETCHES = stretches
                    codec = make_codec(BaseCodecSettings(qp=qp, gop=args.gop), None, "default", "auto")
                    out = Path(tmp) / f"{name}.mp4"
                    began = time.perf_counter()
                    report = codec.encode(clip, out)
                    seconds = time.perf_counter() - began
                    video = decode(out)
                    quality = auto.psnr_yuv(VideoReader(clip).frames(), video.frames, video.format.bit_depth)
                    row[name] = {"seconds": round(seconds, 1), "kept": [report.mode, report.scale],
                                 "file_bytes": report.file_bytes, "psnr_yuv": round(quality, 3),
                                 "frames": report.frames}
                auto.STRETCHES = shipped
                results[f"{clip.name} QP {qp}"] = row
                print(f"{clip.name} QP {qp}: {row}", flush=True)
    if args.output:
        args.output.write_text(json.dumps({"qps": args.qps, "gop": args.gop, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
