"""(Re)create the golden files of the container-format stability test.

    .venv/bin/python tests/golden/make_golden.py       # version 1 files (kept as written)
    .venv/bin/python tests/golden/make_golden.py v2    # version 2 files, from golden_model.pt

writes, next to this script:

* ``golden_model.pt``   a tiny model (fixed seed, fixed config) saved with save_model;
* ``golden.mp4``        a version 1 dualcodec file: a fixed synthetic 45x37, 3-frame clip
                        coded with that model (H.264 QP 30, the command line's codec path);
* ``golden_frames.npy`` the decoded frames, uint8 ``[3, 37, 45, 3]``;
* ``golden_v2.mp4``, ``golden_v2_frames.npy``: the same clip and model in format version
  2, GOP 2 (a key frame at frames 1 and 3), and its decoded frames; it prints the md5 of
  the encoder's bitstream (base and side packets in file order) that the test pins.

The test (tests/test_container.py, "golden file") only reads these. Regenerate them
only on purpose, when the file format changes, and then bump the format version and
update the expected header in the test: old files must keep decoding or be refused.
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
VIDEO = HERE / "golden.mp4"
FRAMES = HERE / "golden_frames.npy"

WIDTH, HEIGHT, COUNT = 45, 37, 3  # odd on purpose: padded to 48x40, base layer 24x20
CONFIG = {"up_width": 8, "side_width": 16, "down_width": 16}
LMBDA = 0.002  # small: the briefly trained side stream is worth its bits
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


def model(frames: list[np.ndarray], steps: int = 150):
    """The tiny model, briefly trained on the clip itself with the real H.264 base layer.

    An untrained model has an empty side stream (its last analysis layer is zero) and
    random weights make the side stream useless, so the encoder would skip it; a short
    fit makes the side stream worth its bits and the file carries real latents.
    """
    from dualcodec.config import ModelConfig
    from dualcodec.model import DualLayerModel
    from dualcodec.proxy import RealCodecLayer

    torch.manual_seed(1234)
    config = ModelConfig(**CONFIG)
    net = DualLayerModel(config)
    # The clip, edge-padded to a multiple of 2 * scale as the encoder pads it.
    padded = [np.pad(f, ((0, (-HEIGHT) % 4), (0, (-WIDTH) % 4), (0, 0)), mode="edge") for f in frames]
    x = torch.from_numpy(np.stack(padded)).permute(0, 3, 1, 2).contiguous()
    base = RealCodecLayer("h264", "medium", QP)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        out = net(x, base)
        pixels = x.shape[0] * x.shape[2] * x.shape[3]
        loss = (out.x_hat - x.float() / 255).abs().mean() + LMBDA * out.side_bits.sum() / pixels
        optimizer.zero_grad()
        (loss + net.aux_loss()).backward()
        optimizer.step()
    net.eval()
    return net, config


def main() -> int:
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import decode, make_codec
    from dualcodec.container import ContainerReader
    from dualcodec.model import save_model
    from dualcodec.video import Y4MWriter

    torch.set_num_threads(1)
    net, config = model(clip())
    save_model(net, config, "golden", MODEL, LMBDA)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "golden.y4m"
        writer = Y4MWriter(source, WIDTH, HEIGHT, Fraction(25))
        for frame in clip():
            writer.write(frame)
        writer.close()
        codec = make_codec(BaseCodecSettings(codec="h264", qp=QP), None, str(MODEL), None)
        codec.encode(source, VIDEO)
    video = decode(VIDEO, str(MODEL))
    frames = np.stack(list(video.frames))
    np.save(FRAMES, frames)
    reader = ContainerReader(VIDEO)
    print("header:", reader.header.to_json())
    print("side modes:", [s.mode for s in reader.side_frames()])
    print("sizes:", reader.sizes())
    for path in (MODEL, VIDEO, FRAMES):
        print(f"{path.name}: {path.stat().st_size} bytes")
    return 0


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


def main_v2() -> int:
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
    sys.exit(main_v2() if sys.argv[1:] == ["v2"] else main())
