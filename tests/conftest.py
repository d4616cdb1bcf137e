"""Shared fixtures: a tiny model file, a small odd-sized clip and dualcodec files made from it.

Everything is synthetic and built once per session in a temporary folder; the real
clips of ../shared/data are used only by the tests that need real content (they skip
when the folder is absent).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import TINY_LMBDA, build_tiny_model, new_latents_every_frame, synthetic_frames, write_y4m


def pytest_configure(config):
    import torch

    # compressai scripts its entropy coder helpers with torch.jit, which torch now flags.
    config.addinivalue_line("filterwarnings", r"ignore:.*torch\.jit\.script.*:FutureWarning")
    # The tests run tiny tensors: one thread is fastest, and on a loaded machine extra
    # threads spin against the other processes (30x slower on 2 busy cores).
    torch.set_num_threads(1)
    # Traced decoder graphs go to a folder of the test session, not the user's cache.
    os.environ["DUALCODEC_CACHE"] = tempfile.mkdtemp(prefix="dualcodec-cache-")


CLIP_SIZE = (37, 29)  # odd on purpose: the codec pads and crops
CLIP_FRAMES = 3


@dataclass(frozen=True)
class ModelFile:
    path: Path
    fingerprint: str
    name: str


@dataclass(frozen=True)
class Clip:
    path: Path
    frames: list  # dualcodec.basecodec.Planes, 4:2:0 8-bit

    @property
    def width(self) -> int:
        return self.frames[0].width

    @property
    def height(self) -> int:
        return self.frames[0].height


@dataclass(frozen=True)
class Encoded:
    path: Path
    report: object
    clip: Clip


def _saved_tiny_model(tmp_path_factory, seed: int, name: str, up_form: str = "mixture", **config) -> ModelFile:
    from dualcodec.model import save_model

    model, config = build_tiny_model(seed=seed, up_form=up_form, **config)
    path = tmp_path_factory.mktemp("models") / f"{name}.pt"
    fingerprint = save_model(model, config, name, path, lmbda=TINY_LMBDA)
    return ModelFile(path, fingerprint, name)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> ModelFile:
    """A tiny 2x model file with a side stream that carries non-zero latents."""
    return _saved_tiny_model(tmp_path_factory, seed=0, name="tiny")


@pytest.fixture(scope="session")
def folded_model(tmp_path_factory) -> ModelFile:
    """The tiny model with the folded upsampler (``model.up_form = "folded"``)."""
    return _saved_tiny_model(tmp_path_factory, seed=0, name="folded", up_form="folded")


@pytest.fixture(scope="session")
def level_model(tmp_path_factory) -> ModelFile:
    """A tiny scale-1 post-filter without a side stream whose upsampler reads the quantiser
    level (``model.level_input``)."""
    return _saved_tiny_model(tmp_path_factory, seed=0, name="level", up_form="folded", scale=1,
                             side_stream=False, level_input=True)


@pytest.fixture(scope="session")
def temporal_model(tmp_path_factory) -> ModelFile:
    """A tiny 2x folded model without a side stream whose upsampler keeps the previous
    frame (``model.temporal``), its memory part non-zero."""
    return _saved_tiny_model(tmp_path_factory, seed=0, name="temporal", up_form="folded", side_stream=False,
                             temporal=True)


@pytest.fixture(scope="session")
def other_model(tmp_path_factory) -> ModelFile:
    """A second tiny model (different weights, same architecture): the wrong model for a file."""
    return _saved_tiny_model(tmp_path_factory, seed=1, name="other")


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Clip:
    """3 frames of 37x29 synthetic 4:2:0 video as a y4m."""
    frames = synthetic_frames(*CLIP_SIZE, count=CLIP_FRAMES, seed=0)
    path = write_y4m(tmp_path_factory.mktemp("clip") / "clip.y4m", frames)
    return Clip(path, frames)


def _encode(clip: Clip, layers, destination: Path, **settings) -> Encoded:
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec

    report = LayeredCodec(layers, BaseCodecSettings(**settings)).encode(clip.path, destination)
    return Encoded(destination, report, clip)


@pytest.fixture(scope="session")
def dual_file(tmp_path_factory, clip, tiny_model) -> Encoded:
    """The clip coded in dual mode with the tiny model (H.264, QP 30), a NEW side packet with
    every block enhanced in every frame (side level 30). Read-only: copy it to modify it."""
    from dualcodec.model import load_model

    layers = new_latents_every_frame(load_model(str(tiny_model.path)), level=30)
    return _encode(clip, layers, tmp_path_factory.mktemp("dual") / "dual.mp4", codec="h264", qp=30)


@pytest.fixture(scope="session")
def bicubic_file(tmp_path_factory, clip) -> Encoded:
    """The clip coded with the bicubic baseline (H.264, QP 30). Read-only: copy to modify."""
    from dualcodec.codec import BicubicLayers

    return _encode(clip, BicubicLayers(2), tmp_path_factory.mktemp("bicubic") / "bicubic.mp4", codec="h264", qp=30)


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The shipped default model, or skip (it is produced by a long training run) while it
    is missing or of an older model format than this dualcodec reads (the retrained model is
    not shipped yet; any other problem with the file fails the tests that use it)."""
    import torch

    from dualcodec.model import BUILTIN_DIR, MODEL_VERSION, OLD_MODELS

    path = BUILTIN_DIR / "default.pt"
    if not path.is_file():
        pytest.skip(f"built-in default model not shipped yet ({path} is missing)")
    version = torch.load(path, map_location="cpu", weights_only=True).get("version")
    if version in OLD_MODELS:
        pytest.skip(f"built-in default model {path} is of model format {version}, this dualcodec reads "
                    f"{MODEL_VERSION}: not retrained yet")
    return path
