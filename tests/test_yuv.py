"""dualcodec.yuv: formats, R'G'B' <-> Y'CbCr code values (BT.709, BT.601), 4:2:0 planes,
the networks' unit scale and the matrix rule for unflagged video."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dualcodec.yuv import (
    BT601,
    BT601_625,
    BT709,
    BT2020,
    YUVFormat,
    matrix_for,
    planes_to_unit,
    quantize_planes,
    rgb_to_ycbcr,
    rgb_to_yuv420,
    unit_to_planes,
    ycbcr_matrix,
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

# The same for BT.601 (ITU-R BT.601 / SMPTE 170M 100% colour bars).
BT601_LIMITED_8 = {
    "white": ((1, 1, 1), (235, 128, 128)),
    "black": ((0, 0, 0), (16, 128, 128)),
    "red": ((1, 0, 0), (81, 90, 240)),
    "green": ((0, 1, 0), (145, 54, 34)),
    "blue": ((0, 0, 1), (41, 240, 110)),
    "yellow": ((1, 1, 0), (210, 16, 146)),
    "cyan": ((0, 1, 1), (170, 166, 16)),
    "magenta": ((1, 0, 1), (106, 202, 222)),
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


def test_the_default_matrix_is_bt709():
    assert LIMITED_8.matrix == BT709 == 1


@pytest.mark.parametrize("matrix", [BT601, BT601_625])
@pytest.mark.parametrize("name", sorted(BT601_LIMITED_8))
def test_bt601_limited_range_8bit_code_values(name, matrix):
    rgb, expected = BT601_LIMITED_8[name]
    ycc = rgb_to_ycbcr(_pixel(rgb), YUVFormat(8, False, matrix)).view(3)
    assert tuple(int(v) for v in ycc.round()) == expected


def test_bt601_and_bt2020_matrix_rows():
    for matrix, (kr, kb) in ((BT601, (0.299, 0.114)), (BT2020, (0.2627, 0.0593))):
        m, offset = ycbcr_matrix(YUVFormat(8, True, matrix))
        assert torch.allclose(m[0] / 255, torch.tensor([kr, 1 - kr - kb, kb], dtype=torch.float64), atol=1e-12)
        # Cb is (B' - Y') / (2 (1 - Kb)), Cr is (R' - Y') / (2 (1 - Kr)): +0.5 at pure blue / red.
        assert m[1, 2].item() / 255 == pytest.approx(0.5) and m[2, 0].item() / 255 == pytest.approx(0.5)
        assert torch.allclose(m[1:].sum(dim=1), torch.zeros(2, dtype=torch.float64), atol=1e-12)  # grey: no chroma
        assert offset.tolist() == [0.0, 128.0, 128.0]


def test_bt601_matches_swscale():
    """swscale's RGB -> yuv444p (its defaults: BT.601, limited range) agrees within one code value."""
    import av

    rgb = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv444p")
    theirs = np.stack([np.frombuffer(p, np.uint8).reshape(16, -1)[:, :24] for p in frame.planes]).astype(int)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255
    ours = rgb_to_ycbcr(x, YUVFormat(8, False, BT601))[0].round().numpy().astype(int)
    assert np.abs(ours - theirs).max() <= 1
    bt709 = rgb_to_ycbcr(x, LIMITED_8)[0].round().numpy().astype(int)
    assert np.abs(bt709 - theirs).max() > 5  # the matrix matters


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
    with pytest.raises(ValueError, match="matrix 4"):
        YUVFormat(matrix=4)  # FCC: not supported
    assert YUVFormat(10, True, BT2020).matrix == 9


@pytest.mark.parametrize("flagged", [BT709, BT601_625, BT601, BT2020])
@pytest.mark.parametrize("size", [(320, 240), (720, 576), (1280, 720), (3840, 2160)])
def test_matrix_for_keeps_a_flagged_matrix(flagged, size):
    assert matrix_for(flagged, *size) == flagged


@pytest.mark.parametrize("flagged", [None, 2])  # absent, or flagged "unspecified"
@pytest.mark.parametrize("size, expected", [
    ((320, 240), BT601), ((640, 480), BT601), ((720, 480), BT601), ((720, 576), BT601), ((1024, 576), BT601),
    ((1280, 720), BT709), ((1920, 1080), BT709), ((1024, 768), BT709), ((720, 577), BT709)])
def test_matrix_for_unflagged_video_follows_the_size(flagged, size, expected):
    assert matrix_for(flagged, *size) == expected


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


# The networks' unit scale ------------------------------------------------------------------

