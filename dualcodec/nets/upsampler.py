"""Spatially varying upsampler: per-pixel mixtures of learned polyphase filters.

After LAPAR (Li et al., NeurIPS 2020) and kernel-prediction networks: a small CNN at
low resolution predicts, for every *output* pixel, the weights of ``K`` learned
filters; the output pixel is the weighted sum of those filters applied to the decoded
base frame. The filters therefore change from pixel to pixel, steered by the decoded
frame and by the side features ``s`` that only the encoder could compute.

    x_lr_hat [B,3,h,w] --Normalize--+
    s        [B,C_s,h,w] -----------+--cat--conv3x3--(conv3x3 + residual) x depth--conv1x1
                                                                       |
                                        weights w [B,K,sh,sw] <--pixel_shuffle(s)
    x_lr_hat --polyphase conv (K filters x s^2 phases, t x t taps)--pixel_shuffle(s)--> c [B,3,K,sh,sw]
    x_hat = sum_k w_k * c_k  (+ d, a per-pixel detail term from a 1x1 conv, if ``residual``)

Filter 0 starts as bicubic and the weights start at (1, 0, ..., 0), so an untrained
upsampler is exactly bicubic upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dualcodec.nets.common import Normalize, conv3x3


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

    def features(self, x_lr_hat: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        z = self.normalize(x_lr_hat) if s is None else torch.cat([self.normalize(x_lr_hat), s], dim=1)
        f = F.leaky_relu(self.conv_in(z), 0.1)
        for conv in self.body:
            f = f + F.leaky_relu(conv(f), 0.1)
        return f

    def kernel_weights(self, f: torch.Tensor) -> torch.Tensor:
        """Filter weights for every output pixel, in low-resolution layout ``[B, K, s*s, h, w]``."""
        b, _, h, w = f.shape
        phases = self.scale * self.scale
        # The offset rides in the bias, and the 1x1 conv runs on NCHW features: both
        # save a full pass over the weights at decode time.
        bias = self.head.bias + self.weight_offset.view(-1, 1).expand(-1, phases).reshape(-1)
        weights = F.conv2d(f.contiguous(), self.head.weight, bias)
        return weights.view(b, self.num_filters, phases, h, w)

    def _candidates(self, x_padded: torch.Tensor) -> torch.Tensor:
        """Every filter applied to every channel of a replicate-padded strip, per phase:
        ``[B, 3, K, s*s, rows, w]``."""
        b, c = x_padded.shape[:2]
        h, w = x_padded.shape[-2] - self.taps + 1, x_padded.shape[-1] - self.taps + 1
        weight = self.filters.reshape(-1, 1, self.taps, self.taps).repeat(c, 1, 1, 1)
        out = F.conv2d(x_padded.contiguous(), weight, groups=c)
        return out.view(b, c, self.num_filters, self.scale * self.scale, h, w)

    def forward(self, x_lr_hat: torch.Tensor, s: torch.Tensor | None, residual: torch.Tensor | None = None,
                rows: int = 32) -> torch.Tensor:
        """``x_lr_hat`` ``[B,3,h,w]`` (Y, Cb, Cr on the unit scale), ``s`` ``[B,C_s,h,w]`` (``None``
        without a side stream) -> ``x_hat`` ``[B,3,sh,sw]``; ``residual`` ``[B,3 s^2,h,w]``, in
        pixel-shuffle layout, is added at the end.

        The mixture is formed at low resolution, phase by phase, in strips of ``rows``
        rows (the candidates of a strip stay in cache); one pixel shuffle at the end
        puts each phase at its output position.
        """
        b, c, h, w = x_lr_hat.shape
        f = self.features(x_lr_hat, s)
        weights = self.kernel_weights(f)
        x_padded = F.pad(x_lr_hat, [self.taps // 2] * 4, mode="replicate")
        strips = []
        for top in range(0, h, rows):
            bottom = min(h, top + rows)
            candidates = self._candidates(x_padded[:, :, top : bottom + self.taps - 1])
            strips.append((candidates * weights[:, None, :, :, top:bottom]).sum(dim=2))
        mixed = torch.cat(strips, dim=-2).reshape(b, c * self.scale * self.scale, h, w)
        if self.detail is not None:
            mixed = mixed + self.detail(f)  # channel c*s*s + phase, as pixel_shuffle reads it
        if residual is not None:
            mixed = mixed + residual
        return F.pixel_shuffle(mixed, self.scale)
