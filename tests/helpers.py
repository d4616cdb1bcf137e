"""Plain helper functions shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_CONFIG = {"up_width": 8, "side_width": 16, "down_width": 16}
TINY_LMBDA = 0.02  # the rate weight stored in the tiny model files


def shared_file(relative: str) -> Path:
    """A file of the shared data folder (../shared/data), or skip the test when it is absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared test data not available: {path} (expected ../shared/data beside the repo)")
    return path


def synthetic_frames(width: int, height: int, count: int = 3, seed: int = 0, noise: float = 3.0) -> list[np.ndarray]:
    """Smooth moving gradients plus a little noise: RGB uint8 ``[H, W, 3]`` frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    frames = []
    for i in range(count):
        r = 128 + 80 * np.sin(2 * np.pi * (1.2 * u + 0.3 * v + 0.05 * i))
        g = 128 + 80 * np.cos(2 * np.pi * (0.9 * v - 0.2 * u - 0.04 * i))
        b = 40 + 170 * (0.6 * u + 0.4 * v) + 5 * i
        frame = np.stack([r, g, b], axis=-1) + rng.normal(0.0, noise, (height, width, 3))
        frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
    return frames


def write_y4m(path: Path, frames: list[np.ndarray], rate: Fraction = Fraction(25)) -> Path:
    """Write RGB frames losslessly with dualcodec's own y4m writer."""
    from dualcodec.video import Y4MWriter

    height, width = frames[0].shape[:2]
    writer = Y4MWriter(path, width, height, rate)
    for frame in frames:
        writer.write(frame)
    writer.close()
    return Path(path)


def write_png(path: Path, frame: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(frame).save(path)
    return Path(path)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def build_tiny_model(seed: int = 0, perturb: bool = True):
    """A tiny DualLayerModel and its config.

    ``perturb`` gives the zero-initialised last layers of the side analysis and of the
    upsampler's kernel predictor small random weights, so the side stream carries
    non-zero latents and the upsampler is not plain bicubic (an untrained model would
    exercise neither).
    """
    import torch

    from dualcodec.config import ModelConfig
    from dualcodec.model import DualLayerModel

    torch.manual_seed(seed)
    config = ModelConfig(**TINY_CONFIG)
    model = DualLayerModel(config)
    if perturb:
        with torch.no_grad():
            model.g_a.body[-1].weight.normal_(0.0, 0.5)
            model.upsampler.head.weight.normal_(0.0, 0.02)
    return model, config


def make_av_clip(path: Path, width: int = 64, height: int = 48, frames: int = 5, rate: int = 25,
                 audio: bool = False, faststart: bool = False, matrix: int | None = None) -> Path:
    """A small H.264 MP4 (optionally with a mono AAC track) written with PyAV; ``matrix``:
    the H.273 colour matrix flagged in the stream (default: none, "unspecified")."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if matrix is not None:
            video.codec_context.colorspace = matrix
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for i, rgb in enumerate(synthetic_frames(width, height, frames, seed=1)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            t = np.arange(16000 * frames // rate) / 16000.0
            samples = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
            for start in range(0, len(samples), 1024):
                chunk = samples[start : start + 1024]
                af = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
                af.sample_rate, af.pts = 16000, start
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
    return Path(path)


def packet_spans(path: Path, kind: str) -> list[tuple[int, int]]:
    """(file offset, size) of every non-empty packet of the first stream of ``kind``."""
    import av

    with av.open(str(path)) as inp:
        stream = getattr(inp.streams, kind)[0]
        return [(p.pos, p.size) for p in inp.demux(stream) if p.size]


def run(capsys, *argv) -> tuple[int, str, str]:
    """``dualcodec ARGV`` in-process: exit status, stdout, stderr."""
    from dualcodec.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected_code: int = 1) -> str:
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dualcodec: error: ")
    assert "Traceback" not in err
    return lines[0]
