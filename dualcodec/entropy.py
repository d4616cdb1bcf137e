"""Entropy coding of the side latents, conditioned on the decoded base layer.

The side latents ``w`` ``[B, M, hb, wb]`` hold one vector per block of ``stride x stride``
base-layer pixels. For one frame at side level ``l`` (the QP the encoder signals, 0..63):

* **Quantisation.** ``q = round(w * g_l)``, ``w_hat = q / g_l``, with a learned gain per
  channel ``g_l[m] = exp(a[m] + b[m] (l - 32) / 6)``: coarser at high QPs, as the base
  codec's own step, so one model serves every QP.
* **Probability model.** ``q[m]`` of block ``j`` is a discretised zero-mean Gaussian of
  scale ``sigma[c_j, m] * g_l[m]``; ``c_j`` is the block's *activity class*, computed by
  :func:`activity_classes` with integer arithmetic from the decoded base layer's luma
  code values, which the decoder has bit for bit. Flat blocks, where the base layer is
  already close, get narrow densities; textured ones wide.
* **Tables.** The Gaussian is coded with the nearest entry at or above its scale in a fixed
  table of 64 log-spaced scales (CompressAI's). The entry of every (level, class,
  channel) is looked up once, by :meth:`LatentCoder.update` when the model is saved, and
  stored with the weights (``index_table``), as are the gains (``gain_table``). Decoding
  compares no network output against anything: a file decodes to the same latents at any
  thread count and with any runtime (``../shared/RESEARCH.md`` section 9).
* **Skip.** Each block carries a flag: enhanced, or skipped (``w_hat = 0``, no latent
  bits). The encoder sets them by rate-distortion cost; the flags are range coded under
  one probability per frame.

Payload of one frame (the entropy bytes of a NEW side packet, :mod:`dualcodec.sidestream`)::

    offset  size  field
    0       1     side level l (0..63)
    1       1     p: P(enhanced) = p / 256 (1..255)
    2       3     n: length of the flag string (big-endian)
    5       n     flags, one per block in raster order (rANS, CompressAI's coder)
    5+n     rest  q of the enhanced blocks, block by block in raster order, channel
                  by channel within a block (rANS, tables above)

**Keep flags** (format version 4). A KEEP side packet carries the previous frame's
latents in some blocks and none in the others, as LCEVC's temporal buffer keeps a
block's residuals or clears them: one flag per block, coded with a probability per
*change class*. The class, computed by :func:`change_classes` with integer arithmetic
from the decoded base layer's luma of this frame and of the previous one (both of which
the decoder has), says how much the base layer changed in the block: where it did not,
the previous latents usually still fit. Payload (the entropy bytes of a KEEP packet)::

    offset  size  field
    0       4     p_k: P(kept | change class k) = p_k / 256 (1..255), k = 0..3
    4       rest  flags, one per block in raster order (rANS, the table of the
                  block's change class)
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dualcodec.errors import DamagedData, DualcodecError

LEVELS = 64  # side levels: QPs of H.264/HEVC (0..51) and AV1 (0..63)
ACTIVITY_THRESHOLDS = (4, 8, 16, 32, 64, 128)  # 16 x mean |gradient| per pixel, 8-bit code values
CLASSES = len(ACTIVITY_THRESHOLDS) + 1
CHANGE_THRESHOLDS = (1, 8, 32)  # 16 x mean |change| per pixel between consecutive base frames, 8-bit code values
CHANGE_CLASSES = len(CHANGE_THRESHOLDS) + 1
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64  # the coding tables' Gaussian scales
LIKELIHOOD_BOUND = 1e-9
HEADER_BYTES = 5


def activity_classes(y_codes: torch.Tensor, stride: int, bit_depth: int) -> torch.Tensor:
    """Activity class (0..CLASSES-1) of every ``stride x stride`` block of integer luma
    code values ``[B,1,h,w]`` (edges replicate-padded to whole blocks): ``[B, hb, wb]``.

    Integer arithmetic only: the sum of absolute horizontal and vertical differences in
    each block, scaled to 16 x the mean per pixel at 8 bits, against
    :data:`ACTIVITY_THRESHOLDS`.
    """
    y = _whole_blocks(y_codes, stride)
    grad = torch.zeros_like(y)
    grad[..., :, 1:] += (y[..., :, 1:] - y[..., :, :-1]).abs()
    grad[..., 1:, :] += (y[..., 1:, :] - y[..., :-1, :]).abs()
    return _block_classes(grad, stride, bit_depth, ACTIVITY_THRESHOLDS)


def _whole_blocks(codes: torch.Tensor, stride: int) -> torch.Tensor:
    """Integer code values ``[B,1,h,w]`` as int64, edges replicate-padded to whole blocks."""
    h, w = codes.shape[-2:]
    return torch.nn.functional.pad(codes.to(torch.int64), (0, (-w) % stride, 0, (-h) % stride), mode="replicate")


def _block_classes(measure: torch.Tensor, stride: int, bit_depth: int, thresholds: tuple[int, ...]) -> torch.Tensor:
    """The class of each block of a per-pixel integer ``measure`` ``[B,1,hp,wp]`` (whole
    blocks): its sum scaled to 16 x the mean per pixel at 8 bits, against ``thresholds``."""
    b, _, hp, wp = measure.shape
    sums = measure.view(b, hp // stride, stride, wp // stride, stride).sum(dim=(2, 4))
    scaled = (sums * 16) // (stride * stride << (bit_depth - 8))
    classes = torch.zeros_like(scaled)
    for threshold in thresholds:
        classes += (scaled >= threshold).to(torch.int64)
    return classes


def change_classes(y_codes: torch.Tensor, previous_codes: torch.Tensor, stride: int, bit_depth: int) -> torch.Tensor:
    """Change class (0..CHANGE_CLASSES-1) of every ``stride x stride`` block between two
    frames of integer luma code values ``[B,1,h,w]`` (edges replicate-padded to whole
    blocks): ``[B, hb, wb]``. Class 0 is a block the base layer left exactly as it was.

    Integer arithmetic only: the sum of absolute differences in each block, scaled to 16 x
    the mean per pixel at 8 bits, against :data:`CHANGE_THRESHOLDS`.
    """
    change = (_whole_blocks(y_codes, stride) - _whole_blocks(previous_codes, stride)).abs()
    return _block_classes(change, stride, bit_depth, CHANGE_THRESHOLDS)


def keep_probabilities(kept: torch.Tensor, classes: torch.Tensor) -> list[int]:
    """The payload's ``p_k`` for flags ``kept`` ``[hb, wb]`` of blocks of change ``classes``
    ``[1, hb, wb]``: each class's share of kept blocks, in 1/256, within 1..255."""
    flat, kept = classes.reshape(-1), kept.reshape(-1).to(torch.float64)
    out = []
    for k in range(CHANGE_CLASSES):
        members = flat == k
        share = float(kept[members].mean()) if bool(members.any()) else 0.5
        out.append(min(255, max(1, round(256 * share))))
    return out


