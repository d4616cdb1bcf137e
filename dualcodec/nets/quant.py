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

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, self.step, self.zero_point, 0, LEVELS - 1)

    def _weight(self, weight: torch.Tensor) -> torch.Tensor:
        w_step = (weight.detach().abs().amax(dim=(1, 2, 3)) / WEIGHT_MAX).clamp_min(1e-12)
        return torch.fake_quantize_per_channel_affine(weight, w_step, torch.zeros_like(w_step, dtype=torch.int32),
                                                      0, -WEIGHT_MAX, WEIGHT_MAX)

    def forward(self, x: torch.Tensor, parts: list[int] | None = None) -> "torch.Tensor | list[torch.Tensor]":
        """The convolution, or with ``parts`` its outputs in parts (:func:`conv_parts`):
        each part's weights are quantised on their own (per channel, so the values are the
        same), so OpenVINO sees the pattern it makes an int8 convolution of."""
        quantise = None
        if self.step is not None:
            x, quantise = self._input(x), self._weight
        if parts is not None:
            return _sliced(self.conv, x, parts, quantise)
        weight = self.conv.weight if quantise is None else quantise(self.conv.weight)
        return F.conv2d(x, weight, self.conv.bias, self.conv.stride, self.conv.padding)


def _sliced(conv: nn.Conv2d, x: torch.Tensor, parts: list[int], quantise=None) -> list[torch.Tensor]:
    outputs, start = [], 0
    for size in parts:
        weight = conv.weight[start : start + size]
        bias = None if conv.bias is None else conv.bias[start : start + size]
        outputs.append(F.conv2d(x, weight if quantise is None else quantise(weight), bias, conv.stride, conv.padding))
        start += size
    return outputs


def conv_parts(conv: "nn.Conv2d | QuantConv2d", x: torch.Tensor, parts: list[int]) -> list[torch.Tensor]:
    """``conv(x)`` in parts of ``parts`` output channels, each the convolution of its slice
    of the weights: a compiled graph then runs one convolution per part and needs no split
    node, which OpenVINO runs in a slow reference kernel. A :class:`QuantConv2d` is called
    (its calibration hooks see the input)."""
    if isinstance(conv, QuantConv2d):
        return conv(x, parts)
    return _sliced(conv, x, parts)


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
