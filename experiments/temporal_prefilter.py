"""Frames that help each other at the encoder: a motion-compensated temporal pre-filter.

    python experiments/temporal_prefilter.py [--model default] [--frames 8] [--qps 22 27 32 37 42]
                                             [--strengths 1.5 4] [--block 8] [--search 8]
                                             [--clips ...] [-o OUT]

The decoder side of a multi-frame system is bounded by ``temporal_headroom.py``; this is
the encoder side. VVC's reference encoder (VTM) filters the frames that others predict
from with their motion-compensated neighbours before coding them (its MCTF): the
source's noise, which costs bits in the key frame and in every prediction from it, is
averaged away where the neighbours agree. Here the key frame (each clip's first) is
filtered so, with the two frames after it (the only ones a one-pass encoder has), then
the clip is coded by the per-frame ``--model`` as in the RD sweep (H.264, GOP 32) and its
decode scored against the unfiltered source.

The filter is VTM's for one-sided references: each sample becomes ``(x + sum w_i r_i) /
(1 + sum w_i)`` over the references ``r_i`` moved block by block (``--block`` luma
samples, the even shift within +-``--search`` that best matches the key frame), with
``w_i = strength * p * a_i * exp(-(r_i - x)^2 / (2 sigma^2))``: ``a_i`` 1.13 and 0.97 at
distances 1 and 2, ``p`` 0.4 for luma and 0.55 for chroma, ``sigma`` ``3 (QP - 10)`` for
luma and 30 for chroma in 10-bit units. ``--strengths``: VTM's overall strength (1.5 on
its key frames).

Writes ``-o`` (default experiments/results/temporal_prefilter.json): bytes and mean
PSNR-YUV a QP for each strength and none, and each strength's BD-rate against none.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from rd_sweep import CLIPS  # noqa: E402
from temporal_headroom import ONE_SIDED, clip_frames, compensated, mctf  # noqa: E402


def prefiltered(frames, qp: int, bit_depth: int, strength: float, block: int, search: int):
    """``frames`` with the first filtered by the next two (VTM's MCTF, one-sided)."""
    import torch

    from dualcodec.basecodec import Planes

    def tensors(planes):
        return [torch.from_numpy(p.astype(np.float32)) for p in (planes.y, planes.u, planes.v)]

    key = tensors(frames[0])
    references = [(compensated(tensors(r), key, block, search), a) for r, a in zip(frames[1:], ONE_SIDED)]
    filtered = mctf(key, references, qp, bit_depth, strength)
    peak = (1 << bit_depth) - 1
    dtype = frames[0].y.dtype
    filtered = Planes(*(t.round().clamp(0, peak).numpy().astype(dtype) for t in filtered))
    return [filtered, *frames[1:]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="the per-frame model (name or file)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--qps", type=int, nargs="+", default=[22, 27, 32, 37, 42])
    parser.add_argument("--strengths", type=float, nargs="+", default=[1.5, 4.0])
    parser.add_argument("--block", type=int, default=8, help="motion block side, luma samples (even)")
    parser.add_argument("--search", type=int, default=8, help="motion search range in luma samples")
    parser.add_argument("--clips", nargs="+", default=CLIPS)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "experiments" / "results" / "temporal_prefilter.json")
    args = parser.parse_args()

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec, ModelLayers, decompress
    from dualcodec.metrics import bd_rate, psnr_yuv
    from dualcodec.model import load_model

    loaded = load_model(args.model)
    variants = ["none", *(f"strength_{s:g}" for s in args.strengths)]
    results = {"model": loaded.fingerprint, "frames": args.frames, "qps": args.qps, "block": args.block,
               "search": args.search, "clips": {}}
    for name in args.clips:
        source, fmt = clip_frames(name, args.frames)
        rows = {v: {"bytes": [], "psnr": []} for v in variants}
        for qp in args.qps:
            inputs = [source, *(prefiltered(source, qp, fmt.bit_depth, s, args.block, args.search)
                                for s in args.strengths)]
            for variant, frames in zip(variants, inputs):
                data = LayeredCodec(ModelLayers(loaded), BaseCodecSettings(codec="h264", qp=qp)).compress(frames, fmt)
                decoded = list(decompress(data).frames)
                rows[variant]["bytes"].append(len(data))
                rows[variant]["psnr"].append(float(np.mean(
                    [psnr_yuv(s, d, fmt.bit_depth).weighted for s, d in zip(source, decoded)])))
            print(f"{name} QP {qp}: " + ", ".join(f"{v} {r['bytes'][-1]} B {r['psnr'][-1]:.3f} dB"
                                                  for v, r in rows.items()), flush=True)
        none = rows["none"]
        rows["bd_rate"] = {v: bd_rate(none["bytes"], none["psnr"], rows[v]["bytes"], rows[v]["psnr"]).value
                           for v in variants[1:]}
        results["clips"][name] = rows
        print(f"{name} BD-rate: " + ", ".join(f"{v} {b:+.2f}%" for v, b in rows["bd_rate"].items()), flush=True)
    results["mean_bd_rate"] = {v: float(np.mean([c["bd_rate"][v] for c in results["clips"].values()]))
                               for v in variants[1:]}
    print("mean of the clips: " + ", ".join(f"{v} {b:+.2f}%" for v, b in results["mean_bd_rate"].items()))
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
