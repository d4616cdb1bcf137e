"""Spatially varying upsampler: per-pixel mixtures of learned polyphase filters.

After LAPAR (Li et al., NeurIPS 2020) and kernel-prediction networks: a small CNN at
low resolution predicts, for every *output* pixel, the weights of ``K`` learned
filters; the output pixel is the weighted sum of those filters applied to the decoded
base frame. The filters therefore change from pixel to pixel, steered by the decoded
frame and by the side features ``s`` that only the encoder could compute.

    x_lr_hat [B,3,h,w] --Normalize--+
    s        [B,C_s,h,w] -----------+--cat--conv3x3--(conv3x3 + residual) x depth = f --conv1x1--> w [B,K s^2,h,w]
    x_lr_hat --polyphase conv (K filters x s^2 phases, t x t taps)--> c [B,3 K s^2,h,w]
    m = sum_k w_k * c_k  (+ d, a per-pixel detail term from a 1x1 conv of f, if ``residual``;
                          + r, the side stream's enhancement residual)   [B, 3 s^2, h, w]
    y_hat = pixel_shuffle(m_Y, s);  uv_hat = 2x2 means of pixel_shuffle(m_CbCr, s)

That is ``chroma="luma"``. With ``chroma="own"`` (the shipped default) luma's mixture
serves Y alone, and chroma has its own head and filters, shared by Cb and Cr, applied to
chroma on luma's grid at chroma's own output phases (one per base pixel at 2x), so no
2x2 averaging is needed; the side features enter the first convolution through a
convolution of their own (``conv_side``), computed once per side packet.

Filter 0 starts as bicubic and the weights start at (1, 0, ..., 0), so an untrained
upsampler is exactly bicubic upsampling.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dualcodec.nets.common import Normalize, bicubic_polyphase, conv3x3, to_444
from dualcodec.nets.quant import conv_parts

CHANNELS = 3  # Y, Cb, Cr, chroma on luma's grid


def chroma_average(scale: int) -> torch.Tensor:
    """A grouped 1x1 convolution that averages each 2x2 block of output positions of a
    phase layout (``scale**2`` phases per pixel, ``scale >= 2``) into ``(scale/2)**2`` phases,
    per chroma channel: ``[2 (s/2)^2, s^2, 1, 1]``."""
    half = scale // 2
    weight = torch.zeros(2 * half * half, scale * scale, 1, 1)
    for c in range(2):
        for py in range(scale):
            for px in range(scale):
                weight[c * half * half + (py // 2) * half + px // 2, py * scale + px] = 0.25
    return weight


CHROMA_MODES = ("luma", "own")


class SideInputs(NamedTuple):
    """The side stream's inputs to the upsampler, from :meth:`SpatiallyVaryingUpsampler.side_inputs`
    (each ``None`` where the model has no side stream, or no enhancement residual)."""

    t: torch.Tensor | None  # the side features' term of the first convolution [B, width or C_s, h, w]
    r_y: torch.Tensor | None  # the residual on luma's phases [B, s^2, h, w]
    r_uv: torch.Tensor | None  # on chroma's [B, 2 P_c, h, w] (own chroma) or [B, 2 s^2, h, w]


def chroma_phases(scale: int) -> int:
    """Output phases per base luma pixel of each chroma plane (4:2:0 at ``scale``; at scale
    1 chroma is mixed on luma's grid and averaged over 2x2 blocks)."""
    return max(1, (scale // 2) ** 2)


class SpatiallyVaryingUpsampler(nn.Module):
    """See the module docstring. ``chroma``: ``"luma"`` mixes chroma with luma's weights
    and filters at luma's phases, then averages each 2x2 output block; ``"own"`` gives
    chroma its own weights (shared by Cb and Cr) and filters, at chroma's own output
    phases (:func:`chroma_phases`): at scale 2 a quarter of chroma's mixture channels, half
    of the whole mixture's."""

    def __init__(
        self,
        scale: int,
        side_channels: int,
        width: int = 24,
        depth: int = 3,
        num_filters: int = 8,
        taps: int = 5,
        residual: bool = False,
        chroma: str = "luma",
    ) -> None:
        super().__init__()
        if chroma not in CHROMA_MODES:
            raise ValueError(f"chroma must be one of {CHROMA_MODES}, got {chroma!r}")
        self.scale = scale
        self.num_filters = num_filters
        self.taps = taps
        self.phases = scale * scale
        self.own_chroma = chroma == "own"
        self.luma_channels = 1 if self.own_chroma else CHANNELS  # the channels luma's mixture serves
        self.normalize = Normalize()
        # Own chroma: the side features' part of the first convolution is its own (no
        # bias), so the decoder computes it once per side packet (:meth:`side_inputs`).
        self.conv_in = conv3x3(3 if self.own_chroma and side_channels else 3 + side_channels, width)
        self.conv_side = nn.Conv2d(side_channels, width, 3, padding=1, bias=False) if self.own_chroma and side_channels else None
        self.body = nn.ModuleList(conv3x3(width, width) for _ in range(depth))
        bicubic = bicubic_polyphase(scale, taps)
        self.head, self.filters = self._new_mixture(width, bicubic)
        self._register_sums("", self.luma_channels, self.phases)
        # Optional additive detail per output pixel, predicted from the same features:
        # channel c*s*s + phase, as pixel_shuffle reads it (chroma at its own phases if own).
        self.detail_channels = self.phases + 2 * chroma_phases(scale) if self.own_chroma else CHANNELS * self.phases
        self.detail = nn.Conv2d(width, self.detail_channels, 1) if residual else None
        if self.detail is not None:
            nn.init.zeros_(self.detail.weight)
            nn.init.zeros_(self.detail.bias)
        average = chroma_average(scale) if scale > 1 else None
        self.register_buffer("chroma_average", average, persistent=False)
        if self.own_chroma:
            # Filter 0 starts as what "luma" mode does untrained: bicubic phases averaged.
            start = bicubic if average is None else torch.einsum("qp,pyx->qyx", average[: chroma_phases(scale), :, 0, 0], bicubic)
            self.chroma_head, self.chroma_filters = self._new_mixture(width, start)
            self._register_sums("chroma_", 2, chroma_phases(scale))

    def _new_mixture(self, width: int, start: torch.Tensor) -> tuple[nn.Conv2d, nn.Parameter]:
        """A weight head (zero: every pixel takes filter 0) and ``K`` filters of ``P`` phases
        ``[K, P, t, t]`` that start as ``start`` ``[P, t, t]`` (the others perturbed)."""
        phases = start.shape[0]
        head = nn.Conv2d(width, self.num_filters * phases, 1)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        filters = start.unsqueeze(0).repeat(self.num_filters, 1, 1, 1)
        filters[1:] += 0.02 * torch.randn_like(filters[1:])
        return head, nn.Parameter(filters)

    def _register_sums(self, prefix: str, channels: int, phases: int) -> None:
        """The fixed index and weights of a 4-D mixture (see :meth:`_weights`)."""
        k = self.num_filters
        order = torch.arange(k * phases).view(k, phases).t().reshape(-1)
        self.register_buffer(prefix + "head_order", order, persistent=False)
        groups = torch.arange(channels * phases * k) // k
        filter_sum = (groups[None] == torch.arange(channels * phases)[:, None]).float()
        self.register_buffer(prefix + "filter_sum", filter_sum[..., None, None], persistent=False)
        offset = F.one_hot(torch.zeros(phases, dtype=torch.long), k).t().reshape(-1).float()  # filter 0, row (k, p)
        self.register_buffer(prefix + "weight_offset", offset, persistent=False)

    def side_inputs(self, s: torch.Tensor | None, r_y: torch.Tensor | None = None,
                    r_uv: torch.Tensor | None = None) -> SideInputs:
        """What :meth:`forward` takes of the side features ``s`` ``[B,C_s,h,w]`` and the
        enhancement residual's luma and chroma phases ``r_y`` ``[B,s^2,h,w]``, ``r_uv``
        ``[B,2 s^2,h,w]`` (pixel-shuffle layout): the side term of the first convolution
        (``s`` itself in luma mode), and the residual (chroma's averaged to chroma's own
        phases with own chroma). Computed once per side packet: a decoder reuses it for
        every frame that repeats it."""
        t = s if s is None or self.conv_side is None else self.conv_side(s)
        if r_uv is not None and self.own_chroma and self.chroma_average is not None:
            r_uv = F.conv2d(r_uv, self.chroma_average, groups=2)
        return SideInputs(t, r_y, r_uv)

    def features(self, x_lr_hat: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        z = self.normalize(x_lr_hat)
        if t is None:
            z = self.conv_in(z)
        elif self.conv_side is None:
            z = self.conv_in(torch.cat([z, t], dim=1))
        else:
            z = self.conv_in(z) + t
        f = F.leaky_relu(z, 0.1)
        for conv in self.body:
            f = f + F.leaky_relu(conv(f), 0.1)
        return f

    @staticmethod
    def _weights(f: torch.Tensor, head: nn.Conv2d, order: torch.Tensor, offset: torch.Tensor,
                 channels: int) -> torch.Tensor:
        """Filter weights for every output pixel, in low-resolution layout, repeated for the
        ``channels`` channels a mixture serves: ``[B, C P K, h, w]``, channel ``(c P + p) K + k``
        for channel ``c``, phase ``p`` and filter ``k`` (the order :meth:`_candidates` produces)."""
        # The head's rows, stored (k, p), are read in (p, k) order and repeated per channel:
        # the mixture then stays a 4-D, per-channel product (no 6-D views, which cost a
        # layout change each in a compiled graph). The offset rides in the bias.
        weight = head.weight[order].repeat(channels, 1, 1, 1)
        return F.conv2d(f.contiguous(), weight, (head.bias + offset)[order].repeat(channels))

    @staticmethod
    def _mix(x_padded: torch.Tensor, weights: torch.Tensor, filters: torch.Tensor,
             filter_sum: torch.Tensor) -> torch.Tensor:
        """``sum_k w_k c_k`` for every channel and phase of a replicate-padded strip
        ``x_padded`` ``[B, C, rows + t - 1, w + t - 1]``: ``[B, C P, rows, w]``. The
        candidates ``c`` (every filter on every channel, ``[B, C P K, rows, w]``) come in the
        order of :meth:`_weights`; a 1x1 convolution of zeros and ones sums each group of K."""
        k, phases, taps = filters.shape[:3]
        channels = x_padded.shape[1]
        kernel = filters.transpose(0, 1).reshape(-1, 1, taps, taps).repeat(channels, 1, 1, 1)
        candidates = F.conv2d(x_padded.contiguous(), kernel, groups=channels)
        return F.conv2d(candidates * weights, filter_sum)

    def _mixture(self, x: torch.Tensor, f: torch.Tensor, rows: int | None, chroma: bool) -> torch.Tensor:
        """Luma's mixture (``chroma`` False: of channel 0 with own chroma, else of all three)
        or chroma's own of the base planes ``x`` ``[B, C, h, w]`` with the weights from
        features ``f``: ``[B, C P, h, w]``."""
        if chroma:
            filters, filter_sum = self.chroma_filters, self.chroma_filter_sum
            weights = self._weights(f, self.chroma_head, self.chroma_head_order, self.chroma_weight_offset, 2)
        else:
            filters, filter_sum = self.filters, self.filter_sum
            weights = self._weights(f, self.head, self.head_order, self.weight_offset, self.luma_channels)
        x_padded = F.pad(x, [self.taps // 2] * 4, mode="replicate")
        if rows is None:
            return self._mix(x_padded, weights, filters, filter_sum)
        h = f.shape[-2]
        return torch.cat([self._mix(x_padded[:, :, top : min(h, top + rows) + self.taps - 1],
                                    weights[:, :, top : min(h, top + rows)], filters, filter_sum)
                          for top in range(0, h, rows)], dim=-2)

    def forward(self, y_lr_hat: torch.Tensor, uv_lr_hat: torch.Tensor, t: torch.Tensor | None = None,
                r_y: torch.Tensor | None = None, r_uv: torch.Tensor | None = None,
                rows: int | None = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded base planes ``y_lr_hat`` ``[B,1,h,w]`` and ``uv_lr_hat`` ``[B,2,h/2,w/2]``
        (unit scale) and the :class:`SideInputs` ``t, r_y, r_uv`` of :meth:`side_inputs`
        (``None`` without a side stream or residual) -> 4:2:0 planes ``y_hat``
        ``[B,1,sh,sw]`` and ``uv_hat`` ``[B,2,sh/2,sw/2]``. The networks see chroma on
        luma's grid (:func:`~dualcodec.nets.common.to_444`).

        The mixture is formed at low resolution, phase by phase, in strips of ``rows``
        rows (the candidates of a strip stay in cache; ``None``: one strip, the form a
        compiled graph takes). Luma's phases are pixel-shuffled to their output
        positions; chroma's are its own (own chroma) or averaged over each 2x2 output
        block still in phase layout (:func:`~dualcodec.nets.common.from_444` without
        forming full-resolution chroma). Detail and residual are added in phase layout.
        """
        x = to_444(y_lr_hat, uv_lr_hat)
        f = self.features(x, t)
        if self.own_chroma:
            y_mix = self._mixture(y_lr_hat, f, rows, chroma=False)
            uv_mix = self._mixture(x[:, 1:], f, rows, chroma=True)
        else:
            mixed = self._mixture(x, f, rows, chroma=False)
            y_mix, uv_mix = mixed[:, : self.phases], mixed[:, self.phases :]
        if self.detail is not None:  # two convolutions, no split of a tensor
            y_detail, uv_detail = conv_parts(self.detail, f, [self.phases, self.detail_channels - self.phases])
            y_mix, uv_mix = y_mix + y_detail, uv_mix + uv_detail
        if r_y is not None:
            y_mix, uv_mix = y_mix + r_y, uv_mix + r_uv
        y_hat = F.pixel_shuffle(y_mix, self.scale)
        if self.scale == 1:
            return y_hat, F.avg_pool2d(uv_mix, 2)
        if not self.own_chroma:
            uv_mix = F.conv2d(uv_mix, self.chroma_average, groups=2)
        return y_hat, F.pixel_shuffle(uv_mix, self.scale // 2)
