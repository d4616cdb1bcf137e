"""Learned downsampler: antialiased bicubic plus a bounded learned residual.

    y, uv (4:2:0) --bicubic(1/s), per plane--------------------------------+--> y_lr, uv_lr
      \\--to_444--Normalize--pixel_unshuffle(s)--conv x depth--tanh*bound--from_444--/

The residual starts at zero (the last convolution is zero-initialised), so training
starts from the bicubic baseline; the bound keeps it from pushing detail the base
codec would pay dearly for (unbounded residuals diverged in our calibration runs).
"""

from __future__ import annotations

import torch
from torch import nn

from dualcodec.nets.common import Normalize, bicubic_down, conv3x3, from_444, to_444


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

    def forward(self, y: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Planes on the unit scale, ``[B,1,H,W]`` and ``[B,2,H/2,W/2]`` (H, W divisible by 2 x scale)."""
        residual = self.bound * torch.tanh(self.body(self.unshuffle(self.normalize(to_444(y, uv)))))
        res_y, res_uv = from_444(residual)
        return bicubic_down(y, self.scale) + res_y, bicubic_down(uv, self.scale) + res_uv
