"""Side-stream transforms: analysis ``g_a`` (encoder only) and synthesis ``g_s``.

The side stream is an enhancement layer: it codes what the upsampled base layer lacks.
``g_a`` sees, on the base layer's grid (full-resolution inputs folded in by
``pixel_unshuffle(s)``, written ``u(.)``), the original ``x``, the *residual*
``x - up(x_lr_hat)`` against the bicubic upsampling of the decoded base, and the decoded
base ``x_lr_hat`` itself (the encoder runs the decoder's loop), so its bits go to what
the base layer lost. The caller hands over ``u(x)`` and ``u(up(x_lr_hat))``, which it
computes with no shuffle (:func:`~dualcodec.nets.common.to_444_folded`,
:func:`~dualcodec.nets.common.bicubic_up_folded`)::

    g_a: [u(x), u(x) - u(up(x_lr_hat))] --+
         x_lr_hat ------------------------+--cat--(conv/2) x log2(stride)--conv--> w [B, M, h/stride, w/stride]
    g_s: w_hat --(conv, pixel_shuffle 2) x log2(stride)--conv--> s [B, C_s, h, w], r_y [B, s^2, h, w], r_uv [B, 2 s^2, h, w]

``r = [r_y ; r_uv]`` is the enhancement residual (luma's phases, then chroma's on luma's
grid; the last convolution computes each part on its own, :func:`~dualcodec.nets.quant.conv_parts`):
``pixel_shuffle(s)`` puts it at full resolution, where
it is added on the upsampled base (the skip path: the latents reach the output through
three layers). ``s`` enters the upsampler's feature network beside the decoded base,
where it steers the per-pixel filter weights and the per-pixel detail term: that part of
the synthesis is conditioned on the base layer.
"""

from __future__ import annotations

import torch
from torch import nn

from dualcodec.nets.common import Normalize, conv3x3
from dualcodec.nets.quant import conv_parts

RESIDUAL_STD = 0.05  # typical size of the residual on the unit scale: the input's scaling


def _stages(stride: int) -> int:
    stages = stride.bit_length() - 1
    if stride < 2 or 1 << stages != stride:
        raise ValueError(f"side stride must be a power of two >= 2, got {stride}")
    return stages


class SideAnalysis(nn.Module):
    def __init__(self, scale: int, latent_channels: int, width: int = 32, stride: int = 4) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.normalize_folded = Normalize(scale)
        layers: list[nn.Module] = []
        c = 6 * scale * scale + 3
        for _ in range(_stages(stride)):
            layers += [conv3x3(c, width, stride=2), nn.LeakyReLU(0.1)]
            c = width
        layers.append(conv3x3(width, latent_channels))
        self.body = nn.Sequential(*layers)

    def forward(self, x_folded: torch.Tensor, x_up_folded: torch.Tensor, x_lr_hat: torch.Tensor) -> torch.Tensor:
        """``u(x)`` and ``u(up(x_lr_hat))`` (the upsampled decoded base) ``[B,3s^2,h,w]``,
        ``x_lr_hat`` ``[B,3,h,w]``: Y, Cb, Cr on the unit scale, h and w divisible by the stride."""
        residual = (x_folded - x_up_folded) / RESIDUAL_STD
        return self.body(torch.cat([self.normalize_folded(x_folded), residual, self.normalize(x_lr_hat)], dim=1))


class SideSynthesis(nn.Module):
    def __init__(self, latent_channels: int, out_channels: int, width: int = 64, stride: int = 4,
                 residual_channels: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = latent_channels
        for _ in range(_stages(stride)):
            layers += [conv3x3(c, width), nn.LeakyReLU(0.1), nn.PixelShuffle(2)]
            c = width // 4
        layers.append(conv3x3(c, out_channels + residual_channels))
        self.body = nn.Sequential(*layers)
        self.out_channels = out_channels
        self.residual_channels = residual_channels
        with torch.no_grad():  # the residual starts at zero: an untrained model is the upsampler alone
            self.body[-1].weight[out_channels:] = 0
            self.body[-1].bias[out_channels:] = 0

    def forward(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``w_hat`` ``[B,M,h/stride,w/stride]`` to side features ``s`` ``[B,C_s,h,w]`` and the
        residual's luma and chroma phases ``r_y`` ``[B,s^2,h,w]``, ``r_uv`` ``[B,2 s^2,h,w]``
        (``None`` without a residual)."""
        if not self.residual_channels:
            return self.body(w_hat), None, None
        luma = self.residual_channels // 3
        s, r_y, r_uv = conv_parts(self.body[-1], self.body[:-1](w_hat), [self.out_channels, luma, 2 * luma])
        return s, r_y, r_uv
