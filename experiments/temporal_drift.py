"""A temporal model's memory over a whole GOP, frame by frame, against its per-frame model.

    python experiments/temporal_drift.py MODEL [--per-frame default] [--frames 40] [--qp 32]
                                         [--clips vtest_768x576_250f.avi bikes_640x272_250f.mp4] [-o OUT]

Codes the first ``--frames`` frames of each shared clip once (H.264, GOP 32, the temporal
model's file), then upsamples its base layer three ways, the eager torch runtime each: the
temporal model with its memory, the same model with the memory reset at every frame (its
per-frame part alone), and the per-frame model. Both models downsample by bicubic, so the
base layer is the same for all three. Prints PSNR-YUV (6:1:1) per frame and its mean over
the frames in groups of 8, and writes ``-o`` (default
experiments/results/temporal_drift.json): whether the memory drifts over the 31 frames
after a key frame, which the training clips (4 to 8 frames) never reach, and how much
of a temporal model's difference from its per-frame model is its memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "video"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the temporal model (name or file)")
    parser.add_argument("--per-frame", default="default", help="the per-frame model it started from")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--qp", type=int, default=32)
    parser.add_argument("--clips", nargs="+", default=["vtest_768x576_250f.avi", "bikes_640x272_250f.mp4"])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "experiments" / "results" / "temporal_drift.json")
    args = parser.parse_args()

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec, ModelLayers
    from dualcodec.container import ContainerReader
    from dualcodec.metrics import psnr_yuv
    from dualcodec.model import load_model
    from dualcodec.video import VideoReader, crop_planes

    temporal, per_frame = load_model(args.model), load_model(args.per_frame)
    if not temporal.config.temporal:
        raise SystemExit(f"{args.model} is not a temporal model")
    results = {"model": temporal.fingerprint, "per_frame": per_frame.fingerprint, "qp": args.qp, "clips": {}}
    for name in args.clips:
        reader = VideoReader(VIDEO / name)
        source = [f for _, f in zip(range(args.frames), reader.frames())]
        fmt = reader.info.format
        data = LayeredCodec(ModelLayers(temporal), BaseCodecSettings(codec="h264", qp=args.qp)).compress(source, fmt)
        container = ContainerReader(data)
        header = container.header
        rows = {}
        for label, loaded, reset in (("memory", temporal, False), ("reset", temporal, True),
                                     ("per_frame", per_frame, True)):
            layers, values = ModelLayers(loaded, runtime="torch"), []
            for original, planes in zip(source, container.base_frames()):
                if reset or planes.key_frame:
                    layers.reset()
                out = crop_planes(layers.up(planes, None, header.yuv_format), header.width, header.height)
                values.append(psnr_yuv(original, out, fmt.bit_depth).weighted)
            rows[label] = values
        results["clips"][name] = rows
        print(name)
        for label, values in rows.items():
            groups = [np.mean(values[i : i + 8]) for i in range(0, len(values), 8)]
            print(f"  {label:9s} mean {np.mean(values):.3f} dB; by 8 frames: " + " ".join(f"{g:.3f}" for g in groups))
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
