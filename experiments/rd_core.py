"""Rate-distortion of the dual-layer model against the bicubic baseline and the plain codec.

Real files end to end: each point is `dualcodec encode` + `dualcodec decode` through the
MP4 container; rate = whole file bytes, distortion = RGB PSNR of the decoded frames.

    python experiments/rd_core.py                      # Kodak + cars clip, H.264, QP 27-42
    python experiments/rd_core.py --model runs/x/model.pt --kodak-limit 6

Writes experiments/results/core_<codec>.json and prints the BD-rate table (markdown).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main() -> int:
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import make_codec
    from dualcodec.evaluate import bd_rate, curve, sweep

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--codec", default="h264", choices=["h264", "hevc", "av1"])
    parser.add_argument("--qps", type=int, nargs="+", default=[27, 32, 37, 42])
    parser.add_argument("--kodak", type=Path, default=SHARED / "images" / "test" / "kodak")
    parser.add_argument("--kodak-limit", type=int, help="use only the first N Kodak images")
    parser.add_argument("--video", type=Path, nargs="*", default=[SHARED / "video" / "cars_320x240_30f.y4m"])
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    kodak = sorted(args.kodak.glob("*.png"))[: args.kodak_limit]
    sets = {"kodak": kodak, "video": list(args.video)}
    missing = [str(p) for paths in sets.values() for p in paths if not Path(p).exists()]
    if not kodak or missing:
        print(f"rd_core: missing content ({missing or args.kodak}); is ../shared/data there?", file=sys.stderr)
        return 1

    def settings(qp: int) -> BaseCodecSettings:
        return BaseCodecSettings(codec=args.codec, qp=qp)

    codecs = {
        "dualcodec": lambda qp: make_codec(settings(qp), None, args.model, None),
        "bicubic": lambda qp: make_codec(settings(qp), "bicubic", args.model, 2),
        "plain": lambda qp: make_codec(settings(qp), "none", args.model, None),
    }
    results = {"codec": args.codec, "qps": args.qps, "model": args.model, "sets": {}}
    rows = []
    for name, sources in sets.items():
        if not sources:
            continue
        points = sweep(sources, codecs, args.qps)
        curves = {label: curve(points, label) for label in codecs}
        bd = {
            "dualcodec_vs_bicubic": bd_rate(*curves["bicubic"], *curves["dualcodec"]),
            "dualcodec_vs_plain": bd_rate(*curves["plain"], *curves["dualcodec"]),
            "bicubic_vs_plain": bd_rate(*curves["plain"], *curves["bicubic"]),
        }
        bd = {k: (None if math.isnan(v) else v) for k, v in bd.items()}  # NaN: the curves do not overlap
        results["sets"][name] = {
            "sources": [str(Path(s).name) for s in sources],
            "curves": {k: {"bpp": v[0].tolist(), "psnr": v[1].tolist()} for k, v in curves.items()},
            "bd_rate_percent": bd,
            "points": [asdict(p) | {"bpp": p.bpp} for p in points],
        }
        rows.append((name, len(sources), bd))
        for label, (rate, dist) in curves.items():
            print(f"{name:6s} {label:10s} " + "  ".join(f"QP{q}: {r:.4f} bpp {d:.2f} dB"
                                                     for q, r, d in zip(args.qps, rate, dist)))

    print(f"\nBD-rate, {args.codec} base, QP {'/'.join(map(str, args.qps))}, file bytes vs RGB PSNR\n")
    print("| content | items | dualcodec vs bicubic | dualcodec vs plain | bicubic vs plain |")
    print("|---|---|---|---|---|")
    def cell(value: float | None) -> str:
        return "no PSNR overlap" if value is None else f"{value:+.1f}%"

    for name, count, bd in rows:
        print(f"| {name} | {count} | {cell(bd['dualcodec_vs_bicubic'])} | {cell(bd['dualcodec_vs_plain'])} "
              f"| {cell(bd['bicubic_vs_plain'])} |")
    output = args.output or ROOT / "experiments" / "results" / f"core_{args.codec}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