UNIT_FORMATS = [YUVFormat(8, False), YUVFormat(8, True), YUVFormat(10, False), YUVFormat(10, True)]


def _unit(y_codes, uv_codes, fmt):
    y = torch.tensor(y_codes, dtype=torch.float64).view(1, 1, 1, -1)
    uv = torch.tensor(uv_codes, dtype=torch.float64).view(1, 1, 1, -1).repeat(1, 2, 1, 1)
    return planes_to_unit(y, uv, fmt)


@pytest.mark.parametrize("fmt, black, white, grey, c_low, c_high", [
    (YUVFormat(8, False), 16, 235, 128, 16, 240),
    (YUVFormat(8, True), 0, 255, 128, 0.5, 255.5),  # full-range chroma spans 255 around 128
    (YUVFormat(10, False), 64, 940, 512, 64, 960),
    (YUVFormat(10, True), 0, 1023, 512, 0.5, 1023.5),
], ids=lambda v: f"{v.bit_depth}bit-{v.range_name}" if isinstance(v, YUVFormat) else None)
def test_planes_to_unit_maps_black_white_and_grey(fmt, black, white, grey, c_low, c_high):
    y, uv = _unit([black, white, grey], [grey, c_low, c_high], fmt)
    assert torch.allclose(y.view(-1), torch.tensor([0.0, 1.0, (grey - black) / (white - black)], dtype=torch.float64))
    assert torch.allclose(uv[0, 0].view(-1), torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64), atol=1e-12)
    assert torch.equal(uv[0, 0], uv[0, 1])  # Cb and Cr alike


def test_planes_to_unit_agrees_across_bit_depths():
    # The same colour at 8 and 10 bits (10-bit code = 4 x 8-bit code, limited range) has one unit value.
    codes = [16, 60, 128, 200, 235]
    a = _unit(codes, codes, YUVFormat(8, False))
    b = _unit([4 * c for c in codes], [4 * c for c in codes], YUVFormat(10, False))
    assert all(torch.allclose(p, q, atol=1e-12) for p, q in zip(a, b))


def test_planes_to_unit_keeps_values_outside_the_nominal_range():
    y, uv = _unit([0, 255, 247], [0, 255, 250], YUVFormat(8, False))  # footroom and headroom
    assert y.view(-1).tolist() == pytest.approx([-16 / 219, 239 / 219, 231 / 219])
    assert uv[0, 0].view(-1).tolist() == pytest.approx([-128 / 224 + 0.5, 127 / 224 + 0.5, 122 / 224 + 0.5])
    assert y.min() < 0 and y.max() > 1 and uv.min() < 0 and uv.max() > 1  # nothing clipped
    y10, _ = _unit([0, 1023], [512, 512], YUVFormat(10, False))
    assert y10.view(-1).tolist() == pytest.approx([-64 / 876, 959 / 876])


@pytest.mark.parametrize("fmt", UNIT_FORMATS, ids=lambda f: f"{f.bit_depth}bit-{f.range_name}")
def test_unit_to_planes_inverts_planes_to_unit_for_every_code_value(fmt):
    codes = torch.arange(fmt.max_code + 1, dtype=torch.float64)
    y, uv = codes.view(1, 1, 1, -1), codes.view(1, 1, 1, -1).repeat(1, 2, 1, 1)
    y_back, uv_back = unit_to_planes(*planes_to_unit(y, uv, fmt), fmt)
    assert torch.allclose(y_back, y, atol=1e-9) and torch.allclose(uv_back, uv, atol=1e-9)
    assert torch.equal(y_back.round(), y) and torch.equal(uv_back.round(), uv)
    # float32, as the networks run: still exact after rounding.
    y32, uv32 = unit_to_planes(*planes_to_unit(y.float(), uv.float(), fmt), fmt)
    assert torch.equal(y32.round(), y.float()) and torch.equal(uv32.round(), uv.float())


def test_unit_to_planes_does_not_round_or_clip():
    fmt = YUVFormat(8, False)
    y, uv = unit_to_planes(torch.tensor([-0.5, 0.001, 1.5]).view(1, 1, 1, 3),
                           torch.tensor([-0.25, 0.5, 1.25]).view(1, 1, 1, 3).repeat(1, 2, 1, 1), fmt)
    assert y.view(-1).tolist() == pytest.approx([16 - 109.5, 16.219, 16 + 328.5])
    assert uv[0, 1].view(-1).tolist() == pytest.approx([128 - 168.0, 128.0, 128 + 168.0])
