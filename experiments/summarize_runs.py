"""Validation table of training runs, from their logs.

    python experiments/summarize_runs.py experiments/results/runs_core/*/

For each run folder (holding log.jsonl and experiment.json as `dualcodec train` writes
them): the last and the best validation record (fixed crops, real x264 at [train]
val_qp), the step it came at and the wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders")
    args = parser.parse_args()

    print("| run | downsampler | steps | time | val loss (best) | PSNR | base bpp | side bpp |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        model = json.loads((run / "experiment.json").read_text())["model"]
        vals = [r for r in records if "val" in r]
        if not vals:
            continue
        best = min(vals, key=lambda r: r["val"]["loss"])
        v = best["val"]
        down = model["downsampler"] + (f" (bound {model['down_bound']})" if model["downsampler"] == "learned" else "")
        print(f"| {run.name} | {down} | {best['step']} of {vals[-1]['step']} | {best['time'] / 60:.0f} min "
              f"| {v['loss']:.5f} | {v['psnr']:.2f} dB | {v['base_bpp']:.3f} | {v['side_bpp']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
