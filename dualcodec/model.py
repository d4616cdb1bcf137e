"""The dual-layer model: training forward pass, real side-stream bytes, model files.

Data flow (``s`` = scale, ``Q`` = the base layer, real or proxy)::

    x (uint8) --/255--> x_f --Downsampler--> x_lr --Q--> x_lr_hat ---------------------+
                          \\                                 |                          |
                           +-------------------------------g_a--> y --EntropyBottleneck |
                                                                       |               |
                                                         y_hat --g_s--> s_feat          |
                                                                       |               v
                                                     SpatiallyVaryingUpsampler(x_lr_hat, s_feat) --> x_hat

Three verbs, as in CompressAI: :meth:`forward` for training (likelihoods, no bytes),
:meth:`compress_side` / :meth:`decompress_side` for real entropy-coded bytes, and
``update()`` (inherited) to build the coding tables before compressing.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.models import CompressionModel

from dualcodec.config import ModelConfig, model_config_from_dict
from dualcodec.errors import DualcodecError
from dualcodec.nets.common import bicubic_down, pad_to_multiple
from dualcodec.nets.downsampler import LearnedDownsampler
from dualcodec.nets.side import STRIDE, SideAnalysis, SideSynthesis
from dualcodec.nets.upsampler import SpatiallyVaryingUpsampler

MODEL_FORMAT = "dualcodec-model"
MODEL_VERSION = 1
BUILTIN_DIR = Path(__file__).parent / "models"


@dataclass
class BaseLayerOutput:
    """What the base layer returns in training: decoded frame and its bits per frame."""

    x_lr_hat: torch.Tensor  # [B,3,h,w] in [0,1]
    bits: torch.Tensor  # [B]; differentiable with respect to x_lr where the layer allows it


@dataclass
class ForwardOutput:
    x_hat: torch.Tensor  # [B,3,H,W], not clamped
    x_lr: torch.Tensor  # [B,3,h,w]
    x_lr_hat: torch.Tensor
    side_bits: torch.Tensor  # [B]
    base_bits: torch.Tensor  # [B]


class DualLayerModel(CompressionModel):
    """Learned downsampler, side stream and spatially varying upsampler (see module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.scale = config.scale
        self.side_channels = config.side_channels
        self.downsampler = (
            LearnedDownsampler(config.scale, config.down_width, config.down_depth, config.down_bound)
            if config.downsampler == "learned"
            else None
        )
        if config.side_stream:
            self.g_a = SideAnalysis(config.scale, config.latent_channels, config.side_width)
            self.g_s = SideSynthesis(config.latent_channels, config.side_channels, config.side_width)
            # A narrow initial density: the side stream starts nearly free and earns its bits.
            self.entropy_bottleneck = EntropyBottleneck(config.latent_channels, init_scale=1.0)
        else:
            self.g_a = self.g_s = self.entropy_bottleneck = None
        self.upsampler = SpatiallyVaryingUpsampler(
            config.scale,
            config.side_channels,
            config.up_width,
            config.up_depth,
            config.num_filters,
            config.taps,
            config.up_residual,
        )

    @property
    def has_side_stream(self) -> bool:
        return self.entropy_bottleneck is not None

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` uint8 ``[B,3,H,W]`` (H, W divisible by 2*scale) to ``x_lr`` in about [0,1]."""
        x_f = x.float() / 255.0
        if self.downsampler is None:
            return bicubic_down(x_f, self.scale)
        return self.downsampler(x_f)

    def _analysis(self, x: torch.Tensor, x_lr_hat: torch.Tensor) -> torch.Tensor:
        x_lr_pad = pad_to_multiple(x_lr_hat, STRIDE)
        x_pad = pad_to_multiple(x.float() / 255.0, STRIDE * self.scale)
        return self.g_a(x_pad, x_lr_pad)

    def _side_features(self, y_hat: torch.Tensor | None, x_lr_hat: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x_lr_hat.shape
        if y_hat is None:
            return x_lr_hat.new_zeros(b, self.side_channels, h, w)
        return self.g_s(y_hat)[..., :h, :w]

    def upsample(self, x_lr_hat: torch.Tensor, y_hat: torch.Tensor | None) -> torch.Tensor:
        """Decoded base frame and decoded latents to ``x_hat`` ``[B,3,sh,sw]`` (not clamped)."""
        return self.upsampler(x_lr_hat, self._side_features(y_hat, x_lr_hat))

    def forward(self, x: torch.Tensor, base_layer: Callable[[torch.Tensor], BaseLayerOutput]) -> ForwardOutput:
        """Training pass. ``base_layer`` carries ``x_lr`` through the (real or proxy) base codec."""
        x_lr = self.downsample(x)
        base = base_layer(x_lr)
        if self.has_side_stream:
            y = self._analysis(x, base.x_lr_hat)
            # Under bf16/fp16 autocast the entropy model still quantises and computes
            # likelihoods in fp32: its CDFs must match the coder's bit for bit.
            with torch.autocast(y.device.type, enabled=False):
                y_hat, likelihoods = self.entropy_bottleneck(y.float())
            side_bits = -torch.log2(likelihoods.float()).sum(dim=(1, 2, 3))
        else:
            y_hat, side_bits = None, x.new_zeros(x.shape[0], dtype=torch.float32)
        x_hat = self.upsample(base.x_lr_hat, y_hat)
        return ForwardOutput(x_hat, x_lr, base.x_lr_hat, side_bits, base.bits)

    def latent_size(self, lr_height: int, lr_width: int) -> tuple[int, int]:
        return -(-lr_height // STRIDE), -(-lr_width // STRIDE)

    @torch.no_grad()
    def compress_side(self, x: torch.Tensor, x_lr_hat: torch.Tensor) -> list[bytes]:
        """Entropy-coded side stream, one byte string per frame of the batch."""
        return self.entropy_bottleneck.compress(self._analysis(x, x_lr_hat))

    @torch.no_grad()
    def skip_latents(self, lr_height: int, lr_width: int) -> torch.Tensor:
        """Every latent at its most probable value: the entropy model's per-channel median."""
        medians = self.entropy_bottleneck.quantiles[:, 0, 1].detach()
        return medians.view(1, -1, 1, 1).expand(1, -1, *self.latent_size(lr_height, lr_width)).contiguous()

    @torch.no_grad()
    def decompress_side(self, strings: list[bytes], lr_height: int, lr_width: int) -> torch.Tensor:
        """Byte strings back to the latents ``y_hat``."""
        return self.entropy_bottleneck.decompress(strings, self.latent_size(lr_height, lr_width))


# -- model files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    model: DualLayerModel
    name: str
    fingerprint: str
    config: ModelConfig
    path: Path
    lmbda: float  # the rate weight it was trained with (L1 per bit per pixel at QP 32)


def _fingerprint(config: dict, state_dict: dict[str, torch.Tensor]) -> str:
    """Hash of the config *as stored* (so new defaults never change old fingerprints) and weights."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def lmbda_at(lmbda: float, qp: float) -> float:
    """Rate weight at a QP: it follows the quantiser step, ``2 ** ((qp - 32) / 6)``."""
    return lmbda * 2.0 ** ((qp - 32) / 6.0)


def save_model(model: DualLayerModel, config: ModelConfig, name: str, path: Path, lmbda: float) -> str:
    """Write a self-describing model file (config, weights with coding tables, fingerprint,
    and the rate weight ``lmbda`` it was trained with, which the encoder's mode decisions use)."""
    if model.has_side_stream:
        model.update(force=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fingerprint = _fingerprint(asdict(config), state)
    payload = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "name": name,
        "config": asdict(config),
        "state_dict": state,
        "fingerprint": fingerprint,
        "lmbda": float(lmbda),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return fingerprint


def resolve_model_path(name_or_path: str) -> Path:
    """A built-in model name (``default``) or a path to a model file."""
    builtin = BUILTIN_DIR / f"{name_or_path}.pt"
    if builtin.is_file():
        return builtin
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = sorted(p.stem for p in BUILTIN_DIR.glob("*.pt"))
    raise DualcodecError(f"no model named or at {name_or_path!r} (built-in: {', '.join(names) or 'none'})")


def load_model(name_or_path: str) -> LoadedModel:
    """Load and verify a model file; the model is in eval mode with coding tables ready."""
    path = resolve_model_path(name_or_path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise DualcodecError(f"cannot read model file {path}: {exc.__class__.__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise DualcodecError(f"{path} is not a dualcodec model file")
    if payload.get("version") != MODEL_VERSION:
        raise DualcodecError(f"{path} has model format version {payload.get('version')}, this dualcodec reads {MODEL_VERSION}")
    config = model_config_from_dict(payload["config"])
    state = payload["state_dict"]
    if _fingerprint(payload["config"], state) != payload["fingerprint"]:
        raise DualcodecError(f"{path} is damaged: its weights do not match its fingerprint")
    model = DualLayerModel(config)
    model.load_state_dict(state)  # CompressionModel's version resizes the coding-table buffers
    model.eval()
    return LoadedModel(model, payload["name"], payload["fingerprint"], config, path, float(payload["lmbda"]))
