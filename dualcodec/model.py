"""The dual-layer model: training forward pass, real side-stream bytes, model files.

The model works on 4:2:0 planes on the unit scale of :func:`dualcodec.yuv.planes_to_unit`:
``y`` ``[B,1,H,W]`` and ``uv`` ``[B,2,H/2,W/2]``. Data flow (``s`` = scale, ``Q`` = the
base layer, real or proxy; ``x`` the planes seen together, chroma on luma's grid)::

    y, uv --Downsampler--> y_lr, uv_lr --Q--> y_lr_hat, uv_lr_hat = x_lr_hat ------------------+
      \\                                             |                                             |
       +----x, x - bicubic_up(x_lr_hat), x_lr_hat --g_a--> w --LatentCoder (classes of x_lr_hat)    |
                                                                |                                   |
                                                  w_hat --g_s--> s_feat                             |
                                                                |                                   v
                            SpatiallyVaryingUpsampler(y_lr_hat, uv_lr_hat, s_feat) = filters + detail --> y_hat, uv_hat
                            (or FoldedUpsampler, the same on the 4:2:0 planes' common grid)

A temporal model (``model.temporal``) upsamples each frame after the previous frame of
its GOP: :class:`~dualcodec.nets.upsampler.Memory` (that frame's decoded base and output)
enters the upsampler, aligned by motion at low resolution; :meth:`forward_clips` trains
it on clips, frame after frame.

The side stream is an enhancement layer: ``g_a`` codes the residual against the
upsampled base, conditioned on the base (:mod:`dualcodec.nets.side`), the latent coder's
densities are conditioned on the decoded base through integer activity classes
(:mod:`dualcodec.entropy`), and ``s_feat`` steers the upsampler's per-pixel filters and
its per-pixel detail term, the residual added on the upsampled base. Scale 1 is the
same model on a full-resolution base: a learned, side-informed post-filter.

The downsampler is bicubic per plane (or bicubic plus a learned residual); ``g_a`` and
the mixture-form upsampler see the three channels together, chroma brought to luma's grid
(:func:`dualcodec.nets.common.to_444`), the folded form sees luma folded to chroma's
grid; the upsampler returns 4:2:0 planes.

Verbs: :meth:`forward` for training (bits from likelihoods; clips through
:meth:`forward_clips`), :meth:`analyse`,
:meth:`side_classes` and :attr:`latent_coder` for the real side stream
(:class:`dualcodec.codec.ModelLayers` makes the per-block choices), :meth:`upsample` at
the decoder, and :meth:`update` to build the coding tables before saving.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dualcodec.config import ModelConfig, model_config_from_dict
from dualcodec.entropy import LatentCoder, activity_classes
from dualcodec.errors import DualcodecError
from dualcodec.nets.common import bicubic_down, bicubic_up_folded, pad_to_multiple, to_444, to_444_folded
from dualcodec.nets.downsampler import LearnedDownsampler
from dualcodec.nets.side import SideAnalysis, SideSynthesis
from dualcodec.nets.upsampler import Ahead, FoldedUpsampler, Memory, SideInputs, SpatiallyVaryingUpsampler
from dualcodec.yuv import YUVFormat, unit_to_planes

MODEL_FORMAT = "dualcodec-model"
MODEL_VERSION = 3  # 3: enhancement-layer side stream; 2: factorised side latents; 1: R'G'B' (neither read)
OLD_MODELS = {1: "whose networks work in R'G'B'", 2: "whose side stream is a factorised latent, not an enhancement layer"}
BUILTIN_DIR = Path(__file__).parent / "models"
Y_WEIGHT, UV_WEIGHT = 6.0, 2.0  # PSNR-YUV's 6:1:1, the two chroma planes together


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
    y_skip: torch.Tensor | None = None  # every block skipped (the upsampler alone), where the pass computed it
    uv_skip: torch.Tensor | None = None
    # a temporal model on clips: the mean alignment error of its motion (FRVSR's loss;
    # FoldedUpsampler.alignment_error) over the frames after the first
    alignment: torch.Tensor | None = None


def _error(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    return (a - b).abs() if kind == "l1" else (a - b) ** 2


def plane_distortion(y_hat: torch.Tensor, uv_hat: torch.Tensor, y: torch.Tensor, uv: torch.Tensor,
                     kind: str = "l1") -> torch.Tensor:
    """``(6 D(Y) + D(Cb) + D(Cr)) / 8``, each the mean L1 (``kind="l1"``) or squared error on
    the unit scale: the weighting of PSNR-YUV, for the training loss and the encoder's choices."""
    return (Y_WEIGHT * _error(y_hat, y, kind).mean() + UV_WEIGHT * _error(uv_hat, uv, kind).mean()) / 8.0


