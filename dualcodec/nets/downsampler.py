"""Learned downsampler: antialiased bicubic plus a bounded learned residual.

    x [B,3,H,W] --bicubic(1/s)--------------------------------+--> x_lr [B,3,H/s,W/s]
      \\--Normalize--pixel_unshuffle(s)--conv x depth--tanh*bound--/

The residual starts at zero (the last convolution is zero-initialised), so training
starts from the bicubic baseline; the bound keeps it from pushing detail the base
codec would pay dearly for (unbounded residuals diverged in our calibration runs).
"""

from __future__ import annotations

import torch
from torch import nn

from dualcodec.nets.common import Normalize, bicubic_down, conv3x3


class LearnedDownsampler(nn.Module):
    def __init__(self, scale: int, width: int = 32, depth: int = 3, bound: float = 0.2) -> None:
        super().__init__()
        self.scale = scale
        self.bound = bound
        self.normalize = Normalize()
        self.unshuffle = nn.PixelUnshuffle(scale)
        layers: list[nn.Module] = [conv3x3(3 * scale * scale, width), nn.LeakyReLU(0.1)]
        for _ in range(depth - 2):
            layers += [conv3x3(width, width), nn.LeakyReLU(0.1)]
        last = conv3x3(width, 3)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B,3,H,W]`` in [0, 1], H and W divisible by the scale."""
        residual = self.bound * torch.tanh(self.body(self.unshuffle(self.normalize(x))))
        return bicubic_down(x, self.scale) + residual
