"""The full rate-distortion sweep behind the README's results and notebooks/rate_distortion.ipynb.

Runs `dualcodec eval` for every base codec (H.264, HEVC, AV1 at their default presets:
x264/x265 medium, SVT-AV1 8; GOP 32), every content set and four methods, all on the
sources' own 4:2:0 planes:

* ``auto``:      the default, ``--scale auto``: the plain codec or the model, file by file;
* ``dualcodec``: the learned dual layer alone (``--model``, default: the shipped model; ``--scale 2``);
* ``bicubic``:   bicubic down per plane, the same base codec at half resolution, bicubic up;
* ``plain``:     the base codec alone at full resolution.

Content: the 24 Kodak images (one-frame videos) and the shared clips, the two HD ones
included (first 8 frames of each; foreman_352x288_2f.y4m is left out, it is the first
two frames of the foreman clip). Each run writes ``OUT/<content>_<codec>_<method>.json`` (CompressAI's layout),
then :mod:`rd_figures` writes the BD-rate tables and the figures from every result file
in OUT. ``--methods`` re-runs some methods only (after retraining: the dualcodec rows),
leaving the other files as they are; ``OUT/sweep.json`` holds the QPs, which every file
in OUT shares (a run at other QPs is refused: use another OUT), and every run behind the
files, oldest first (command, methods, codecs, content, model, seconds), so the file of
a (content, codec, method) comes from the last run that lists all three.

    python experiments/rd_sweep.py                                   # everything
    python experiments/rd_sweep.py --methods dualcodec --model runs/mine/model.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
CLIPS = ["cars_320x240_30f.y4m", "foreman_352x288_300f_intra.264", "mobile_352x288_30f_intra.264",
         "bikes_640x272_250f.mp4", "vtest_768x576_250f.avi", "dogbed_1280x720_149f.mp4", "facade_1920x1080_73f.mp4"]
CONTENT = {
    "kodak": (lambda: sorted((SHARED / "images" / "test" / "kodak").glob("*.png")), None),
    "video": (lambda: [SHARED / "video" / name for name in CLIPS], 8),
}
METHODS = {"auto": [], "dualcodec": ["--scale", "2"], "bicubic": ["--baseline", "bicubic"],
           "plain": ["--baseline", "none"]}


def main() -> int:
    from dualcodec.cli import main as dualcodec

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model for the dualcodec rows (default: default)")
    parser.add_argument("--codecs", nargs="+", default=["h264", "hevc", "av1"], choices=["h264", "hevc", "av1"])
    parser.add_argument("--content", nargs="+", default=list(CONTENT), choices=list(CONTENT))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="methods to run (default: all); other methods' result files are kept")
    parser.add_argument("--qps", type=int, nargs="+", default=[22, 27, 32, 37, 42])
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "experiments" / "results" / "rd")
    args = parser.parse_args()

    missing = [str(p) for name in args.content for p in CONTENT[name][0]() if not p.is_file()]
    if missing or not CONTENT["kodak"][0]():
        print(f"rd_sweep: missing content under {SHARED}: {missing or 'kodak'}", file=sys.stderr)
        return 1
    record_path = args.out / "sweep.json"
    qps = sorted(set(args.qps))
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"qps": qps, "runs": []}
    if record["qps"] != qps:
        print(f"rd_sweep: the results in {args.out} are at QP {record['qps']}; run at those QPs or into "
              "another folder (-o)", file=sys.stderr)
        return 1
    methods = [m for m in METHODS if m in args.methods]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for codec in args.codecs:
        for content in args.content:
            sources, frames = CONTENT[content]
            for method in methods:
                model = ["--model", args.model] if method in ("auto", "dualcodec") else []
                cap = ["--frames", str(frames)] if frames else []
                argv = ["eval", *map(str, sources()), "--codec", codec, "--qp", *map(str, qps), *model,
                        *METHODS[method], *cap, "--name", method,
                        "-o", str(args.out / f"{content}_{codec}_{method}.json"), "-y"]
                print(f"dualcodec {' '.join(argv[:1] + ['<' + content + '>'] + argv[1 + len(sources()):])}",
                      file=sys.stderr)
                if dualcodec(argv):
                    return 1
    elapsed = time.time() - start
    record = json.loads(record_path.read_text()) if record_path.is_file() else record  # another sweep may have written
    record["runs"].append({
        "command": " ".join(["python experiments/rd_sweep.py", *sys.argv[1:]]), "methods": methods,
        "codecs": args.codecs, "content": args.content,
        "model": args.model if {"auto", "dualcodec"} & set(methods) else None, "seconds": round(elapsed),
    })
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"sweep took {elapsed / 60:.1f} min", file=sys.stderr)
    sys.path.insert(0, str(ROOT / "experiments"))
    from rd_figures import summarize

    summarize(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
