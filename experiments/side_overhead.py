"""Where a side-stream model's bytes go, against the same recipe without a side stream.

    python experiments/side_overhead.py [WITH_SIDE] [WITHOUT_SIDE]   # default: folded_ft no_side_ft

Reads the real-file results that ``experiments/ablations.py`` wrote for both runs
(``experiments/results/ablations/<run>_<content>.json``: Kodak 1-8 and the first 8 frames
of three clips, H.264 QP 22-42) and prints, per QP and per file, the base layer's bytes,
the side packets' bytes and the rest of the file (header, index, MP4 boxes: the data
track's own boxes are in it), the PSNR-YUV the side stream adds, and BD-rates of the
side-stream model against the model without one: as the files are, and with the side
packets and the data track's boxes (the difference in the rest of the file) counted as
free, which is what the side stream's choices are worth before its container costs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results" / "ablations"
CONTENT = {"kodak": 8, "clips": 3}  # files per content set
METRIC = "psnr-yuv"


def main() -> int:
    from dualcodec.metrics import bd_rate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("with_side", nargs="?", default="folded_ft")
    parser.add_argument("without_side", nargs="?", default="no_side_ft")
    args = parser.parse_args()
    for content, files in CONTENT.items():
        side, plain = (json.loads((RESULTS / f"{run}_{content}.json").read_text())["results"]
                       for run in (args.with_side, args.without_side))
        print(f"{content} ({files} files), bytes per file: base | side packets | rest of the file (side model; "
              f"model without) | PSNR-YUV added")
        for i, qp in enumerate(side["qp"]):
            print(f"  QP {qp}: {side['base_bytes'][i] / files:8.0f} | {side['side_bytes'][i] / files:6.0f} | "
                  f"{side['other_bytes'][i] / files:5.0f}; {plain['other_bytes'][i] / files:5.0f} | "
                  f"{side[METRIC][i] - plain[METRIC][i]:+.3f} dB")
        boxes = [total - (rest - rest_plain) for total, rest, rest_plain in
                 zip(side["file_bytes"], side["other_bytes"], plain["other_bytes"])]
        free = [total - packets for total, packets in zip(boxes, side["side_bytes"])]
        rates = {"as the files are": side["file_bytes"], "the data track's boxes free": boxes,
                 "the side stream free (its packets too)": free}
        print(f"  BD-rate of {args.with_side} against {args.without_side}: " + ", ".join(
            f"{bd_rate(plain['file_bytes'], plain[METRIC], rate, side[METRIC]).value:+.1f}% {what}"
            for what, rate in rates.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
