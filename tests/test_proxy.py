"""dualcodec.proxy: the rho-domain rate estimate and the real-codec training layer."""

from __future__ import annotations

import pytest
import torch

from dualcodec.basecodec import BaseCodecSettings, planes_from_tensors, planes_to_tensors, roundtrip
from dualcodec.proxy import RealCodecLayer, block_dct, dct_matrix, rho_rate_estimate
from dualcodec.yuv import planes_to_unit, rgb_to_yuv420, unit_to_planes

FMT = BaseCodecSettings().yuv_format


def _lr_planes(b=2, size=32, seed=0, requires_grad=False) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth, slightly noisy low-resolution planes on the unit scale (unrounded, as the
    downsampler hands them over): ``y`` ``[B,1,size,size]``, ``uv`` ``[B,2,size/2,size/2]``."""
    gen = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(b, 3, size // 4, size // 4, generator=gen),
                                             size=(size, size), mode="bicubic", align_corners=False)
    x = (0.1 + 0.8 * smooth.clamp(0, 1) + 0.02 * torch.randn(b, 3, size, size, generator=gen)).clamp(0, 1)
    y, uv = planes_to_unit(*rgb_to_yuv420(x, FMT), FMT)
    return y.requires_grad_(requires_grad), uv.requires_grad_(requires_grad)


def _code_values(b=2, size=32, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    return unit_to_planes(*_lr_planes(b, size, seed), FMT)


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
    y, uv = _code_values()
    rates = [rho_rate_estimate(y, uv, qp) for qp in (45, 38, 32, 27, 22)]
    for coarse, fine in zip(rates, rates[1:]):
        assert coarse.shape == (2,)
        assert (fine > coarse).all()


def test_rho_rate_grows_with_detail():
    gen = torch.Generator().manual_seed(0)
    flat = (torch.full((1, 1, 32, 32), 126.0), torch.full((1, 2, 16, 16), 128.0))
    busy = (16 + 219 * torch.rand(1, 1, 32, 32, generator=gen), 16 + 224 * torch.rand(1, 2, 16, 16, generator=gen))
    r_flat = rho_rate_estimate(*flat, 32)
    r_busy = rho_rate_estimate(*busy, 32)
    assert r_busy.item() > 10 * max(r_flat.item(), 1.0)


def test_rho_rate_is_differentiable():
    y_lr, uv_lr = _lr_planes(requires_grad=True)
    rate = rho_rate_estimate(*unit_to_planes(y_lr, uv_lr, FMT), 30)
    rate.sum().backward()
    for plane in (y_lr, uv_lr):
        assert plane.grad is not None and torch.isfinite(plane.grad).all()
        assert plane.grad.abs().sum() > 0
    # Smoothing lowers the estimate: a descent step along -grad reduces the rate.
    with torch.no_grad():
        step = max(y_lr.grad.abs().max(), uv_lr.grad.abs().max())
        stepped = (y_lr - 1e-4 * y_lr.grad / step, uv_lr - 1e-4 * uv_lr.grad / step)
        assert rho_rate_estimate(*unit_to_planes(*stepped, FMT), 30).sum() < rate.sum()


def test_real_codec_layer_forward_is_the_real_codec():
    layer = RealCodecLayer("h264", "medium", 32)
    y_lr, uv_lr = _lr_planes()
    out = layer(y_lr, uv_lr)
    assert out.y_lr_hat.shape == y_lr.shape and out.uv_lr_hat.shape == uv_lr.shape and out.bits.shape == (2,)
    # The value is the real decoded planes, on the unit scale.
    decoded, sizes = roundtrip(layer.settings, planes_from_tensors(*unit_to_planes(y_lr, uv_lr, FMT), FMT))
    real_y, real_uv = planes_to_unit(*planes_to_tensors(decoded), FMT)
    assert torch.allclose(out.y_lr_hat, real_y, atol=1e-6)
    assert torch.allclose(out.uv_lr_hat, real_uv, atol=1e-6)
    # ... integer 8-bit code values, close to the input but not equal to it (QP 32 is lossy).
    codes_y, codes_uv = unit_to_planes(out.y_lr_hat, out.uv_lr_hat, FMT)
    assert torch.allclose(codes_y, codes_y.round(), atol=1e-4) and torch.allclose(codes_uv, codes_uv.round(), atol=1e-4)
    assert 0 < (out.y_lr_hat - y_lr).abs().mean() < 0.05
    # The bits add up to the real packet bits.
    assert out.bits.sum().item() == pytest.approx(8 * sum(sizes), rel=1e-5)
    assert (out.bits > 0).all()


def test_real_codec_layer_gradient_is_straight_through():
    layer = RealCodecLayer("h264", "medium", 32)
    y_lr, uv_lr = _lr_planes(requires_grad=True)
    out = layer(y_lr, uv_lr)
    gen = torch.Generator().manual_seed(1)
    cot_y = torch.randn(out.y_lr_hat.shape, generator=gen)
    cot_uv = torch.randn(out.uv_lr_hat.shape, generator=gen)
    grad_y, grad_uv = torch.autograd.grad((out.y_lr_hat, out.uv_lr_hat), (y_lr, uv_lr), (cot_y, cot_uv))
    # The identity: rounding, clamping and the codec pass the gradient unchanged, plane by plane.
    assert torch.equal(grad_y, cot_y)
    assert torch.equal(grad_uv, cot_uv)


def test_real_codec_layer_bits_carry_the_estimate_gradient():
    layer = RealCodecLayer("h264", "medium", 30)
    y_lr, uv_lr = _lr_planes(requires_grad=True)
    out = layer(y_lr, uv_lr)
    out.bits.sum().backward()
    for plane in (y_lr, uv_lr):
        assert plane.grad is not None and torch.isfinite(plane.grad).all() and plane.grad.abs().sum() > 0
    # Per frame, the bits are the estimate rescaled by one factor for the batch.
    estimate = rho_rate_estimate(*unit_to_planes(y_lr.detach(), uv_lr.detach(), FMT), 30)
    ratio = out.bits.detach() / estimate
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)


@pytest.mark.parametrize("codec", ["hevc", "av1"])
def test_real_codec_layer_other_codecs(codec):
    layer = RealCodecLayer(codec, "medium" if codec == "hevc" else "8", 32)
    y_lr, uv_lr = _lr_planes(b=1)
    out = layer(y_lr, uv_lr)
    assert out.y_lr_hat.shape == (1, 1, 32, 32) and out.uv_lr_hat.shape == (1, 2, 16, 16)
    assert out.bits.item() > 0
    assert (out.y_lr_hat - y_lr).abs().mean() < 0.05
    assert (out.uv_lr_hat - uv_lr).abs().mean() < 0.05


def test_real_codec_layer_codes_clips_as_short_videos():
    from dualcodec.basecodec import BaseCodecSettings

    y_lr, uv_lr = _lr_planes(b=2)
    # two clips of three frames: a still shot, and its pictures in another order
    y = torch.cat([y_lr[:1].expand(3, -1, -1, -1), y_lr[[1, 0, 1]]])
    uv = torch.cat([uv_lr[:1].expand(3, -1, -1, -1), uv_lr[[1, 0, 1]]])
    out = RealCodecLayer("h264", "medium", 32, clip=3)(y, uv)
    expected_y, real = [], 0
    for start in (0, 3):
        decoded, sizes = roundtrip(BaseCodecSettings(codec="h264", qp=32, preset="medium", matrix=FMT.matrix),
                                   planes_from_tensors(*unit_to_planes(y[start:start + 3], uv[start:start + 3], FMT),
                                                       FMT), intra=False)
        expected_y.append(planes_to_unit(*planes_to_tensors(decoded), FMT)[0])
        real += 8 * sum(sizes)
    assert torch.allclose(out.y_lr_hat, torch.cat(expected_y), atol=1e-6)
    assert out.bits.sum().item() == pytest.approx(real, rel=1e-5)  # the batch's real bits (the estimate shares them out)
    # the still shot's predicted frames cost next to nothing: far fewer bits than pictures coded alone
    alone = RealCodecLayer("h264", "medium", 32)(y, uv)
    assert out.bits.sum() < 0.8 * alone.bits.sum()
