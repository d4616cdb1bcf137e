"""Create the version 3 golden files of the container-format stability test.

    .venv/bin/python tests/golden/make_golden.py

Next to this script lie, written by earlier versions of it (see git history) and never
regenerated:

* ``golden.mp4``: a version 1 dual file of the clip below. Its learned layers worked in
  R'G'B': today's reader reads its header and streams and refuses to decode it.
* ``golden_v2.mp4``: a version 2 dual file of the clip below (GOP 2). Its side stream was a
  factorised latent (model format 2): today's reader reads its header and streams and
  refuses to decode it.

The script writes:

* ``golden_model.pt``      a tiny model (fixed seed and config, briefly fitted to the clip
                           below with the real H.264 base layer, so its enhancement layer
                           carries real latents), trained and written only when the file is
                           missing or is not a model of today's format (model format 1 worked
                           in R'G'B', 2 had the factorised side latent); otherwise reused;
* ``golden_v3.mp4``        the fixed synthetic 45x37, 3-frame clip in format version 3,
                           H.264 QP 30 (side level 30), GOP 2 (key frames at frames 1 and 3);
* ``golden_v3_frames.npz`` its decoded frames: ``y`` uint8 ``[3, 37, 45]``, ``u`` and
                           ``v`` uint8 ``[3, 19, 23]``;

and prints the model's fingerprint and the md5 of the encoder's bitstream (base and side
packets in file order) that tests/test_container.py pins. Regenerate only on purpose,
when the format changes: then bump the format version, keep this version's file for the
reader, and update the test.
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
CONFIG = {"up_width": 8, "side_width": 16, "down_width": 16}
LMBDA = 0.002  # small: the briefly trained side stream is worth its bits
QP = 30


def clip_rgb() -> list[np.ndarray]:
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


def clip():
    """The clip as 4:2:0 planes, as ``ffmpeg -pix_fmt yuv420p`` converts it (swscale's
    defaults: BT.601, limited range), and their format."""
    import av

    from dualcodec.basecodec import planes_from_frame
    from dualcodec.yuv import YUVFormat

    frames = [planes_from_frame(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", threads=1))
              for rgb in clip_rgb()]
    return frames, YUVFormat(bit_depth=8, full_range=False, matrix=6)


def model(steps: int = 150):
    """The tiny model, briefly trained on the clip itself with the real H.264 base layer.

    An untrained model's enhancement layer changes nothing (the synthesis's residual and the
    upsampler's kernel predictor start at zero), so the encoder would skip every block; a
    short fit makes the side stream worth its bits and the file carries real latents.
    """
    from dualcodec.basecodec import planes_to_tensors
    from dualcodec.config import ModelConfig
    from dualcodec.model import DualLayerModel, plane_distortion
    from dualcodec.proxy import RealCodecLayer
    from dualcodec.video import pad_planes
    from dualcodec.yuv import planes_to_unit

    torch.manual_seed(1234)
    config = ModelConfig(**CONFIG)
    net = DualLayerModel(config)
    frames, fmt = clip()
    # The clip, edge-padded to a multiple of 2 * scale as the encoder pads it.
    m = 2 * config.scale
    padded = [pad_planes(p, WIDTH + (-WIDTH) % m, HEIGHT + (-HEIGHT) % m) for p in frames]
    y, uv = planes_to_unit(*planes_to_tensors(padded), fmt)
    base = RealCodecLayer("h264", "medium", QP)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        out = net(y, uv, base, QP, fmt)
        pixels = y.shape[0] * y.shape[2] * y.shape[3]
        loss = plane_distortion(out.y_hat, out.uv_hat, y, uv, "l1") + LMBDA * out.side_bits.sum() / pixels
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    return net, config


def ensure_model() -> str:
    """The golden model's fingerprint, training and saving it first when it is missing
    or not of today's model format."""
    from dualcodec.errors import DualcodecError
    from dualcodec.model import load_model, save_model

    try:
        return load_model(str(MODEL)).fingerprint
    except (DualcodecError, FileNotFoundError) as exc:
        print(f"training {MODEL.name}: {exc}")
    net, config = model()
    return save_model(net, config, "golden", MODEL, LMBDA)


VIDEO = HERE / "golden_v3.mp4"
FRAMES = HERE / "golden_v3_frames.npz"
GOP = 2


def bitstream_md5(path: Path) -> str:
    """md5 of the base and side packets of a dualcodec file, in file order, less the NAL
    unit that holds x264's banner: the encoder drops it since golden_v3.mp4 was written
    (``dualcodec.basecodec.X264_BANNER_UUID``), which changed no other byte."""
    import hashlib

    import av

    sys.path.insert(0, str(HERE.parent))
    from helpers import without_banner_units

    digest = hashlib.md5()
    with av.open(str(path)) as inp:
        for packet in inp.demux():
            if packet.size and packet.stream.type in ("video", "data"):
                data = bytes(packet)
                digest.update(without_banner_units(data) if packet.stream.type == "video" else data)
    return digest.hexdigest()


def encode(destination: Path, rule: str = "l1", threads: int | None = None) -> None:
    """The golden clip coded with the golden model in today's format (GOP 2). ``rule``: the
    encoder's side-stream choices; ``"l1"`` is the rule ``golden_v3.mp4`` was made with
    (L1 at the trained rate weight, the predicted frames' at SIDE_WEIGHT times it),
    ``"default"`` today's encoder (:func:`dualcodec.codec.make_codec`). ``threads``: the
    runtime's threads (``None``: its own choice)."""
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec, ModelLayers, make_codec
    from dualcodec.model import lmbda_at, load_model
    from dualcodec.sidestream import SIDE_WEIGHT
    from dualcodec.video import Y4MWriter

    frames, fmt = clip()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "golden.y4m"
        writer = Y4MWriter(source, WIDTH, HEIGHT, Fraction(25), fmt)
        for planes in frames:
            writer.write(planes)
        writer.close()
        settings = BaseCodecSettings(codec="h264", qp=QP, gop=GOP)
        if rule == "default":
            codec = make_codec(settings, None, str(MODEL), 2, threads=threads)
        else:
            loaded = load_model(str(MODEL))
            codec = LayeredCodec(ModelLayers(loaded, lmbda_at(loaded.lmbda, QP), level=QP, inter_weight=SIDE_WEIGHT,
                                             metric="l1", threads=threads), settings)
        codec.encode(source, destination)


def main() -> int:
    from dualcodec.codec import decode
    from dualcodec.container import ContainerReader

    torch.set_num_threads(1)
    fingerprint = ensure_model()
    encode(VIDEO)
    frames = list(decode(VIDEO, str(MODEL)).frames)
    np.savez(FRAMES, **{name: np.stack([getattr(p, name) for p in frames]) for name in "yuv"})
    reader = ContainerReader(VIDEO)
    print("header:", reader.header.to_json())
    print("side modes:", [s.mode.name for s in reader.side_frames()])
    print("model fingerprint:", fingerprint)
    print("bitstream md5:", bitstream_md5(VIDEO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
