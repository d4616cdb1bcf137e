"""BD-rate of each trained ablation against the bicubic baseline, on real files.

    python experiments/ablations.py [--runs runs] [NAME ...]

For each run (``RUNS/NAME/model.pt`` from ``dualcodec train experiments/NAME.toml``)
this evaluates the model with ``dualcodec eval`` on the first 8 Kodak images (kodim01-08)
and the first 8 frames of the ``cars_320x240_30f`` clip (H.264, QP 27 32 37 42, file bytes against RGB PSNR)
and compares it with the bicubic baseline at the same settings (evaluated once, cached
beside the results). Results land in ``experiments/results/ablations/``; the table
(``table.md``) is what the README shows. About 2 minutes per run on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "experiments" / "results" / "ablations"
NAMES = ["ablation_reference", "ablation_no_side", "ablation_learned_down", "ablation_learned_down_no_base_rate",
         "ablation_mse", "ablation_no_rotation", "schedule_fixed", "schedule_multigrid", "schedule_large_batch"]
QPS = ["27", "32", "37", "42"]
CONTENT = {  # name: (sources, frame cap)
    "kodak": (lambda: sorted(str(p) for p in (SHARED / "images" / "test" / "kodak").glob("*.png"))[:8], []),
    "cars": (lambda: [str(SHARED / "video" / "cars_320x240_30f.y4m")], ["--frames", "8"]),
}


def evaluate(content: str, method: list[str], out: Path) -> dict:
    from dualcodec.cli import main as dualcodec

    if not out.is_file():
        sources, cap = CONTENT[content]
        argv = ["eval", *sources(), "--codec", "h264", "--qp", *QPS, *method, *cap, "--name", out.stem, "-o", str(out)]
        if dualcodec(argv):
            raise SystemExit(f"ablations: dualcodec eval failed for {out.stem}")
    return json.loads(out.read_text())["results"]


def main() -> int:
    from dualcodec.metrics import bd_rate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=NAMES, help="run names (default: every ablation that exists)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="folder holding the run folders")
    args = parser.parse_args()
    if not (SHARED / "images" / "test" / "kodak").is_dir():
        print(f"ablations: the Kodak images are not under {SHARED}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    anchors = {c: evaluate(c, ["--baseline", "bicubic"], OUT / f"bicubic_{c}.json") for c in CONTENT}
    rows = {}
    for name in args.names:
        model = args.runs / name / "model.pt"
        if not model.is_file():
            print(f"ablations: skipping {name}: no {model}", file=sys.stderr)
            continue
        rows[name] = {}
        for content, anchor in anchors.items():
            test = evaluate(content, ["--model", str(model)], OUT / f"{name}_{content}.json")
            rows[name][content] = bd_rate(anchor["bpp"], anchor["psnr-rgb"], test["bpp"], test["psnr-rgb"]).value
    previous = json.loads((OUT / "bd_rates.json").read_text()) if (OUT / "bd_rates.json").is_file() else {}
    merged = {**previous, **rows}
    (OUT / "bd_rates.json").write_text(json.dumps(merged, indent=1) + "\n")
    lines = ["| run | BD-rate vs bicubic, Kodak 1-8 | cars_320x240_30f, 8 frames |", "|---|---|---|"]
    lines += [f"| {name} | {r['kodak']:+.1f}% | {r['cars']:+.1f}% |" for name, r in merged.items()]
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
