"""Small pieces shared by the networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    """Centre and scale images in [0, 1] (the per-channel statistics of natural images).

    Every network starts with this, so callers hand over plain pixel values.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.45, 0.44, 0.40]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.27, 0.26, 0.28]).view(1, 3, 1, 1), persistent=False)

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