def keep_flag_bits(probabilities: list[int]) -> torch.Tensor:
    """Bits of a flag under each class's ``p_k``: ``[CHANGE_CLASSES, 2]`` (cleared, kept);
    an estimate for the encoder's choices."""
    p = torch.tensor(probabilities, dtype=torch.float64) / 256.0
    return -torch.log2(torch.stack([1.0 - p, p], dim=1))


def compress_keep(kept: torch.Tensor, classes: torch.Tensor, probabilities: list[int]) -> bytes:
    """A KEEP packet's payload (module docstring): flags ``kept`` ``[hb, wb]`` bool, change
    ``classes`` ``[1, hb, wb]``, ``probabilities`` the ``p_k`` (:func:`keep_probabilities`)."""
    if len(probabilities) != CHANGE_CLASSES or not all(1 <= p <= 255 for p in probabilities):
        raise DualcodecError(f"keep probabilities must be {CHANGE_CLASSES} values in 1..255, got {probabilities}")
    flags = kept.reshape(-1).to(torch.int32).tolist()
    return bytes(probabilities) + _encode(flags, classes.reshape(-1).tolist(), _flag_tables(probabilities))


def decompress_keep(payload: bytes, classes: torch.Tensor) -> torch.Tensor:
    """A KEEP packet's payload back to its flags ``[hb, wb]`` bool; ``classes`` ``[1, hb, wb]``
    from the decoded base layer. Raises :class:`~dualcodec.errors.DamagedData` for a
    payload that does not parse."""
    hb, wb = classes.shape[-2:]
    probabilities = list(payload[:CHANGE_CLASSES])
    if len(probabilities) < CHANGE_CLASSES or not all(1 <= p <= 255 for p in probabilities):
        raise DamagedData("its keep probabilities are malformed")
    flags = _decode(payload[CHANGE_CLASSES:], classes.reshape(-1).tolist(), _flag_tables(probabilities))
    if flags is None or not ((flags == 0) | (flags == 1)).all():
        raise DamagedData("its keep flags are malformed")
    return torch.from_numpy(flags.astype(bool)).view(hb, wb)


