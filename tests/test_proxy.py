"""dualcodec.proxy: the rho-domain rate estimate and the real-codec training layer."""

from __future__ import annotations

import pytest
import torch

from dualcodec.basecodec import BaseCodecSettings, planes_from_tensors, planes_to_tensors, roundtrip
from dualcodec.proxy import RealCodecLayer, block_dct, dct_matrix, rho_rate_estimate
from dualcodec.yuv import rgb_to_yuv420, yuv420_to_rgb

FMT = BaseCodecSettings().yuv_format


def _x_lr(b=2, size=32, seed=0, requires_grad=False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(b, 3, size // 4, size // 4, generator=gen),
                                             size=(size, size), mode="bicubic", align_corners=False)
    x = (0.1 + 0.8 * smooth.clamp(0, 1) + 0.02 * torch.randn(b, 3, size, size, generator=gen)).clamp(0, 1)
    return x.requires_grad_(requires_grad)


def test_dct_matrix_is_orthonormal():
    d = dct_matrix(8)
    assert torch.allclose(d @ d.T, torch.eye(8), atol=1e-6)


def test_block_dct_of_flat_plane_has_only_dc():
    plane = torch.full((1, 1, 16, 24), 10.0)
    coeffs = block_dct(plane)
    assert coeffs.shape == (1, 6, 8, 8)  # 2 x 3 blocks
    assert torch.allclose(coeffs[:, :, 0, 0], torch.full((1, 6), 80.0), atol=1e-4)  # 8 * mean
    ac = coeffs.clone()
    ac[:, :, 0, 0] = 0
    assert ac.abs().max() < 1e-4


def test_block_dct_pads_partial_blocks():
    assert block_dct(torch.rand(2, 2, 9, 17)).shape == (2, 2 * 2 * 3, 8, 8)


def test_rho_rate_grows_when_qp_drops():
    y, uv = rgb_to_yuv420(_x_lr(), FMT)
    rates = [rho_rate_estimate(y, uv, qp) for qp in (45, 38, 32, 27, 22)]
    for coarse, fine in zip(rates, rates[1:]):
        assert coarse.shape == (2,)
        assert (fine > coarse).all()


def test_rho_rate_grows_with_detail():
    flat = torch.full((1, 3, 32, 32), 0.5)
    busy = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    r_flat = rho_rate_estimate(*rgb_to_yuv420(flat, FMT), 32)
    r_busy = rho_rate_estimate(*rgb_to_yuv420(busy, FMT), 32)
    assert r_busy.item() > 10 * max(r_flat.item(), 1.0)


def test_rho_rate_is_differentiable():
    x = _x_lr(requires_grad=True)
    y, uv = rgb_to_yuv420(x, FMT)
    rate = rho_rate_estimate(y, uv, 30)
    rate.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    # Smoothing lowers the estimate: a descent step along -grad reduces the rate.
    with torch.no_grad():
        stepped = x - 1e-4 * x.grad / x.grad.abs().max()
        assert rho_rate_estimate(*rgb_to_yuv420(stepped, FMT), 30).sum() < rate.sum()


def test_real_codec_layer_forward_is_the_real_codec():
    layer = RealCodecLayer("h264", "medium", 32)
    x = _x_lr()
    out = layer(x)
    assert out.x_lr_hat.shape == x.shape and out.bits.shape == (2,)
    # The value is the real decoded frame.
    y, uv = rgb_to_yuv420(x, FMT)
    decoded, sizes = roundtrip(layer.settings, planes_from_tensors(y, uv, FMT))
    real = yuv420_to_rgb(*planes_to_tensors(decoded), FMT).clamp(0, 1)
    assert torch.allclose(out.x_lr_hat, real, atol=1e-5)
    # The bits add up to the real packet bits.
    assert out.bits.sum().item() == pytest.approx(8 * sum(sizes), rel=1e-5)
    assert (out.bits > 0).all()


def test_real_codec_layer_gradient_is_straight_through():
    layer = RealCodecLayer("h264", "medium", 32)
    x = _x_lr(requires_grad=True)
    out = layer(x)
    cotangent = torch.randn(out.x_lr_hat.shape, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(out.x_lr_hat, x, cotangent)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Exactly the gradient of the colour conversion and 4:2:0 round trip, without the codec.
    x2 = x.detach().clone().requires_grad_(True)
    proxy = yuv420_to_rgb(*rgb_to_yuv420(x2, FMT), FMT)
    (expected,) = torch.autograd.grad(proxy, x2, cotangent)
    assert torch.allclose(grad, expected, atol=1e-5)


def test_real_codec_layer_bits_carry_the_estimate_gradient():
    layer = RealCodecLayer("h264", "medium", 30)
    x = _x_lr(requires_grad=True)
    out = layer(x)
    out.bits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Per frame, the bits are the estimate rescaled by one factor for the batch.
    y, uv = rgb_to_yuv420(x.detach(), FMT)
    estimate = rho_rate_estimate(y, uv, 30)
    ratio = out.bits.detach() / estimate
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)


@pytest.mark.parametrize("codec", ["hevc", "av1"])
def test_real_codec_layer_other_codecs(codec):
    layer = RealCodecLayer(codec, "medium" if codec == "hevc" else "8", 32)
    out = layer(_x_lr(b=1))
    assert out.x_lr_hat.shape == (1, 3, 32, 32)
    assert out.bits.item() > 0
    assert (out.x_lr_hat - _x_lr(b=1)).abs().mean() < 0.05
