"""What coding an 8-bit source at 10 bits is worth to the plain codec (no dualcodec code).

    SVT_LOG=1 python experiments/ten_bit_plain.py [--codecs h264 hevc av1] [--frames 16]
                                                  [--clips ...] [-o OUT]

dualcodec codes an 8-bit source at 8 bits (README, *Limits worth knowing*). Encoders are
often said to compress 8-bit video better at 10 bits (finer rounding in prediction and
transforms). This measures it on the plain codec alone, with PyAV and numpy only: the
first ``--frames`` frames of each clip (as 8-bit 4:2:0), coded at 8 bits and, widened
exactly (times 4), at 10 bits, at five quantisers (x264's 10-bit QP 12 higher, which is
the same step size); the 10-bit decode is rounded back to 8 bits (``round(x / 4)``)
and both are scored in PSNR-YUV (6:1:1) against the 8-bit source, BD-rate by
``../shared/tools/anchors.py``'s function. Writes ``-o`` (default
experiments/results/ten_bit_plain.json).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
QPS = {"h264": [22, 27, 32, 37, 42], "hevc": [22, 27, 32, 37, 42], "av1": [27, 35, 43, 51, 59]}
CLIPS = ["cars_320x240_30f.y4m", "bikes_640x272_250f.mp4", "dogbed_1280x720_149f.mp4"]


def read_frames(path: Path, count: int) -> list[list[np.ndarray]]:
    import av

    frames = []
    with av.open(str(path)) as inp:
        for frame in inp.decode(video=0):
            frame = frame.reformat(format="yuv420p")
            frames.append([np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width].copy()
                           for p in frame.planes])
            if len(frames) == count:
                break
    return frames


def coded(frames: list[list[np.ndarray]], codec: str, qp: int, depth: int) -> tuple[int, float]:
    """Bytes of the MP4 and PSNR-YUV of its decode, at 8 bits, against ``frames``."""
    import av

    height, width = frames[0][0].shape
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream(ENCODERS[codec], rate=25)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if depth == 8 else "yuv420p10le"
        if codec == "h264":
            stream.options = {"qp": str(qp + 12 * (depth == 10)), "preset": "medium"}
        elif codec == "hevc":
            stream.options = {"x265-params": f"qp={qp}:log-level=error", "preset": "medium"}
        else:
            stream.options = {"qp": str(qp), "preset": "8"}
        for i, planes in enumerate(frames):
            frame = av.VideoFrame(width, height, stream.pix_fmt)
            for plane, data in zip(frame.planes, planes):
                if depth == 10:
                    data = data.astype(np.uint16) << 2  # exact: 8-bit code c is 10-bit 4c
                rows = np.zeros((data.shape[0], plane.line_size // data.itemsize), data.dtype)
                rows[:, : data.shape[1]] = data
                plane.update(rows.tobytes())
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = buffer.getvalue()
    sse, count = np.zeros(3), np.zeros(3)
    with av.open(io.BytesIO(data)) as inp:
        for source, frame in zip(frames, inp.decode(video=0)):
            dtype = np.uint8 if depth == 8 else np.uint16
            for k, (s, p) in enumerate(zip(source, frame.planes)):
                d = np.frombuffer(p, dtype).reshape(-1, p.line_size // np.dtype(dtype).itemsize)[: p.height, : p.width]
                d = d.astype(np.float64) if depth == 8 else np.clip(np.round(d / 4.0), 0, 255)
                sse[k] += float(((s.astype(np.float64) - d) ** 2).sum())
                count[k] += s.size
    psnr = [10 * math.log10(255.0**2 * c / e) for e, c in zip(sse, count)]
    return len(data), (6 * psnr[0] + psnr[1] + psnr[2]) / 8


def arguments(doc: str, frames: int, name: str) -> argparse.Namespace:
    """The command line of this script and of ``ten_bit_dual.py``: codecs, frames, clips, output;
    and ``../shared/tools`` on the path, for ``anchors``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codecs", nargs="+", choices=list(ENCODERS), default=list(ENCODERS))
    parser.add_argument("--frames", type=int, default=frames)
    parser.add_argument("--clips", nargs="+", default=CLIPS)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "experiments" / "results" / f"{name}.json")
    sys.path.insert(0, str(SHARED / "tools"))
    return parser.parse_args()


def main() -> int:
    args = arguments(__doc__, 16, "ten_bit_plain")
    from anchors import bd_rate  # independent of dualcodec

    results = {"frames": args.frames, "codecs": {}}
    for codec in args.codecs:
        rows = {}
        for clip in args.clips:
            frames = read_frames(SHARED / "data" / "video" / clip, args.frames)
            row = {depth: {"bytes": [], "psnr_yuv": []} for depth in (8, 10)}
            for qp in QPS[codec]:
                for depth in (8, 10):
                    size, quality = coded(frames, codec, qp, depth)
                    row[depth]["bytes"].append(size)
                    row[depth]["psnr_yuv"].append(quality)
            bd = bd_rate(row[8]["bytes"], row[8]["psnr_yuv"], row[10]["bytes"], row[10]["psnr_yuv"])
            rows[clip] = {"qps": QPS[codec], "8": row[8], "10": row[10], "bd_rate": bd}
            print(f"{codec} {clip}: 10 bits against 8, BD-rate {bd:+.2f}%", flush=True)
        mean = float(np.mean([r["bd_rate"] for r in rows.values()]))
        results["codecs"][codec] = {"clips": rows, "mean_bd_rate": mean}
        print(f"{codec}: mean {mean:+.2f}%", flush=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
