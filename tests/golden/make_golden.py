"""Create the version 2 golden files of the container-format stability test.

    .venv/bin/python tests/golden/make_golden.py

Next to this script lie:

* ``golden_model.pt``   a tiny model (fixed seed and config, briefly fitted to the clip
                        below so its side stream carries real latents), and
* ``golden.mp4``, ``golden_frames.npy``: a version 1 file of the clip and its decoded
  frames. These three were written by an earlier version of this script (see git
  history) and are never regenerated: old files must keep decoding.

This script writes, from ``golden_model.pt``:

* ``golden_v2.mp4``        the fixed synthetic 45x37, 3-frame clip in format version 2,
                           H.264 QP 30, GOP 2 (key frames at frames 1 and 3);
* ``golden_v2_frames.npy`` its decoded frames, uint8 ``[3, 37, 45, 3]``;

and prints the md5 of the encoder's bitstream (base and side packets in file order) that
tests/test_container.py pins. Regenerate only on purpose, when the format changes: then
bump the format version, keep this version's files for the reader, and update the test.
"""

from __future__ import annotations

import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
MODEL = HERE / "golden_model.pt"

WIDTH, HEIGHT = 45, 37  # 3 frames; odd on purpose: padded to 48x40, base layer 24x20
QP = 30


def clip() -> list[np.ndarray]:
    """Smooth gradients with fixed noise; frame 2 repeats frame 1, frame 3 moves."""
    rng = np.random.default_rng(20240601)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    u, v = xx / (WIDTH - 1), yy / (HEIGHT - 1)
    frames = []
    for phase in (0.0, 0.0, 0.15):
        r = 128 + 90 * np.sin(2 * np.pi * (1.3 * u + 0.4 * v + phase))
        g = 128 + 90 * np.cos(2 * np.pi * (1.1 * v - 0.3 * u - phase))
        b = 30 + 190 * (0.5 * u + 0.5 * v)
        frames.append(np.stack([r, g, b], axis=-1))
    noise = rng.normal(0.0, 4.0, (HEIGHT, WIDTH, 3))
    return [np.clip(np.round(f + noise), 0, 255).astype(np.uint8) for f in frames]


VIDEO_V2 = HERE / "golden_v2.mp4"
FRAMES_V2 = HERE / "golden_v2_frames.npy"
GOP_V2 = 2


def bitstream_md5(path: Path) -> str:
    """md5 of the base and side packets of a dualcodec file, in file order."""
    import hashlib

    import av

    digest = hashlib.md5()
    with av.open(str(path)) as inp:
        for packet in inp.demux():
            if packet.size and packet.stream.type in ("video", "data"):
                digest.update(bytes(packet))
    return digest.hexdigest()


def encode_v2(destination: Path) -> None:
    """The golden clip coded with the golden model in today's format (GOP 2)."""
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import make_codec
    from dualcodec.video import Y4MWriter

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "golden.y4m"
        writer = Y4MWriter(source, WIDTH, HEIGHT, Fraction(25))
        for frame in clip():
            writer.write(frame)
        writer.close()
        make_codec(BaseCodecSettings(codec="h264", qp=QP, gop=GOP_V2), None, str(MODEL), None).encode(source,
                                                                                                     destination)


def main() -> int:
    from dualcodec.codec import decode
    from dualcodec.container import ContainerReader

    torch.set_num_threads(1)
    encode_v2(VIDEO_V2)
    np.save(FRAMES_V2, np.stack(list(decode(VIDEO_V2, str(MODEL)).frames)))
    reader = ContainerReader(VIDEO_V2)
    print("header:", reader.header.to_json())
    print("side modes:", [s.mode.name for s in reader.side_frames()])
    print("bitstream md5:", bitstream_md5(VIDEO_V2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
