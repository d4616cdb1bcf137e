"""What each decoder runtime costs in quality: BD-rate against the torch fp32 reference.

    python experiments/runtime_quality.py [--model default] [--runtimes openvino openvino-int8]

Encodes once with the model alone (its own scale, no automatic choice) the first 8 Kodak
images and the first 8 frames of three shared clips (as experiments/ablations.py), H.264
QP 22 27 32 37 42, then decodes every file with each runtime: the files are the same, so
the rates are too and the BD-rate measures the decoded pictures alone. PSNR-YUV (6:1:1)
on the 4:2:0 planes, per-QP means over the files of each set; also the largest
code-value difference from the torch decode. Writes
experiments/results/runtime_quality.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
QPS = [22, 27, 32, 37, 42]
CLIPS = ["cars_320x240_30f.y4m", "bikes_640x272_250f.mp4", "dogbed_1280x720_149f.mp4"]
SETS = {
    "Kodak 1-8": (lambda: sorted((SHARED / "images" / "test" / "kodak").glob("*.png"))[:8], None),
    "clips": (lambda: [SHARED / "video" / name for name in CLIPS], 8),
}


def main() -> int:
    import itertools

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import decode, make_codec
    from dualcodec.metrics import bd_rate, psnr_yuv
    from dualcodec.model import load_model
    from dualcodec.video import VideoReader

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--runtimes", nargs="+", default=["openvino", "openvino-int8"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "experiments" / "results" / "runtime_quality.json")
    args = parser.parse_args()
    if not (SHARED / "images" / "test" / "kodak").is_dir():
        print(f"runtime_quality: the Kodak images are not under {SHARED}", file=sys.stderr)
        return 1
    loaded = load_model(args.model)
    runtimes = ["torch", *args.runtimes]
    results: dict = {"model": loaded.name, "fingerprint": loaded.fingerprint, "qps": QPS, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (sources, frames) in SETS.items():
            psnr = {rt: [[] for _ in QPS] for rt in runtimes}
            rates: list[list[float]] = [[] for _ in QPS]
            worst = {rt: 0 for rt in args.runtimes}
            for source in sources():
                originals = list(itertools.islice(VideoReader(source).frames(), frames))
                for i, qp in enumerate(QPS):
                    codec = make_codec(BaseCodecSettings(codec="h264", qp=qp), None, args.model, loaded.config.scale)
                    encoded = Path(tmp) / "encoded.mp4"
                    report = codec.encode(source, encoded, max_frames=frames)
                    rates[i].append(8 * report.file_bytes / (report.frames * report.width * report.height))
                    decoded = {rt: list(decode(encoded, str(codec.model_path), runtime=rt, threads=args.threads).frames)
                               for rt in runtimes}
                    for rt in runtimes:
                        psnr[rt][i].append(float(np.mean([psnr_yuv(a, b).weighted for a, b in zip(originals, decoded[rt])])))
                    for rt in args.runtimes:
                        worst[rt] = max(worst[rt], max(int(np.abs(a.astype(np.int32) - b).max())
                                                       for fa, fb in zip(decoded["torch"], decoded[rt])
                                                       for a, b in ((fa.y, fb.y), (fa.u, fb.u), (fa.v, fb.v))))
                print(f"{label}: {Path(source).name} done", file=sys.stderr)
            bpp = [float(np.mean(r)) for r in rates]
            means = {rt: [float(np.mean(p)) for p in psnr[rt]] for rt in runtimes}
            results["sets"][label] = {
                "bpp": bpp, "psnr_yuv": means,
                "bd_rate_vs_torch": {rt: bd_rate(bpp, means["torch"], bpp, means[rt]).value for rt in args.runtimes},
                "max_code_difference": worst}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    lines = ["| runtime | " + " | ".join(f"BD-rate vs torch, {s}" for s in SETS) + " | largest code difference |",
             "|---|" + "---|" * len(SETS) + "---|"]
    for rt in args.runtimes:
        cells = " | ".join(f"{results['sets'][s]['bd_rate_vs_torch'][rt]:+.2f}%" for s in SETS)
        lines.append(f"| {rt} | {cells} | {max(results['sets'][s]['max_code_difference'][rt] for s in SETS)} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