def block_distortion(y_hat: torch.Tensor, uv_hat: torch.Tensor, y: torch.Tensor, uv: torch.Tensor,
                     block: int) -> torch.Tensor:
    """Each ``block x block`` luma block's share of its frame's :func:`plane_distortion`
    (L1), ``[B, hb, wb]``: a frame's blocks add up to that frame's distortion."""
    def sums(error: torch.Tensor, size: int) -> torch.Tensor:
        h, w = error.shape[-2:]
        count = error[0].numel()
        error = F.pad(error, (0, (-w) % size, 0, (-h) % size))
        return F.avg_pool2d(error, size, divisor_override=1).sum(dim=1) / count

    ey, euv = _error(y_hat, y, "l1"), _error(uv_hat, uv, "l1")
    return (Y_WEIGHT * sums(ey, block) + UV_WEIGHT * sums(euv, block // 2)) / 8.0


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Bits per flag of a flag set with probability ``p``."""
    p = p.clamp(1 / 256, 255 / 256)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


class DualLayerModel(nn.Module):
    """Learned downsampler, enhancement-layer side stream and spatially varying upsampler
    (see module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.scale = config.scale
        self.side_channels = config.side_channels
        self.side_stride = config.side_stride
        self.downsampler = (
            LearnedDownsampler(config.scale, config.down_width, config.down_depth, config.down_bound)
            if config.downsampler == "learned" and config.scale > 1
            else None
        )
        if config.side_stream:
            self.g_a = SideAnalysis(config.scale, config.latent_channels, config.side_width, config.side_stride)
            self.g_s = SideSynthesis(config.latent_channels, config.side_channels, config.side_width,
                                     config.side_stride, 3 * config.scale ** 2 if config.side_residual else 0)
            self.latent_coder = LatentCoder(config.latent_channels)
        else:
            self.g_a = self.g_s = self.latent_coder = None
        side_channels = config.side_channels if config.side_stream else 0
        if config.up_form == "folded":
            self.upsampler = FoldedUpsampler(config.scale, side_channels, config.up_width, config.up_depth,
                                             config.num_filters, config.taps, config.up_residual, config.level_input,
                                             config.temporal, config.temporal_width, config.temporal_depth,
                                             config.temporal_ahead)
        else:
            self.upsampler = SpatiallyVaryingUpsampler(config.scale, side_channels, config.up_width, config.up_depth,
                                                       config.num_filters, config.taps, config.up_residual,
                                                       config.up_chroma)

    @property
    def has_side_stream(self) -> bool:
        return self.latent_coder is not None

    @property
    def temporal(self) -> bool:
        """Whether the upsampler takes the previous frame's :class:`~dualcodec.nets.upsampler.Memory`."""
        return getattr(self.upsampler, "temporal", False)

    @property
    def reads_ahead(self) -> bool:
        """Whether the upsampler also takes the next frame's base (``model.temporal_ahead``)."""
        return getattr(self.upsampler, "ahead", False)

    def is_temporal_parameter(self, name: str) -> bool:
        """Whether the parameter (or state entry) ``name`` belongs to the upsampler's temporal
        part, which a per-frame model lacks."""
        return name.startswith("upsampler.memory_")

    @property
    def takes_level(self) -> bool:
        """Whether the upsampler takes the base layer's quantiser level (``model.level_input``)."""
        return getattr(self.upsampler, "level_bias", None) is not None

    def update(self) -> None:
        """Build the side stream's coding tables (before saving; see :mod:`dualcodec.entropy`)."""
        if self.has_side_stream:
            self.latent_coder.update()

    def downsample(self, y: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Planes (H, W divisible by 2*scale) to the base layer's planes, unit scale, unrounded."""
        if self.scale == 1:
            return y, uv
        if self.downsampler is None:
            return bicubic_down(y, self.scale), bicubic_down(uv, self.scale)
        return self.downsampler(y, uv)

    def side_classes(self, y_lr_hat: torch.Tensor, fmt: YUVFormat) -> torch.Tensor:
        """Activity classes ``[B, hb, wb]`` of the decoded base luma (unit scale, in ``fmt``),
        from its integer code values."""
        codes = torch.round(unit_to_planes(y_lr_hat.float(), y_lr_hat.new_zeros(()), fmt)[0])
        return activity_classes(codes, self.side_stride, fmt.bit_depth)

    def analyse(self, y, uv, y_lr_hat, uv_lr_hat) -> torch.Tensor:
        """The encoder's side latents ``w`` ``[B, M, hb, wb]``."""
        s, block = self.scale, self.side_stride * self.scale
        x_lr_hat = pad_to_multiple(to_444(y_lr_hat, uv_lr_hat), self.side_stride)
        if s == 1:
            return self.g_a(pad_to_multiple(to_444(y, uv), block), x_lr_hat, x_lr_hat)
        # Chroma padded before its upsampling, by half luma's: the same values (centre siting, edges replicated).
        x_folded = to_444_folded(pad_to_multiple(y, block), pad_to_multiple(uv, block // 2), s)
        return self.g_a(x_folded, bicubic_up_folded(x_lr_hat, s), x_lr_hat)

    def latent_size(self, lr_height: int, lr_width: int) -> tuple[int, int]:
        return -(-lr_height // self.side_stride), -(-lr_width // self.side_stride)

    def side_features(self, w_hat: torch.Tensor | None, y_lr_hat: torch.Tensor) -> SideInputs:
        """The side synthesis ``g_s`` of decoded latents (``None``: every block skipped, the
        latents all zero) for base luma ``y_lr_hat`` ``[B,1,h,w]``, as the upsampler takes
        it: :meth:`~dualcodec.nets.upsampler.SpatiallyVaryingUpsampler.side_inputs` of the
        side features ``s`` and the enhancement residual ``r`` (on whole latent blocks),
        cropped to the upsampler's grid for the base layer (its ``side_size``). All
        ``None`` for a model without a side stream."""
        if not self.has_side_stream:
            return SideInputs(None, None, None)
        b, _, h, w = y_lr_hat.shape
        if w_hat is None:
            w_hat = y_lr_hat.new_zeros(b, self.latent_coder.channels, *self.latent_size(h, w))
        h, w = self.upsampler.side_size(h, w)
        return SideInputs(*(None if t is None else t[..., :h, :w] for t in self.upsampler.side_inputs(*self.g_s(w_hat))))

    def upsample_with(self, y_lr_hat: torch.Tensor, uv_lr_hat: torch.Tensor, side: SideInputs,
                      level: float | torch.Tensor | None = None, rows: int | None = 32,
                      memory: Memory | None = None, ahead: Ahead | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded base planes and the side inputs of :meth:`side_features` to
        ``(y_hat, uv_hat)`` at full size (not clamped); ``level``: the base layer's
        quantiser (a model that :attr:`takes_level` needs it); ``rows``: see the upsampler;
        ``memory``: the previous frame of the GOP, for a :attr:`temporal` model; ``ahead``:
        the next frame's base, for one with ``model.temporal_ahead``."""
        extra = {} if memory is None or not self.temporal else {"memory": memory}
        if ahead is not None and self.reads_ahead:
            extra["ahead"] = ahead
        if self.takes_level and level is not None:
            extra["level"] = torch.as_tensor(level, dtype=torch.float32, device=y_lr_hat.device)
        return self.upsampler(y_lr_hat, uv_lr_hat, *side, rows=rows, **extra)

    def upsample(self, y_lr_hat: torch.Tensor, uv_lr_hat: torch.Tensor,
                 w_hat: torch.Tensor | None, level: float | torch.Tensor | None = None,
                 memory: Memory | None = None, ahead: Ahead | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded base planes and decoded latents ``w_hat`` (``None``: all skipped) to
        ``(y_hat, uv_hat)`` at full size (not clamped), at quantiser ``level``, after the
        frame of ``memory`` (a :attr:`temporal` model), before the base of ``ahead``."""
        return self.upsample_with(y_lr_hat, uv_lr_hat, self.side_features(w_hat, y_lr_hat), level, memory=memory,
                                  ahead=ahead)

    def forward_clips(self, y: torch.Tensor, uv: torch.Tensor,
                      base_layer: Callable[[torch.Tensor, torch.Tensor], BaseLayerOutput], level: float) -> ForwardOutput:
        """Training pass of a model without a side stream on clips ``y`` ``[B,T,1,H,W]``,
        ``uv`` ``[B,T,2,H/2,W/2]`` (each clip one GOP, the base layer coding it as a short
        video): the frames are upsampled in order, each after the previous one's
        :class:`~dualcodec.nets.upsampler.Memory` (a :attr:`temporal` model; gradients
        pass through it), the first with none, and (``model.temporal_ahead``) before the
        next one's base, the last with none. Outputs are ``[B T, ...]``, clip by clip."""
        if self.has_side_stream:
            raise ValueError("forward_clips trains models without a side stream")
        b, t = y.shape[:2]
        y_lr, uv_lr = self.downsample(y.flatten(0, 1), uv.flatten(0, 1))
        base = base_layer(y_lr, uv_lr)
        y_lr_hat, uv_lr_hat = base.y_lr_hat.unflatten(0, (b, t)), base.uv_lr_hat.unflatten(0, (b, t))
        memory, y_hat, uv_hat, alignment = None, [], [], []
        for i in range(t):
            if memory is not None:
                alignment.append(self.upsampler.alignment_error(y_lr_hat[:, i], uv_lr_hat[:, i], memory).mean())
            ahead = Ahead(y_lr_hat[:, i + 1], uv_lr_hat[:, i + 1]) if i + 1 < t else None  # a model that reads it
            y_i, uv_i = self.upsample(y_lr_hat[:, i], uv_lr_hat[:, i], None, level, memory, ahead)
            memory = Memory(y_lr_hat[:, i], uv_lr_hat[:, i], y_i, uv_i) if self.temporal else None
            y_hat.append(y_i)
            uv_hat.append(uv_i)
        return ForwardOutput(torch.stack(y_hat, 1).flatten(0, 1), torch.stack(uv_hat, 1).flatten(0, 1), y_lr, uv_lr,
                             y.new_zeros(b * t, dtype=torch.float32), base.bits,
                             alignment=torch.stack(alignment).mean() if alignment else None)

    def forward(self, y: torch.Tensor, uv: torch.Tensor,
                base_layer: Callable[[torch.Tensor, torch.Tensor], BaseLayerOutput], level: float,
                fmt: YUVFormat, skip_lmbda: float | None = None) -> ForwardOutput:
        """Training pass. ``base_layer`` carries the downsampled planes through the (real or
        proxy) base codec; ``level`` is the side level (the QP), ``fmt`` the planes' format.
        Clips (``y`` ``[B,T,1,H,W]``) go to :meth:`forward_clips`.

        With ``skip_lmbda`` (the side bits' weight per pixel, against the L1 distortion) each
        block is enhanced or skipped as the encoder decides (:class:`dualcodec.codec.ModelLayers`):
        enhanced where its latents lower the distortion by more than they cost. The output
        takes each block from the enhanced or the skipped reconstruction, and the side bits
        count the enhanced blocks' latents and every block's flag: the side path learns to
        be worth its bits where it is used. Without it every block is enhanced.
        """
        if y.dim() == 5:
            return self.forward_clips(y, uv, base_layer, level)
        y_lr, uv_lr = self.downsample(y, uv)
        base = base_layer(y_lr, uv_lr)
        if not self.has_side_stream:
            y_hat, uv_hat = self.upsample(base.y_lr_hat, base.uv_lr_hat, None, level)
            return ForwardOutput(y_hat, uv_hat, y_lr, uv_lr, y.new_zeros(y.shape[0], dtype=torch.float32), base.bits)
        w = self.analyse(y, uv, base.y_lr_hat, base.uv_lr_hat)
        classes = self.side_classes(base.y_lr_hat.detach(), fmt)
        # Under bf16/fp16 autocast the latent coder still works in fp32, as the coder does.
        with torch.autocast(w.device.type, enabled=False):
            w_hat, block_bits = self.latent_coder(w.float(), classes, level)
        y_hat, uv_hat = self.upsample(base.y_lr_hat, base.uv_lr_hat, w_hat, level)
        if skip_lmbda is None:
            return ForwardOutput(y_hat, uv_hat, y_lr, uv_lr, block_bits.sum(dim=(1, 2)), base.bits)
        y_skip, uv_skip = self.upsample(base.y_lr_hat, base.uv_lr_hat, None, level)
        block = self.side_stride * self.scale
        hb, wb = block_bits.shape[-2:]
        gain = (block_distortion(y_skip, uv_skip, y, uv, block) - block_distortion(y_hat, uv_hat, y, uv, block))
        pixels = y.shape[-1] * y.shape[-2]
        enhanced = (gain[:, :hb, :wb] > skip_lmbda * block_bits.detach() / pixels).to(y_hat.dtype)
        flag_bits = binary_entropy(enhanced.mean(dim=(1, 2))) * hb * wb
        side_bits = (enhanced * block_bits).sum(dim=(1, 2)) + flag_bits
        y_mask = enhanced.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, None, : y.shape[-2], : y.shape[-1]]
        uv_mask = y_mask[..., ::2, ::2]
        y_hat = y_skip + y_mask * (y_hat - y_skip)
        uv_hat = uv_skip + uv_mask * (uv_hat - uv_skip)
        return ForwardOutput(y_hat, uv_hat, y_lr, uv_lr, side_bits, base.bits, y_skip, uv_skip)


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
    model.update()
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


def undecodable(loaded: LoadedModel) -> str | None:
    """Why the decoder cannot run ``loaded`` (``None``: it can): a model that reads the next
    frame's base (``model.temporal_ahead``) is an experiment, which only
    ``experiments/temporal_ahead.py`` runs."""
    if loaded.config.temporal_ahead:
        return (f"model {loaded.name!r} reads the next frame's base (model.temporal_ahead), which the decoder does "
                "not run: it is an experiment, measured by experiments/temporal_ahead.py")
    return None


def load_model(name_or_path: str) -> LoadedModel:
    """Load and verify a model file; the model is in eval mode with coding tables ready."""
    path = resolve_model_path(name_or_path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise DualcodecError(f"cannot read model file {path}: {exc.__class__.__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise DualcodecError(f"{path} is not a dualcodec model file")
    if payload.get("version") in OLD_MODELS:
        raise DualcodecError(f"{path} is a model of format version {payload['version']}, {OLD_MODELS[payload['version']]}; "
                             f"this dualcodec reads model format {MODEL_VERSION}: retrain it with dualcodec train")
    if payload.get("version") != MODEL_VERSION:
        raise DualcodecError(f"{path} has model format version {payload.get('version')}, this dualcodec reads {MODEL_VERSION}")
    config = model_config_from_dict(payload["config"])
    state = payload["state_dict"]
    if _fingerprint(payload["config"], state) != payload["fingerprint"]:
        raise DualcodecError(f"{path} is damaged: its weights do not match its fingerprint")
    model = DualLayerModel(config)
    model.load_state_dict(state)
    model.eval()
    return LoadedModel(model, payload["name"], payload["fingerprint"], config, path, float(payload["lmbda"]))
