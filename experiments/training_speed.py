"""Training-speed table: how soon each schedule reaches the fixed recipe's final quality.

    python experiments/training_speed.py [--runs experiments/results/runs] [--json OUT]
    python experiments/training_speed.py --runs runs/temporal_speed --baseline temporal_speed_fixed

The target is the final validation PSNR of the baseline run (``schedule_fixed``, the usual
fixed-size recipe, by default) minus 0.05 dB. For each run whose name shares the
baseline's prefix (``schedule_``, ``temporal_speed_``) the table gives the first
validation at or above the target: its wall-clock time and optimizer steps, and both as
a fraction of what the baseline took to finish. Runs are read from their ``log.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "schedule_fixed"  # the default baseline
TOLERANCE_DB = 0.05


def validations(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if "val" in r]


def speed_table(runs_dir: Path, baseline: str = BASELINE) -> dict:
    prefix = baseline.rsplit("_", 1)[0] + "_"
    runs = sorted(p for p in runs_dir.glob(prefix + "*") if (p / "log.jsonl").is_file())
    by_name = {run.name: vals for run in runs if (vals := validations(run))}
    if baseline not in by_name or not by_name[baseline]:
        raise SystemExit(f"no {baseline} run with validations under {runs_dir}")
    base = by_name[baseline][-1]
    target = base["val"]["psnr"] - TOLERANCE_DB
    rows = []
    for name, vals in by_name.items():
        experiment = json.loads((runs_dir / name / "experiment.json").read_text())
        reached = next((v for v in vals if v["val"]["psnr"] >= target), None)
        rows.append({
            "run": name,
            "batch": experiment["schedule"]["batch"],
            "crops": experiment["schedule"]["crops"],
            "clips": experiment["schedule"]["clips"],
            "steps_planned": experiment["schedule"]["steps"],
            "final_psnr": vals[-1]["val"]["psnr"],
            "final_time_s": vals[-1]["time"],
            "reached": reached is not None,
            "time_s": reached["time"] if reached else None,
            "steps": reached["step"] if reached else None,
            "time_ratio": reached["time"] / base["time"] if reached else None,
            "steps_ratio": reached["step"] / base["step"] if reached else None,
        })
    return {"baseline": baseline, "target_psnr": target, "tolerance_db": TOLERANCE_DB, "runs": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=ROOT / "experiments" / "results" / "runs")
    parser.add_argument("--baseline", default=BASELINE, help=f"the fixed recipe's run (default {BASELINE})")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args()
    table = speed_table(args.runs, args.baseline)
    print(f"target: {table['target_psnr']:.3f} dB ({args.baseline}'s final validation PSNR - {TOLERANCE_DB} dB)\n")
    print("| run | batch | crops | clips | final PSNR | reaches target at | time | x fixed time | x fixed steps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table["runs"]:
        crops, clips = ("/".join(str(c) for c in r[key]) for key in ("crops", "clips"))
        if r["reached"]:
            print(f"| {r['run']} | {r['batch']} | {crops} | {clips} | {r['final_psnr']:.3f} dB | step {r['steps']} | "
                  f"{r['time_s'] / 60:.1f} min | {r['time_ratio']:.2f} | {r['steps_ratio']:.2f} |")
        else:
            print(f"| {r['run']} | {r['batch']} | {crops} | {clips} | {r['final_psnr']:.3f} dB | not reached | "
                  f"({r['final_time_s'] / 60:.1f} min) | - | - |")
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
