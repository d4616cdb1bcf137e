"""dualcodec judged by the independent anchors of ../shared/tools/anchors.py.

For every source (the 24 Kodak images and every clip of ../shared/data/video, first
``--frames`` frames), each method is encoded with ``dualcodec encode`` at every QP and
decoded with ``dualcodec decode`` to a y4m; ``anchors.py`` (PyAV, numpy and torch only,
no dualcodec code) then computes the plain codec and the per-plane bicubic dual layer on
the source's own planes, scores the decoded files against the source, and gives the
BD-rates (pchip, whole-file rate, PSNR-YUV 6:1:1).

Methods: ``auto`` (the default, ``--scale auto``), ``dual`` (the model alone,
``--scale 2``), ``plain`` (``--baseline none``) and ``bicubic`` (``--baseline bicubic``);
the last two check the baselines against the anchors' own.

    python experiments/anchor_check.py                      # H.264, QP 22-42, all content
    python experiments/anchor_check.py --content video --methods auto

writes ``experiments/results/anchors/<codec>.json`` (every source's anchors output) and
prints per-source BD-rates and their means per content set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
ANCHORS = SHARED / "tools" / "anchors.py"
METHODS = {"auto": [], "dual": ["--scale", "2"], "plain": ["--baseline", "none"], "bicubic": ["--baseline", "bicubic"]}


def sources(content: str) -> list[Path]:
    if content == "kodak":
        return sorted((SHARED / "data" / "images" / "test" / "kodak").glob("*.png"))
    return sorted(p for p in (SHARED / "data" / "video").iterdir() if p.suffix in (".y4m", ".mp4", ".avi", ".264"))


def dualcodec(*argv: str) -> None:
    from dualcodec.cli import main

    if main([*argv, "-q", "-y"]) != 0:
        raise SystemExit(f"dualcodec {' '.join(argv)} failed")


def check(source: Path, codec: str, qps: list[int], frames: int, methods: list[str], model: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        curves = []
        for method in methods:
            pairs = []
            for qp in qps:
                mp4, y4m = Path(tmp) / f"{method}{qp}.mp4", Path(tmp) / f"{method}{qp}.y4m"
                dualcodec("encode", str(source), "-o", str(mp4), "--codec", codec, "--qp", str(qp),
                          "--frames", str(frames), "--model", model, *METHODS[method])
                # A built-in family is found by the name in each file's header (--scale auto may keep
                # default_x1 or default_x4); a model file must be named.
                named = method in ("auto", "dual") and Path(model).is_file()
                dualcodec("decode", str(mp4), "-o", str(y4m), *(["--model", model] if named else []))
                pairs.append(f"{mp4}:{y4m}")
            curves += ["--curve", f"dualcodec-{method}", *pairs]  # not "plain"/"bicubic": the anchors' names
        out = subprocess.run([sys.executable, str(ANCHORS), str(source), "--frames", str(frames), "--codec", codec,
                              "--qp", *map(str, qps), *curves], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default="h264", choices=["h264", "hevc", "av1"])
    parser.add_argument("--qps", type=int, nargs="+", default=[22, 27, 32, 37, 42])
    parser.add_argument("--frames", type=int, default=8, help="frames of each clip (default 8)")
    parser.add_argument("--content", nargs="+", default=["kodak", "video"], choices=["kodak", "video"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--model", default="default")
    parser.add_argument("--only", metavar="TEXT", help="only the sources whose name contains TEXT")
    parser.add_argument("--summary", action="store_true", help="only print the tables of the saved results")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "experiments" / "results" / "anchors")
    args = parser.parse_args()
    if not ANCHORS.is_file():
        print(f"anchor_check: {ANCHORS} not found (expected ../shared beside the repository)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.codec}.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    results = {k: v for k, v in saved.get("sources", {}).items()}
    if args.summary:
        summarize(results)
        baseline_agreement(results)
        return 0
    start = time.time()
    for content in args.content:
        for source in sources(content):
            if args.only and args.only not in source.name:
                continue
            key = f"{content}/{source.name}"
            print(f"{key} ...", file=sys.stderr, flush=True)
            results[key] = check(source, args.codec, args.qps, args.frames, args.methods, args.model)
            path.write_text(json.dumps({"codec": args.codec, "qps": args.qps, "frames": args.frames,
                                        "command": " ".join(sys.argv), "sources": results}, indent=1) + "\n")
    print(f"{time.time() - start:.0f} s", file=sys.stderr)
    summarize(results)
    baseline_agreement(results)
    return 0


def baseline_agreement(results: dict) -> None:
    """Per source, how dualcodec's baselines match the anchors' own at every QP: the largest
    PSNR-YUV difference and the range of the byte ratio."""
    for key, entry in sorted(results.items()):
        cells = []
        for name in ("plain", "bicubic"):
            anchor, ours = entry["curves"].get(name), entry["curves"].get(f"dualcodec-{name}")
            if anchor and ours:
                diff = max(abs(a[1] - o[1]) for a, o in zip(anchor, ours))
                ratios = [100 * (o[0] / a[0] - 1) for a, o in zip(anchor, ours)]
                cells.append(f"{name}: |dPSNR| <= {diff:.3f} dB, bytes {min(ratios):+.2f}..{max(ratios):+.2f}%")
        if cells:
            print(f"{key}: " + "; ".join(cells))


def summarize(results: dict) -> None:
    """Per-source BD-rates (percent) and the mean per content set."""
    table: dict[str, dict[str, list[float]]] = {}
    for key, entry in sorted(results.items()):
        content = key.split("/")[0]
        row = []
        for pair, value in sorted(entry["bd_rate"].items()):
            if value is None:
                continue
            table.setdefault(content, {}).setdefault(pair, []).append(value)
            row.append(f"{pair} {value:+.1f}%")
        print(f"{key}: " + ", ".join(row))
    for content, pairs in table.items():
        print(f"{content} mean: " + ", ".join(f"{p} {sum(v) / len(v):+.2f}% (max {max(v):+.1f}%, n={len(v)})"
                                              for p, v in sorted(pairs.items())))


if __name__ == "__main__":
    sys.exit(main())
