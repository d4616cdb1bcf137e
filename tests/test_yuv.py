"""dualcodec.yuv: BT.709 R'G'B' <-> Y'CbCr code values and 4:2:0 planes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dualcodec.yuv import (
    YUVFormat,
    quantize_planes,
    rgb_to_ycbcr,
    rgb_to_yuv420,
    ycbcr_to_rgb,
    yuv420_to_rgb,
)

LIMITED_8 = YUVFormat(bit_depth=8, full_range=False)
FULL_8 = YUVFormat(bit_depth=8, full_range=True)

# R'G'B' in [0, 1] -> the BT.709 8-bit limited-range code values (rounded), the table
# every video engineer knows (e.g. ITU-R BT.709 colour bars).
BT709_LIMITED_8 = {
    "white": ((1, 1, 1), (235, 128, 128)),
    "black": ((0, 0, 0), (16, 128, 128)),
    "red": ((1, 0, 0), (63, 102, 240)),
    "green": ((0, 1, 0), (173, 42, 26)),
    "blue": ((0, 0, 1), (32, 240, 118)),
    "yellow": ((1, 1, 0), (219, 16, 138)),
    "cyan": ((0, 1, 1), (188, 154, 16)),
    "magenta": ((1, 0, 1), (78, 214, 230)),
}


def _pixel(rgb) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1)


def _random_rgb(b=2, h=12, w=10, seed=0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("fmt", [LIMITED_8, FULL_8, YUVFormat(10, False), YUVFormat(10, True), YUVFormat(16, True)],
                         ids=lambda f: f"{f.bit_depth}bit-{f.range_name}")
def test_rgb_ycbcr_round_trip_is_exact_without_rounding(fmt):
    x = _random_rgb()
    back = ycbcr_to_rgb(rgb_to_ycbcr(x, fmt), fmt)
    assert back.shape == x.shape
    assert torch.allclose(back, x, atol=1e-12)


def test_round_trip_float32_near_exact():
    x = _random_rgb().float()
    back = ycbcr_to_rgb(rgb_to_ycbcr(x, LIMITED_8), LIMITED_8)
    assert (back - x).abs().max() < 1e-5


@pytest.mark.parametrize("name", sorted(BT709_LIMITED_8))
def test_bt709_limited_range_8bit_code_values(name):
    rgb, expected = BT709_LIMITED_8[name]
    ycc = rgb_to_ycbcr(_pixel(rgb), LIMITED_8).view(3)
    assert tuple(int(v) for v in ycc.round()) == expected


def test_limited_range_white_and_black_are_exact_before_rounding():
    white = rgb_to_ycbcr(_pixel((1, 1, 1)), LIMITED_8).view(3)
    black = rgb_to_ycbcr(_pixel((0, 0, 0)), LIMITED_8).view(3)
    assert torch.allclose(white, torch.tensor([235.0, 128.0, 128.0], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(black, torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64), atol=1e-9)
    # Fully saturated primaries reach the chroma extremes 16 and 240 exactly.
    blue = rgb_to_ycbcr(_pixel((0, 0, 1)), LIMITED_8).view(3)
    red = rgb_to_ycbcr(_pixel((1, 0, 0)), LIMITED_8).view(3)
    assert blue[1].item() == pytest.approx(240.0)
    assert red[2].item() == pytest.approx(240.0)
    yellow = rgb_to_ycbcr(_pixel((1, 1, 0)), LIMITED_8).view(3)
    assert yellow[1].item() == pytest.approx(16.0)


def test_full_range_8bit():
    white = rgb_to_ycbcr(_pixel((1, 1, 1)), FULL_8).view(3)
    black = rgb_to_ycbcr(_pixel((0, 0, 0)), FULL_8).view(3)
    assert torch.allclose(white, torch.tensor([255.0, 128.0, 128.0], dtype=torch.float64))
    assert torch.allclose(black, torch.tensor([0.0, 128.0, 128.0], dtype=torch.float64))
    # H.273 full range: Cb = 255 * Pb + 128, so pure blue overshoots to 255.5 before clamping.
    blue = rgb_to_ycbcr(_pixel((0, 0, 1)), FULL_8).view(3)
    assert blue[0].item() == pytest.approx(255 * 0.0722)
    assert blue[1].item() == pytest.approx(255.5)
    y, uv = quantize_planes(blue[:1].view(1, 1, 1, 1), blue[1:].view(1, 2, 1, 1), FULL_8)
    assert uv.view(2)[0].item() == 255.0


@pytest.mark.parametrize("bit_depth, white_y, black_y, mid_c", [(10, 940, 64, 512), (16, 60160, 4096, 32768)])
def test_limited_range_higher_bit_depths_scale_the_8bit_values(bit_depth, white_y, black_y, mid_c):
    fmt = YUVFormat(bit_depth=bit_depth, full_range=False)
    white = rgb_to_ycbcr(_pixel((1, 1, 1)), fmt).view(3)
    black = rgb_to_ycbcr(_pixel((0, 0, 0)), fmt).view(3)
    assert white.tolist() == pytest.approx([white_y, mid_c, mid_c])
    assert black.tolist() == pytest.approx([black_y, mid_c, mid_c])


def test_full_range_16bit_white_is_max_code():
    fmt = YUVFormat(bit_depth=16, full_range=True)
    assert fmt.max_code == 65535
    white = rgb_to_ycbcr(_pixel((1, 1, 1)), fmt).view(3)
    assert white[0].item() == pytest.approx(65535.0)


def test_format_properties():
    assert LIMITED_8.max_code == 255 and LIMITED_8.range_name == "tv"
    assert FULL_8.range_name == "pc"
    assert YUVFormat(10).max_code == 1023
    with pytest.raises(ValueError):
        YUVFormat(bit_depth=12)


@pytest.mark.parametrize("h, w", [(2, 2), (8, 6), (30, 38)])
def test_yuv420_plane_shapes(h, w):
    x = _random_rgb(b=3, h=h, w=w).float()
    y, uv = rgb_to_yuv420(x, LIMITED_8)
    assert y.shape == (3, 1, h, w)
    assert uv.shape == (3, 2, h // 2, w // 2)


def test_yuv420_chroma_is_the_2x2_box_average_and_luma_is_untouched():
    x = _random_rgb(h=8, w=6)
    ycc = rgb_to_ycbcr(x, LIMITED_8)
    y, uv = rgb_to_yuv420(x, LIMITED_8)
    assert torch.equal(y, ycc[:, :1])
    manual = (ycc[:, 1:, 0::2, 0::2] + ycc[:, 1:, 0::2, 1::2] + ycc[:, 1:, 1::2, 0::2] + ycc[:, 1:, 1::2, 1::2]) / 4
    assert torch.allclose(uv, manual, atol=1e-12)


def test_yuv420_round_trip_of_flat_colour_is_exact():
    x = torch.empty(1, 3, 6, 8, dtype=torch.float64)
    x[:, 0], x[:, 1], x[:, 2] = 0.8, 0.3, 0.55
    back = yuv420_to_rgb(*rgb_to_yuv420(x, LIMITED_8), LIMITED_8)
    assert back.shape == x.shape
    assert torch.allclose(back, x, atol=1e-12)


def test_yuv420_round_trip_keeps_luma_exactly():
    # Chroma is subsampled, luma is not: the luma of the result is the input's luma
    # (up to float error), and smooth content comes back close in RGB too.
    x = F.interpolate(_random_rgb(h=4, w=4), size=(16, 16), mode="bilinear", align_corners=False)
    back = yuv420_to_rgb(*rgb_to_yuv420(x, LIMITED_8), LIMITED_8)
    luma_in = rgb_to_ycbcr(x, LIMITED_8)[:, 0]
    luma_out = rgb_to_ycbcr(back, LIMITED_8)[:, 0]
    assert torch.allclose(luma_out, luma_in, atol=1e-9)
    err = (back - x).abs()
    assert 0 < err.max() < 0.25 and err.mean() < 0.03  # chroma detail is lost, but not much


@pytest.mark.parametrize("h, w", [(7, 8), (8, 7), (5, 5)])
def test_odd_size_raises(h, w):
    with pytest.raises(ValueError, match="even"):
        rgb_to_yuv420(torch.rand(1, 3, h, w), LIMITED_8)


def test_quantize_planes_rounds_and_clamps():
    y = torch.tensor([-3.0, 0.4, 16.5, 300.0]).view(1, 1, 2, 2)
    uv = torch.tensor([-1.0, 127.6, 255.49, 1000.0]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    qy, quv = quantize_planes(y, uv, LIMITED_8)
    assert qy.view(-1).tolist() == [0.0, 0.0, 16.0, 255.0]  # round half to even: 16.5 -> 16
    assert quv[0, 0].view(-1).tolist() == [0.0, 128.0, 255.0, 255.0]
    qy10, _ = quantize_planes(y, uv, YUVFormat(10))
    assert qy10.view(-1)[-1].item() == 300.0