def _flag_tables(probabilities: list[int]) -> tuple[list, list, list]:
    """The coder's tables of binary flags, one per probability ``p / 256`` (indexes 0, 1, ...)."""
    return [_binary_cdf(p) for p in probabilities], [4] * len(probabilities), [0] * len(probabilities)


def _standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def _gaussian_likelihood(values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    values = values.abs()
    return _standard_normal_cdf((0.5 - values) / scales) - _standard_normal_cdf((-0.5 - values) / scales)


_IMPORT_LOCK = threading.Lock()


def _compressai(name: str):
    """CompressAI's compiled module ``name`` (``ans``, the rANS coder; ``_CXX``, the CDF
    quantiser) without running the package's ``__init__`` first: that imports its datasets
    and with them torch_geometric, seconds of every command's start-up. Until something asks
    the package for a name only its ``__init__`` defines, ``compressai`` is the bare package
    (its path, the submodules imported so far); that request runs the ``__init__`` into it
    (a module ``__getattr__``, PEP 562), so code that uses CompressAI itself sees all of it."""
    with _IMPORT_LOCK:
        if "compressai" not in sys.modules:
            spec = importlib.util.find_spec("compressai")
            if spec is None or spec.loader is None:
                raise DualcodecError("the compressai package is not installed (pip install compressai)")
            package = importlib.util.module_from_spec(spec)

            def complete(attribute: str):
                del package.__getattr__
                spec.loader.exec_module(package)
                return getattr(package, attribute)

            package.__getattr__ = complete
            sys.modules["compressai"] = package
        return importlib.import_module(f"compressai.{name}")


class _Bound(nn.Module):
    """Holds a ``bound`` buffer, as CompressAI's ``LowerBound`` does (its state-dict key)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bound", torch.zeros(1))


class CodingTables(nn.Module):
    """The quantised CDFs of the discretised Gaussians of :data:`SCALE_LEVELS` scales, with
    the buffers, and buffer names, of CompressAI's ``GaussianConditional``, which builds
    them (:meth:`build`). A model file stores them, so a loaded model needs no CompressAI
    Python at all; a new one builds them once (the first coding or :meth:`update` of its
    :class:`LatentCoder`). Until then the CDF buffers are empty."""

    def __init__(self) -> None:
        super().__init__()
        scales = torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))
        self.register_buffer("scale_table", scales)
        self.register_buffer("scale_bound", torch.tensor([SCALE_MIN]))
        self.likelihood_lower_bound = _Bound()
        self.lower_bound_scale = _Bound()
        for name in ("_quantized_cdf", "_cdf_length", "_offset"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int32))

    @property
    def built(self) -> bool:
        return self._quantized_cdf.numel() > 0

    @torch.no_grad()
    def build(self) -> None:
        """The CDFs of :attr:`scale_table`'s Gaussians, as CompressAI quantises them."""
        gaussian = importlib.import_module("compressai.entropy_models").GaussianConditional(None, scale_bound=SCALE_MIN)
        gaussian.update_scale_table(self.scale_table.tolist(), force=True)
        self.load_state_dict(gaussian.state_dict())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("_quantized_cdf", "_cdf_length", "_offset"):  # sized by what is loaded
            if prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def index(self, scales: torch.Tensor) -> torch.Tensor:
        """The first table scale at or above each of ``scales`` (bounded below by the
        table's least), its last beyond: the table a Gaussian of that scale is coded with."""
        bounded = torch.maximum(scales, self.scale_bound.to(scales.device))
        return torch.searchsorted(self.scale_table[:-1].to(scales.device).contiguous(), bounded.contiguous())

    def lists(self) -> tuple[list, list, list]:
        """``(cdfs, lengths, offsets)`` as the coder takes them (built first if empty;
        cached until the tables change)."""
        if not self.built:
            self.build()
        key = (self._quantized_cdf.data_ptr(), self._quantized_cdf._version)
        if getattr(self, "_lists_key", None) != key:
            self._lists = (self._quantized_cdf.tolist(), self._cdf_length.tolist(), self._offset.tolist())
            self._lists_key = key
        return self._lists


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    """Rounding with an identity gradient."""
    return x + (torch.round(x) - x).detach()


@dataclass(frozen=True)
class CodedLatents:
    """What the decoder gets back from one frame's payload."""

    w_hat: torch.Tensor  # [1, M, hb, wb]
    enhanced: torch.Tensor  # [hb, wb] bool
    level: int


class LatentCoder(nn.Module):
    """Quantiser, probability model and coder of the side latents (see the module docstring)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.log_sigma = nn.Parameter(torch.zeros(CLASSES, channels))
        self.gain_log = nn.Parameter(torch.zeros(channels))  # a
        self.gain_slope = nn.Parameter(torch.full((channels,), -math.log(2.0) / 2.0))  # b: halves every 12 QP
        self.gaussian = CodingTables()
        self.register_buffer("index_table", torch.zeros(LEVELS, CLASSES, channels, dtype=torch.int32))
        self.register_buffer("gain_table", torch.ones(LEVELS, channels))

    # -- training ------------------------------------------------------------------------

    def gain(self, level: float) -> torch.Tensor:
        """``g_l`` ``[M]`` from the parameters (training; coding uses :attr:`gain_table`)."""
        return torch.exp(self.gain_log + self.gain_slope * (level - 32.0) / 6.0)

    def scales(self, classes: torch.Tensor) -> torch.Tensor:
        """``sigma[c_j, m]`` for every block: ``[B, M, hb, wb]``."""
        return torch.exp(self.log_sigma)[classes].permute(0, 3, 1, 2)

    def forward(self, w: torch.Tensor, classes: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: ``(w_hat, bits)``. The synthesis gets straight-through rounded latents,
        the likelihoods see additive uniform noise; ``bits`` ``[B, hb, wb]``, per block."""
        g = self.gain(level).view(1, -1, 1, 1)
        v = w * g
        noisy = v + torch.empty_like(v).uniform_(-0.5, 0.5) if self.training else torch.round(v)
        scales = (self.scales(classes) * g).clamp_min(SCALE_MIN)
        likelihood = _gaussian_likelihood(noisy, scales).clamp_min(LIKELIHOOD_BOUND)
        bits = -torch.log2(likelihood).sum(dim=1)
        return _ste_round(v) / g, bits

    # -- tables --------------------------------------------------------------------------

    @torch.no_grad()
    def update(self) -> None:
        """Build the coding tables from the learned parameters (before saving or coding)."""
        levels = torch.arange(LEVELS, dtype=torch.float32).view(-1, 1)
        gains = torch.exp(self.gain_log.detach().cpu() + self.gain_slope.detach().cpu() * (levels - 32.0) / 6.0)
        scales = torch.exp(self.log_sigma.detach().cpu()).unsqueeze(0) * gains.unsqueeze(1)  # [L, K, M]
        self.gain_table.copy_(gains)
        self.index_table.copy_(self.gaussian.index(scales).to(torch.int32))
        if not self.gaussian.built:
            self.gaussian.build()

    # -- coding --------------------------------------------------------------------------

    def quantize(self, w: torch.Tensor, level: int) -> torch.Tensor:
        """Symbols ``q`` of one frame's latents ``[1, M, hb, wb]`` (int32)."""
        return torch.round(w * self.gain_table[level].view(1, -1, 1, 1)).to(torch.int32)

    def dequantize(self, q: torch.Tensor, level: int) -> torch.Tensor:
        return q.float() / self.gain_table[level].view(1, -1, 1, 1)

    def block_bits(self, q: torch.Tensor, classes: torch.Tensor, level: int) -> torch.Tensor:
        """Bits each block's symbols cost under the coding tables' Gaussians, ``[hb, wb]``
        (an estimate for the encoder's choices; the coder adds little)."""
        scales = self.gaussian.scale_table[self.index_table[level][classes[0]].long()].permute(2, 0, 1)
        likelihood = _gaussian_likelihood(q[0].float(), scales).clamp_min(LIKELIHOOD_BOUND)
        return -torch.log2(likelihood).sum(dim=0)

    def compress(self, q: torch.Tensor, classes: torch.Tensor, level: int, enhanced: torch.Tensor) -> bytes:
        """One frame's payload: symbols ``q`` ``[1, M, hb, wb]`` (clipped to +-MAX_SYMBOL),
        classes ``[1, hb, wb]``, ``enhanced`` ``[hb, wb]`` bool (at least one block)."""
        if not 0 <= level < LEVELS:
            raise DualcodecError(f"side level {level} is outside 0..{LEVELS - 1}")
        if not bool(enhanced.any()):
            raise DualcodecError("a side-stream payload needs at least one enhanced block (else the frame is SKIP)")
        keep = enhanced.reshape(-1).numpy()
        p = min(255, max(1, round(256 * float(keep.mean()))))
        flag_bytes = _encode(keep.astype(np.int32).tolist(), [0] * keep.size, _flag_tables([p]))
        symbols = q[0].permute(1, 2, 0).reshape(-1, self.channels).numpy()[keep].clip(-MAX_SYMBOL, MAX_SYMBOL)
        latent_bytes = _encode(symbols.reshape(-1).tolist(), self._indexes(level, classes, keep), self.gaussian.lists())
        return bytes([level, p]) + len(flag_bytes).to_bytes(3, "big") + flag_bytes + latent_bytes

    def _indexes(self, level: int, classes: torch.Tensor, keep: np.ndarray) -> list[int]:
        """The table index of every coded symbol: the enhanced blocks' (raster order), channel by channel."""
        return self.index_table[level].numpy()[classes[0].reshape(-1).numpy()[keep]].reshape(-1).tolist()

    def decompress(self, payload: bytes, classes: torch.Tensor) -> CodedLatents:
        """A payload back to latents; ``classes`` ``[1, hb, wb]`` from the decoded base layer.
        Raises :class:`~dualcodec.errors.DamagedData` for a payload that does not parse."""
        hb, wb = classes.shape[-2:]
        if len(payload) < HEADER_BYTES or payload[0] >= LEVELS or not 1 <= payload[1] <= 255:
            raise DamagedData("its header is malformed")
        level, p, n = payload[0], payload[1], int.from_bytes(payload[2:5], "big")
        if HEADER_BYTES + n > len(payload):
            raise DamagedData("it is truncated")
        flags = _decode(payload[HEADER_BYTES:HEADER_BYTES + n], [0] * (hb * wb), _flag_tables([p]))
        if flags is None or not ((flags == 0) | (flags == 1)).all() or not flags.any():
            raise DamagedData("its skip flags are malformed")
        enhanced = flags.astype(bool)
        values = _decode(payload[HEADER_BYTES + n:], self._indexes(level, classes, enhanced), self.gaussian.lists())
        if values is None:
            raise DamagedData("its latents are malformed")
        q = np.zeros((hb * wb, self.channels), dtype=np.int32)
        q[enhanced] = values.reshape(-1, self.channels)
        q = torch.from_numpy(q).view(1, hb, wb, self.channels).permute(0, 3, 1, 2).contiguous()
        return CodedLatents(self.dequantize(q, level), torch.from_numpy(enhanced).view(hb, wb), level)


MAX_SYMBOL = 1023  # latent symbols are clipped to this: the coder's escape codes stay short
PAD_SYMBOLS = 16  # near-certain zeros after every string's symbols: slack for CompressAI's coder buffer
_PAD_P = 1  # their table: P(1) = 1/256


def _with_padding(symbols: list[int], indexes: list[int], tables) -> tuple[list[int], list[int], tuple]:
    cdfs, lengths, offsets = tables
    pad = len(cdfs)
    return (symbols + [0] * PAD_SYMBOLS, indexes + [pad] * PAD_SYMBOLS,
            (cdfs + [_binary_cdf(_PAD_P)], lengths + [4], offsets + [0]))


def _encode(symbols: list[int], indexes: list[int], tables) -> bytes:
    """Range-code ``symbols`` with the tables ``(cdfs, lengths, offsets)`` they index, plus padding.

    CompressAI's encoder writes into a buffer of one 32-bit word per symbol and flushes two
    more; the padding symbols (about 0.006 bits each) keep every string inside it."""
    ans = _compressai("ans")
    symbols, indexes, (cdfs, lengths, offsets) = _with_padding(symbols, indexes, tables)
    return ans.RansEncoder().encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)


def _decode(data: bytes, indexes: list[int], tables) -> np.ndarray | None:
    """Inverse of :func:`_encode`: the symbols (int32), or ``None`` unless ``data`` is
    exactly what :func:`_encode` makes of them (the decoder has no end-of-string check:
    the input is zero-padded so that it never reads past it)."""
    ans = _compressai("ans")
    padded_symbols, padded_indexes, (cdfs, lengths, offsets) = _with_padding([], indexes, tables)
    values = ans.RansDecoder().decode_with_indexes(data + bytes(8 * len(padded_indexes) + 64), padded_indexes,
                                                   cdfs, lengths, offsets)
    symbols = values[: len(indexes)]
    if values[len(indexes):] != padded_symbols or _encode(symbols, indexes, tables) != data:
        return None
    return np.fromiter(symbols, dtype=np.int32, count=len(symbols))


def _binary_cdf(p: int) -> list[int]:
    """The quantised CDF of a flag with P(1) = p / 256 (and CompressAI's escape symbol)."""
    return _compressai("_CXX").pmf_to_quantized_cdf([1.0 - p / 256.0, p / 256.0, 1e-9], 16)
