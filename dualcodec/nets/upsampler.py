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

Filter 0 starts as bicubic and the weights start at (1, 0, ..., 0), so an untrained
upsampler is exactly bicubic upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dualcodec.nets.common import Normalize, conv3x3

CHANNELS = 3  # Y, Cb, Cr, chroma on luma's grid


def bicubic_polyphase(scale: int, taps: int) -> torch.Tensor:
    """Bicubic upsampling written as ``scale**2`` polyphase filters, ``[scale**2, taps, taps]``."""
    size = taps + 8
    centre = size // 2
    half = taps // 2
    impulses = torch.zeros(taps * taps, 1, size, size)
    for k in range(taps * taps):
        dy, dx = divmod(k, taps)
        impulses[k, 0, centre + dy - half, centre + dx - half] = 1.0
    up = F.interpolate(impulses, scale_factor=float(scale), mode="bicubic", align_corners=False)
    phases = up[:, 0, centre * scale : centre * scale + scale, centre * scale : centre * scale + scale]
    return phases.reshape(taps, taps, scale * scale).permute(2, 0, 1).contiguous()


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


class SpatiallyVaryingUpsampler(nn.Module):
    def __init__(
        self,
        scale: int,
        side_channels: int,
        width: int = 24,
        depth: int = 3,
        num_filters: int = 8,
        taps: int = 5,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.num_filters = num_filters
        self.taps = taps
        self.normalize = Normalize()
        self.conv_in = conv3x3(3 + side_channels, width)
        self.body = nn.ModuleList(conv3x3(width, width) for _ in range(depth))
        self.head = nn.Conv2d(width, num_filters * scale * scale, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # Optional additive detail per output pixel, predicted from the same features.
        self.detail = nn.Conv2d(width, 3 * scale * scale, 1) if residual else None
        if self.detail is not None:
            nn.init.zeros_(self.detail.weight)
            nn.init.zeros_(self.detail.bias)
        self.register_buffer("weight_offset", F.one_hot(torch.tensor(0), num_filters).float().view(1, -1, 1, 1), persistent=False)
        bicubic = bicubic_polyphase(scale, taps)
        filters = bicubic.unsqueeze(0).repeat(num_filters, 1, 1, 1)
        filters[1:] += 0.02 * torch.randn_like(filters[1:])
        self.filters = nn.Parameter(filters)  # [K, s*s, t, t]
        self.phases = scale * scale
        # Fixed index and weights of the 4-D mixture (see kernel_weights).
        order = torch.arange(num_filters * self.phases).view(num_filters, self.phases).t().reshape(-1)
        self.register_buffer("head_order", order, persistent=False)
        groups = torch.arange(CHANNELS * self.phases * num_filters) // num_filters
        filter_sum = (groups[None] == torch.arange(CHANNELS * self.phases)[:, None]).float()
        self.register_buffer("filter_sum", filter_sum[..., None, None], persistent=False)
        self.register_buffer("chroma_average", chroma_average(scale) if scale > 1 else None, persistent=False)

    def features(self, x_lr_hat: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        z = self.normalize(x_lr_hat) if s is None else torch.cat([self.normalize(x_lr_hat), s], dim=1)
        f = F.leaky_relu(self.conv_in(z), 0.1)
        for conv in self.body:
            f = f + F.leaky_relu(conv(f), 0.1)
        return f

    def kernel_weights(self, f: torch.Tensor) -> torch.Tensor:
        """Filter weights for every output pixel, in low-resolution layout, repeated for the
        three channels: ``[B, 3 s^2 K, h, w]``, channel ``(c s^2 + p) K + k`` for channel
        ``c``, phase ``p`` and filter ``k`` (the order :meth:`_candidates` produces)."""
        # The head's rows, stored (k, p), are read in (p, k) order and repeated per channel:
        # the mixture then stays a 4-D, per-channel product (no 6-D views, which cost a
        # layout change each in a compiled graph). The offset rides in the bias.
        bias = (self.head.bias + self.weight_offset.view(-1, 1).expand(-1, self.phases).reshape(-1))
        weight = self.head.weight[self.head_order].repeat(CHANNELS, 1, 1, 1)
        return F.conv2d(f.contiguous(), weight, bias[self.head_order].repeat(CHANNELS))

    def _candidates(self, x_padded: torch.Tensor) -> torch.Tensor:
        """Every filter applied to every channel of a replicate-padded strip, per phase:
        ``[B, 3 s^2 K, rows, w]`` in the order of :meth:`kernel_weights`."""
        weight = self.filters.transpose(0, 1).reshape(-1, 1, self.taps, self.taps).repeat(CHANNELS, 1, 1, 1)
        return F.conv2d(x_padded.contiguous(), weight, groups=CHANNELS)

    def _mix(self, x_padded: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_k w_k c_k`` for every channel and phase: ``[B, 3 s^2, rows, w]`` (a 1x1
        convolution of zeros and ones sums each group of K products)."""
        return F.conv2d(self._candidates(x_padded) * weights, self.filter_sum)

    def forward(self, x_lr_hat: torch.Tensor, s: torch.Tensor | None, residual: torch.Tensor | None = None,
                rows: int | None = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_lr_hat`` ``[B,3,h,w]`` (Y, Cb, Cr on the unit scale, chroma on luma's grid),
        ``s`` ``[B,C_s,h,w]`` (``None`` without a side stream) -> 4:2:0 planes ``y_hat``
        ``[B,1,sh,sw]`` and ``uv_hat`` ``[B,2,sh/2,sw/2]``; ``residual`` ``[B,3 s^2,h,w]``, in
        pixel-shuffle layout, is added before the planes are formed.

        The mixture is formed at low resolution, phase by phase, in strips of ``rows``
        rows (the candidates of a strip stay in cache; ``None``: one strip, the form a
        compiled graph takes). Luma's phases are pixel-shuffled to their output
        positions; chroma is averaged over each 2x2 output block still in phase layout
        (:func:`~dualcodec.nets.common.from_444` without forming full-resolution chroma).
        """
        h = x_lr_hat.shape[-2]
        f = self.features(x_lr_hat, s)
        weights = self.kernel_weights(f)
        x_padded = F.pad(x_lr_hat, [self.taps // 2] * 4, mode="replicate")
        if rows is None:
            mixed = self._mix(x_padded, weights)
        else:
            mixed = torch.cat([self._mix(x_padded[:, :, top : min(h, top + rows) + self.taps - 1],
                                         weights[:, :, top : min(h, top + rows)]) for top in range(0, h, rows)], dim=-2)
        if self.detail is not None:
            mixed = mixed + self.detail(f)  # channel c*s*s + phase, as pixel_shuffle reads it
        if residual is not None:
            mixed = mixed + residual
        y_hat = F.pixel_shuffle(mixed[:, : self.phases], self.scale)
        uv = mixed[:, self.phases :]
        if self.scale == 1:
            return y_hat, F.avg_pool2d(uv, 2)
        return y_hat, F.pixel_shuffle(F.conv2d(uv, self.chroma_average, groups=2), self.scale // 2)
