"""The ablation table: BD-rate of each trained run against the bicubic baseline and the
plain codec, on real files.

    python experiments/ablations.py [--runs runs] [NAME ...]

For each run (``RUNS/NAME/model.pt`` from ``dualcodec train experiments/NAME.toml``) this
encodes with the model alone (``--scale`` of the model, no automatic choice) through
``dualcodec eval``: the first 8 Kodak images (kodim01-08) and the first 8 frames of three
shared clips (cars_320x240_30f, bikes_640x272_250f, dogbed_1280x720_149f), H.264 at
QP 22 27 32 37 42, rate = whole file, PSNR-YUV (6:1:1) on the 4:2:0 planes. The bicubic
baseline and the plain codec are evaluated once at the same settings and cached beside
the results. The side stream's share of the bytes at QP 32 (clips) is reported too.
Results land in ``experiments/results/ablations/`` (``--out``: another folder, for runs
coded by another encoder than the cached ones); ``table.md`` is what the README shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "experiments" / "results" / "ablations"
NAMES = ["ablation_reference", "ablation_no_side", "ablation_learned_down", "ablation_no_residual", "ablation_fast_up",
         "ablation_up_width", "ablation_mse", "value_curve_0", "value_curve_025", "value_curve_4",
         "folded_no_side", "no_side_depth3", "skip_weight", "pairs", "pairs_no_side", "pairs_no_side_unaugmented",
         "no_side_depth3_level", "no_side_depth3_mse", "no_side_depth3_long", "no_side_depth3_long_ft",
         "no_side_depth3_longer", "no_side_depth3_longer_ft", "no_side_depth3_restart", "no_side_depth3_restart_ft"]
QPS = ["22", "27", "32", "37", "42"]
CLIPS = ["cars_320x240_30f.y4m", "bikes_640x272_250f.mp4", "dogbed_1280x720_149f.mp4"]
CONTENT = {  # name: (sources, extra arguments)
    "kodak": (lambda: sorted(str(p) for p in (SHARED / "images" / "test" / "kodak").glob("*.png"))[:8], []),
    "clips": (lambda: [str(SHARED / "video" / name) for name in CLIPS], ["--frames", "8"]),
}
METRIC = "psnr-yuv"


def evaluate(content: str, method: list[str], out: Path) -> dict:
    from dualcodec.cli import main as dualcodec

    if not out.is_file() or not json.loads(out.read_text()).get("complete"):
        sources, extra = CONTENT[content]
        argv = ["eval", *sources(), "--codec", "h264", "--qp", *QPS, *method, *extra, "--name", out.stem, "-o", str(out)]
        if out.is_file():
            argv.append("--resume")  # an interrupted evaluation continues where it stopped
        if dualcodec(argv):
            raise SystemExit(f"ablations: dualcodec eval failed for {out.stem}")
    return json.loads(out.read_text())["results"]


def side_share(results: dict, qp: int = 32) -> float:
    """The side stream's share of the file bytes at ``qp``."""
    i = results["qp"].index(qp)
    return results["side_bytes"][i] / results["file_bytes"][i]


def main() -> int:
    from dualcodec.metrics import bd_rate
    from dualcodec.model import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=NAMES, help="run names (default: every ablation that exists)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="folder holding the run folders")
    parser.add_argument("--out", type=Path, default=OUT, help="results folder (baselines cached there)")
    args = parser.parse_args()
    out = args.out
    if not (SHARED / "images" / "test" / "kodak").is_dir():
        print(f"ablations: the Kodak images are not under {SHARED}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    anchors = {(c, b): evaluate(c, ["--baseline", b], out / f"{b}_{c}.json") for c in CONTENT for b in ("bicubic", "none")}
    rows = {}
    for name in args.names:
        model = args.runs / name / "model.pt"
        if not model.is_file():
            print(f"ablations: skipping {name}: no {model}", file=sys.stderr)
            continue
        scale = str(load_model(str(model)).config.scale)
        row = {}
        for content in CONTENT:
            test = evaluate(content, ["--model", str(model), "--scale", scale], out / f"{name}_{content}.json")
            for baseline in ("bicubic", "none"):
                anchor = anchors[(content, baseline)]
                row[f"{content}_vs_{baseline}"] = bd_rate(anchor["bpp"], anchor[METRIC], test["bpp"], test[METRIC]).value
            row[f"{content}_side_share"] = side_share(test)
        rows[name] = row
    previous = json.loads((out / "bd_rates.json").read_text()) if (out / "bd_rates.json").is_file() else {}
    merged = {**previous, **rows}
    (out / "bd_rates.json").write_text(json.dumps(merged, indent=1) + "\n")
    lines = ["| run | vs bicubic, Kodak 1-8 | vs bicubic, clips | vs plain, Kodak 1-8 | vs plain, clips | "
             "side bytes at QP 32, clips |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['kodak_vs_bicubic']:+.1f}% | {r['clips_vs_bicubic']:+.1f}% | {r['kodak_vs_none']:+.1f}% | "
              f"{r['clips_vs_none']:+.1f}% | {100 * r['clips_side_share']:.1f}% |" for name, r in merged.items()]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
