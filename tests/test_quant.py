"""dualcodec.nets.quant: fake-quantised convolutions for the int8 decoder graphs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dualcodec.nets.quant import LEVELS, QuantConv2d, conv_parts, quantise_convs


def _conv(seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(4, 6, 3, padding=1)


def test_an_uncalibrated_wrapper_is_the_convolution():
    conv = _conv()
    x = torch.randn(1, 4, 9, 7)
    assert torch.equal(QuantConv2d(conv)(x), conv(x))


def test_a_calibrated_wrapper_sees_256_input_levels_and_int8_weights():
    conv = _conv()
    wrapper = QuantConv2d(conv)
    x = torch.rand(1, 4, 9, 7) * 2 - 0.5  # -0.5 .. 1.5
    wrapper.calibrate(float(x.min()), float(x.max()))
    assert wrapper.zero_point == round(-float(x.min()) / wrapper.step)
    seen = {}
    original = torch.nn.functional.conv2d

    def spy(inp, weight, *args):
        seen["input"], seen["weight"] = inp, weight
        return original(inp, weight, *args)

    torch.nn.functional.conv2d = spy
    try:
        out = wrapper(x)
    finally:
        torch.nn.functional.conv2d = original
    levels = torch.round(seen["input"] / wrapper.step).unique()
    assert len(levels) <= LEVELS
    w_step = conv.weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    codes = seen["weight"] / w_step
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 127 + 1e-4
    assert (out - conv(x)).abs().max() < 0.05  # close to the fp32 convolution, not equal
    assert not torch.equal(out, conv(x))


def test_quantise_convs_replaces_the_named_convolutions_only():
    model = nn.Sequential(_conv(0), nn.ReLU(), nn.Sequential(_conv(1)))
    quantise_convs(model, ["0", "2.0"])
    assert isinstance(model[0], QuantConv2d) and isinstance(model[2][0], QuantConv2d)
    with pytest.raises(TypeError, match="1 is a ReLU, not a Conv2d"):
        quantise_convs(model, ["1"])


@pytest.mark.parametrize("kind", ["conv", "wrapper", "calibrated"])
def test_conv_parts_are_the_convolution_split_by_output_channels(kind):
    conv = _conv()
    x = torch.rand(1, 4, 9, 7)
    module = conv if kind == "conv" else QuantConv2d(conv)
    if kind == "calibrated":
        module.calibrate(0.0, 1.0)
    parts = conv_parts(module, x, [1, 2, 3])
    assert [p.shape[1] for p in parts] == [1, 2, 3]
    assert torch.allclose(torch.cat(parts, dim=1), module(x), atol=1e-6)


def test_conv_parts_of_a_wrapper_is_seen_by_its_calibration_hooks():
    wrapper = QuantConv2d(_conv())
    seen = []
    wrapper.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.rand(1, 4, 9, 7)
    conv_parts(wrapper, x, [2, 4])
    assert len(seen) == 1 and torch.equal(seen[0], x)
