"""Fake quantisation for int8 decoder graphs: a convolution that sees int8 weights and an
8-bit input.

:class:`QuantConv2d` wraps an ``nn.Conv2d``. Once calibrated, its input is quantised
per tensor to 256 levels over the calibrated range (``x_q = s (clamp(round(x / s) + z,
0, 255) - z)``, step ``s``, integer zero point ``z``) and its weights per output channel,
symmetric, to -127..127 (the step from each channel's largest weight). It is written
with torch's ``fake_quantize_per_*_affine``, which OpenVINO's converter turns into
FakeQuantize nodes and its CPU plugin into int8 convolutions, so the traced graph runs
the arithmetic that torch simulates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 256  # the input's 8 bits
WEIGHT_MAX = 127  # symmetric int8 weights


class QuantConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.step: float | None = None  # None until calibrated: the plain convolution
        self.zero_point = 0

    def calibrate(self, low: float, high: float) -> None:
        """Quantise the input over ``[low, high]`` (widened to hold 0) from now on."""
        low, high = min(low, 0.0), max(high, 0.0)
        self.step = max(high - low, 1e-6) / (LEVELS - 1)
        self.zero_point = int(round(-low / self.step))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step is None:
            return self.conv(x)
        weight = self.conv.weight
        w_step = (weight.detach().abs().amax(dim=(1, 2, 3)) / WEIGHT_MAX).clamp_min(1e-12)
        x = torch.fake_quantize_per_tensor_affine(x, self.step, self.zero_point, 0, LEVELS - 1)
        weight = torch.fake_quantize_per_channel_affine(weight, w_step, torch.zeros_like(w_step, dtype=torch.int32),
                                                        0, -WEIGHT_MAX, WEIGHT_MAX)
        return F.conv2d(x, weight, self.conv.bias, self.conv.stride, self.conv.padding)


def quantise_convs(module: nn.Module, names: list[str]) -> None:
    """Replace the ``nn.Conv2d`` submodules of ``module`` at the dotted ``names`` (e.g.
    ``upsampler.body.0``) by uncalibrated :class:`QuantConv2d` wrappers."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        conv = parent[int(child)] if child.isdigit() else getattr(parent, child)
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"{name} is a {conv.__class__.__name__}, not a Conv2d")
        if child.isdigit():
            parent[int(child)] = QuantConv2d(conv)
        else:
            setattr(parent, child, QuantConv2d(conv))
