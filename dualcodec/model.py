"""The dual-layer model: training forward pass, real side-stream bytes, model files.

The model works on 4:2:0 planes on the unit scale of :func:`dualcodec.yuv.planes_to_unit`:
``y`` ``[B,1,H,W]`` and ``uv`` ``[B,2,H/2,W/2]``. Data flow (``s`` = scale, ``Q`` = the
base layer, real or proxy)::

    y, uv --Downsampler--> y_lr, uv_lr --Q--> y_lr_hat, uv_lr_hat --------------------------+
      \\                                             |                                       |
       +-------------------------------------------g_a--> w --EntropyBottleneck              |
                                                                   |                         |
                                                     w_hat --g_s--> s_feat                   |
                                                                   |                         v
                                      SpatiallyVaryingUpsampler(y_lr_hat, uv_lr_hat, s_feat) --> y_hat, uv_hat

The downsampler is bicubic per plane (or bicubic plus a learned residual); ``g_a`` and
the upsampler see the three channels together, chroma brought to luma's grid
(:func:`dualcodec.nets.common.to_444`), and the upsampler's chroma output goes back to
4:2:0 (:func:`~dualcodec.nets.common.from_444`).

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
from dualcodec.nets.common import bicubic_down, from_444, pad_to_multiple, to_444
from dualcodec.nets.downsampler import LearnedDownsampler
from dualcodec.nets.side import STRIDE, SideAnalysis, SideSynthesis
from dualcodec.nets.upsampler import SpatiallyVaryingUpsampler

MODEL_FORMAT = "dualcodec-model"
MODEL_VERSION = 2  # 2: the networks take and return 4:2:0 planes (1: R'G'B', no longer read)
BUILTIN_DIR = Path(__file__).parent / "models"


@dataclass
class BaseLayerOutput:
    """What the base layer returns in training: the decoded planes and bits per frame."""

    y_lr_hat: torch.Tensor  # [B,1,h,w], unit scale
    uv_lr_hat: torch.Tensor  # [B,2,h/2,w/2]
    bits: torch.Tensor  # [B]; differentiable with respect to the planes where the layer allows it


@dataclass
class ForwardOutput:
    y_hat: torch.Tensor  # [B,1,H,W], not clamped
    uv_hat: torch.Tensor  # [B,2,H/2,W/2]
    y_lr: torch.Tensor
    uv_lr: torch.Tensor
    side_bits: torch.Tensor  # [B]
    base_bits: torch.Tensor  # [B]


def plane_distortion(y_hat: torch.Tensor, uv_hat: torch.Tensor, y: torch.Tensor, uv: torch.Tensor,
                     kind: str = "l1") -> torch.Tensor:
    """``(6 D(Y) + D(Cb) + D(Cr)) / 8``, each the mean L1 (``kind="l1"``) or squared error on
    the unit scale: the weighting of PSNR-YUV, for the training loss and the encoder's choices."""
    def mean_error(a, b):
        return (a - b).abs().mean() if kind == "l1" else ((a - b) ** 2).mean()

    return (6.0 * mean_error(y_hat, y) + 2.0 * mean_error(uv_hat, uv)) / 8.0


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

    def downsample(self, y: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Planes (H, W divisible by 2*scale) to the base layer's planes, unit scale, unrounded."""
        if self.downsampler is None:
            return bicubic_down(y, self.scale), bicubic_down(uv, self.scale)
        return self.downsampler(y, uv)

    def _analysis(self, y, uv, y_lr_hat, uv_lr_hat) -> torch.Tensor:
        x_lr_pad = pad_to_multiple(to_444(y_lr_hat, uv_lr_hat), STRIDE)
        x_pad = pad_to_multiple(to_444(y, uv), STRIDE * self.scale)
        return self.g_a(x_pad, x_lr_pad)

    def _side_features(self, w_hat: torch.Tensor | None, x_lr_hat: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x_lr_hat.shape
        if w_hat is None:
            return x_lr_hat.new_zeros(b, self.side_channels, h, w)
        return self.g_s(w_hat)[..., :h, :w]

    def upsample(self, y_lr_hat: torch.Tensor, uv_lr_hat: torch.Tensor,
                 w_hat: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded base planes and decoded latents ``w_hat`` to ``(y_hat, uv_hat)`` at full size (not clamped)."""
        x_lr_hat = to_444(y_lr_hat, uv_lr_hat)
        return from_444(self.upsampler(x_lr_hat, self._side_features(w_hat, x_lr_hat)))

    def forward(self, y: torch.Tensor, uv: torch.Tensor,
                base_layer: Callable[[torch.Tensor, torch.Tensor], BaseLayerOutput]) -> ForwardOutput:
        """Training pass. ``base_layer`` carries the downsampled planes through the (real or proxy) base codec."""
        y_lr, uv_lr = self.downsample(y, uv)
        base = base_layer(y_lr, uv_lr)
        if self.has_side_stream:
            w = self._analysis(y, uv, base.y_lr_hat, base.uv_lr_hat)
            # Under bf16/fp16 autocast the entropy model still quantises and computes
            # likelihoods in fp32: its CDFs must match the coder's bit for bit.
            with torch.autocast(w.device.type, enabled=False):
                w_hat, likelihoods = self.entropy_bottleneck(w.float())
            side_bits = -torch.log2(likelihoods.float()).sum(dim=(1, 2, 3))
        else:
            w_hat, side_bits = None, y.new_zeros(y.shape[0], dtype=torch.float32)
        y_hat, uv_hat = self.upsample(base.y_lr_hat, base.uv_lr_hat, w_hat)
        return ForwardOutput(y_hat, uv_hat, y_lr, uv_lr, side_bits, base.bits)

    def latent_size(self, lr_height: int, lr_width: int) -> tuple[int, int]:
        return -(-lr_height // STRIDE), -(-lr_width // STRIDE)

    @torch.no_grad()
    def compress_side(self, y, uv, y_lr_hat, uv_lr_hat) -> list[bytes]:
        """Entropy-coded side stream, one byte string per frame of the batch."""
        return self.entropy_bottleneck.compress(self._analysis(y, uv, y_lr_hat, uv_lr_hat))

    @torch.no_grad()
    def skip_latents(self, lr_height: int, lr_width: int) -> torch.Tensor:
        """Every latent at its most probable value: the entropy model's per-channel median."""
        medians = self.entropy_bottleneck.quantiles[:, 0, 1].detach()
        return medians.view(1, -1, 1, 1).expand(1, -1, *self.latent_size(lr_height, lr_width)).contiguous()

    @torch.no_grad()
    def decompress_side(self, strings: list[bytes], lr_height: int, lr_width: int) -> torch.Tensor:
        """Byte strings back to the latents ``w_hat``."""
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
    if payload.get("version") == 1:
        raise DualcodecError(f"{path} is a model of format version 1, whose networks work in R'G'B'; this dualcodec "
                             f"codes 4:2:0 planes (model format {MODEL_VERSION}): retrain it with dualcodec train")
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
