"""What ``encode --pix-fmt yuv420p10le`` buys an 8-bit source: the 2x default and the plain codec,
each coded at 8 and at 10 bits.

    SVT_LOG=1 python experiments/ten_bit_dual.py [--codecs h264 hevc av1] [--frames 8]
                                                 [--clips ...] [-o OUT]

``experiments/ten_bit_plain.py`` measures the plain codec with PyAV alone; this runs
dualcodec's own coding (``LayeredCodec.encode`` with ``bit_depth``, as ``encode
--pix-fmt`` does, then ``decode``) for the 2x default (``dual``) and the plain codec
(``plain``) at five quantisers (H.264's 12 higher at 10 bits, the same step size). The
judge shares no code with dualcodec: the source read and PSNR-YUV (6:1:1, over the
sequence) by ``../shared/tools/anchors.py``, the 10-bit decodes rounded to 8 bits in numpy
(``(c + 2) >> 2``), BD-rate by anchors.py. Writes ``-o`` (default
experiments/results/ten_bit_dual.json): bytes and PSNR-YUV at each point, and each
method's BD-rate at 10 bits against 8.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "experiments"))
from ten_bit_plain import QPS, arguments  # noqa: E402

METHODS = ("dual", "plain")


def main() -> int:
    args = arguments(__doc__, 8, "ten_bit_dual")
    import anchors  # independent of dualcodec

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec, ModelLayers, PlainLayers, decode
    from dualcodec.model import load_model

    loaded = load_model("default")
    results = {"model": loaded.fingerprint, "frames": args.frames, "codecs": {}}
    for codec in args.codecs:
        rows = {}
        for clip in args.clips:
            path = SHARED / "data" / "video" / clip
            source = anchors.read(str(path), args.frames)
            row = {m: {d: {"bytes": [], "psnr_yuv": []} for d in (8, 10)} for m in METHODS}
            for qp in QPS[codec]:
                for method in METHODS:
                    for depth in (8, 10):
                        q = qp + 12 if codec == "h264" and depth == 10 else qp
                        layers = ModelLayers(loaded) if method == "dual" else PlainLayers()
                        coder = LayeredCodec(layers, BaseCodecSettings(codec=codec, qp=q))
                        with tempfile.TemporaryDirectory() as tmp:
                            out = Path(tmp) / "coded.mp4"
                            report = coder.encode(path, out, max_frames=args.frames, tags=False, bit_depth=depth)
                            decoded = []
                            for planes in decode(out).frames:
                                planes = (planes.y, planes.u, planes.v)
                                if depth == 10:
                                    planes = tuple(np.minimum((p.astype(np.int64) + 2) >> 2, 255) for p in planes)
                                decoded.append(planes)
                        row[method][depth]["bytes"].append(report.file_bytes)
                        row[method][depth]["psnr_yuv"].append(anchors.psnr_yuv(source, decoded))
                print(f"{codec} {clip} QP {qp}: " + ", ".join(
                    f"{m} {d}-bit {row[m][d]['bytes'][-1]} B {row[m][d]['psnr_yuv'][-1]:.3f} dB"
                    for m in METHODS for d in (8, 10)), flush=True)
            bd = {m: anchors.bd_rate(row[m][8]["bytes"], row[m][8]["psnr_yuv"], row[m][10]["bytes"],
                                     row[m][10]["psnr_yuv"]) for m in METHODS}
            rows[clip] = {"qps": QPS[codec], **{m: {str(d): row[m][d] for d in (8, 10)} for m in METHODS},
                          "bd_rate": bd}
            print(f"{codec} {clip}: 10 bits against 8, BD-rate " + ", ".join(f"{m} {v:+.2f}%" for m, v in bd.items()),
                  flush=True)
        mean = {m: float(np.mean([r["bd_rate"][m] for r in rows.values()])) for m in METHODS}
        results["codecs"][codec] = {"clips": rows, "mean_bd_rate": mean}
        print(f"{codec}: mean " + ", ".join(f"{m} {v:+.2f}%" for m, v in mean.items()), flush=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
