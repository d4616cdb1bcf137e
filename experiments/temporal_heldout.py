"""Held-out clips of the training videos, as y4m: does a temporal model pay on its own kind of content?

    python experiments/temporal_heldout.py [--frames runs_data/video_train_x2_seq] [--length 6] -o DIR

A temporal model validates on clips of held-out frames of its training videos (``[data]
val_clip`` frames from each validation frame, QP 32) and is scored on the shared clips
(QP 22-42). This writes, for each frame folder of ``--frames`` (a ``dualcodec frames``
output), the clip of ``--length`` frames that starts at its middle validation frame (the
frames :func:`dualcodec.data.split_sources` holds out with ``val_fraction`` 0.03 and
``val_gap`` 5, as ``experiments/temporal_x2.toml`` does: none of them trained), converted
to 4:2:0 by FFmpeg's swscale (PyAV's ``reformat``, BT.601 limited range, as ``ffmpeg
-pix_fmt yuv420p`` does), as ``DIR/<folder>.y4m``. Then ``dualcodec eval DIR/*.y4m`` scores
any model on them as the RD sweep scores the shared clips (README, *The multi-frame model*).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def heldout_clips(frames: Path, length: int, val_fraction: float = 0.03, val_gap: int = 5) -> dict[str, list[Path]]:
    """Each frame folder's clip of ``length`` frames from its middle validation frame."""
    from dualcodec.data import split_sources

    _, val = split_sources([frames], val_fraction, val_gap)
    clips = {}
    for folder in sorted({p.parent for p in val}):
        files = sorted(folder.glob("frame_*.png"))
        held = [p for p in val if p.parent == folder]
        start = files.index(held[len(held) // 2])
        if start + length > len(files):
            raise SystemExit(f"{folder.name}: fewer than {length} frames from its middle validation frame")
        clips[folder.name] = files[start:start + length]
    return clips


def write_y4m(files: list[Path], path: Path) -> None:
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = None
        for file in files:
            rgb = np.asarray(Image.open(file).convert("RGB"))
            if stream is None:
                stream = out.add_stream("rawvideo", rate=30)
                stream.width, stream.height, stream.pix_fmt = rgb.shape[1] & ~1, rgb.shape[0] & ~1, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:stream.height, :stream.width]), format="rgb24")
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=Path, default=ROOT / "runs_data" / "video_train_x2_seq")
    parser.add_argument("--length", type=int, default=6, help="frames a clip (default 6: the validation clip's)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.frames.is_dir():
        raise SystemExit(f"no frame folders at {args.frames} (dualcodec frames --downscale 2 --frames 360 "
                         "../shared/data/video_train/* -o runs_data/video_train_x2_seq)")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, files in heldout_clips(args.frames, args.length).items():
        write_y4m(files, args.out / f"{name}.y4m")
        print(f"{args.out / name}.y4m: {files[0].name} to {files[-1].name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
