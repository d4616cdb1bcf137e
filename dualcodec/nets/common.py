"""Small pieces shared by the networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    """Centre and scale Y, Cb, Cr on the unit scale of :func:`dualcodec.yuv.planes_to_unit`
    (the per-channel statistics of natural images).

    Every network starts with this, so callers hand over plain plane values.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.45, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.26, 0.07, 0.07]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom and right edges so H and W divide by ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def bicubic_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downsampling by an integer factor (the baseline's downsampler)."""
    return F.interpolate(x, scale_factor=1.0 / scale, mode="bicubic", antialias=True, align_corners=False)


def bicubic_up(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by an integer factor (the baseline's upsampler)."""
    return F.interpolate(x, scale_factor=float(scale), mode="bicubic", align_corners=False)


def to_444(y: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """4:2:0 planes ``[B,1,H,W]``, ``[B,2,H/2,W/2]`` to ``[B,3,H,W]``: chroma upsampled
    bilinearly (centre siting), for networks that see the three channels together."""
    return torch.cat([y, F.interpolate(uv, size=y.shape[-2:], mode="bilinear", align_corners=False)], dim=1)


def from_444(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B,3,H,W]`` back to 4:2:0 planes: chroma averaged over each 2x2 block (centre siting)."""
    return x[:, :1], F.avg_pool2d(x[:, 1:], 2)
