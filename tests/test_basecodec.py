"""dualcodec.basecodec: settings validation and real x264 / x265 / SVT-AV1 round trips."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from dualcodec.basecodec import (
    BaseCodecSettings,
    BaseDecoder,
    BaseEncoder,
    Planes,
    VideoSignal,
    colour_of,
    frame_from_planes,
    max_qp,
    planes_from_frame,
    planes_from_tensors,
    planes_to_tensors,
    X264_BANNER_UUID,
    roundtrip,
    without_x264_banner,
)
from dualcodec.errors import DualcodecError
from helpers import psnr, synthetic_frames, write_y4m

CODECS = ["h264", "hevc", "av1"]


def _planes(settings: BaseCodecSettings, count: int = 3, size: int = 64, seed: int = 0) -> list[Planes]:
    """Smooth synthetic 4:2:0 frames at the settings' bit depth (converted by PyAV)."""
    return synthetic_frames(size, size, count, seed=seed, noise=2.0, pix_fmt=settings.pix_fmt)


def _av_planes(frame) -> list[np.ndarray]:
    """The planes of a PyAV 4:2:0 frame, read from its buffers with numpy."""
    dtype = np.dtype("<u2") if frame.format.name == "yuv420p10le" else np.dtype(np.uint8)
    return [np.frombuffer(p, dtype=dtype).reshape(-1, p.line_size // dtype.itemsize)[: p.height, : p.width]
            for p in frame.planes[:3]]


def _luma_psnr(a: list[Planes], b: list[Planes], peak: float = 255.0) -> float:
    return min(psnr(p.y, q.y, peak) for p, q in zip(a, b))


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip_smooth_frames(codec):
    settings = BaseCodecSettings(codec=codec, qp=27)
    frames = _planes(settings)
    decoded, sizes = roundtrip(settings, frames)
    assert len(decoded) == len(frames) == len(sizes)
    assert all(isinstance(s, int) and s > 0 for s in sizes)
    for p, q in zip(frames, decoded):
        assert q.y.shape == p.y.shape == (64, 64)
        assert q.u.shape == q.v.shape == (32, 32)
        assert q.y.dtype == np.uint8
    assert 30.0 < _luma_psnr(frames, decoded) < 60.0  # lossy, but good on smooth content
    assert min(psnr(p.u, q.u) for p, q in zip(frames, decoded)) > 30.0


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip_keeps_display_order(codec):
    # Clearly different frames: each decoded frame must be closest to its own source.
    settings = BaseCodecSettings(codec=codec, qp=27)
    frames = _planes(settings, count=4)
    for i, p in enumerate(frames):
        p.y[:] = np.clip(p.y.astype(int) + 25 * i - 40, 16, 235).astype(np.uint8)
    decoded, _ = roundtrip(settings, frames)
    means = [float(q.y.mean()) for q in decoded]
    expected = [float(p.y.mean()) for p in frames]
    assert np.allclose(means, expected, atol=3.0)


@pytest.mark.parametrize("codec", CODECS)
def test_lower_qp_costs_more_bytes_and_gives_higher_quality(codec):
    fine = BaseCodecSettings(codec=codec, qp=20)
    coarse = BaseCodecSettings(codec=codec, qp=45)
    frames = _planes(fine)
    dec_fine, sizes_fine = roundtrip(fine, frames)
    dec_coarse, sizes_coarse = roundtrip(coarse, frames)
    assert sum(sizes_fine) > sum(sizes_coarse)
    assert _luma_psnr(frames, dec_fine) > _luma_psnr(frames, dec_coarse)


@pytest.mark.parametrize("codec", ["h264", "av1"])
def test_crf_path(codec):
    low = BaseCodecSettings(codec=codec, qp=None, crf=18)
    high = BaseCodecSettings(codec=codec, qp=None, crf=45)
    assert "crf" in low.encoder_options and "qp" not in low.encoder_options
    frames = _planes(low, count=2)
    decoded, sizes = roundtrip(low, frames)
    assert len(decoded) == 2 and all(s > 0 for s in sizes)
    assert _luma_psnr(frames, decoded) > 30.0
    _, sizes_high = roundtrip(high, frames)
    assert sum(sizes) > sum(sizes_high)


def test_crf_path_hevc_options():
    settings = BaseCodecSettings(codec="hevc", qp=None, crf=28.5)
    assert "crf=28.5" in settings.encoder_options["x265-params"]
    decoded, sizes = roundtrip(settings, _planes(settings, count=1))
    assert len(decoded) == 1 and sizes[0] > 0


def test_10bit_h264():
    settings = BaseCodecSettings(codec="h264", qp=27, bit_depth=10)
    assert settings.pix_fmt == "yuv420p10le"
    frames = _planes(settings, count=2)
    assert frames[0].y.dtype == np.uint16
    assert frames[0].y.max() > 255  # really 10-bit code values, not 8-bit ones in 16-bit words
    decoded, sizes = roundtrip(settings, frames)
    assert all(s > 0 for s in sizes)
    assert decoded[0].y.dtype == np.uint16
    assert decoded[0].y.max() > 255 and decoded[0].y.max() <= 1023
    assert _luma_psnr(frames, decoded, peak=1023.0) > 35.0


def test_planes_tensor_round_trip_is_exact():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 256, (2, 1, 6, 8), generator=gen).float()
    uv = torch.randint(0, 256, (2, 2, 3, 4), generator=gen).float()
    fmt = BaseCodecSettings().yuv_format
    planes = planes_from_tensors(y, uv, fmt)
    assert len(planes) == 2 and planes[0].y.dtype == np.uint8
    assert (planes[1].width, planes[1].height) == (8, 6)
    y2, uv2 = planes_to_tensors(planes)
    assert torch.equal(y2, y) and torch.equal(uv2, uv)


def test_planes_from_tensors_rounds_and_clamps():
    fmt = BaseCodecSettings().yuv_format
    y = torch.tensor([[-5.0, 100.4], [100.6, 400.0]]).view(1, 1, 2, 2)
    uv = torch.full((1, 2, 1, 1), 128.2)
    planes = planes_from_tensors(y, uv, fmt)[0]
    assert planes.y.tolist() == [[0, 100], [101, 255]]
    assert planes.u.tolist() == [[128]] and planes.v.tolist() == [[128]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"codec": "vp9"}, "unknown base codec"),
        ({"codec": "h264", "qp": 64}, "qp 64 is out of range for h264 \\(0..63\\)"),  # 10-bit x264's top
        ({"codec": "hevc", "qp": 52}, "out of range"),
        ({"codec": "hevc", "qp": -1}, "out of range"),
        ({"codec": "av1", "qp": 64}, "out of range"),
        ({"codec": "h264", "qp": None, "crf": 64.0}, "out of range"),
        ({"codec": "h264", "qp": 30, "crf": 23.0}, "exactly one"),
        ({"codec": "h264", "qp": None, "crf": None}, "exactly one"),
        ({"bit_depth": 12}, "bit depth"),
        ({"gop": 0}, "gop"),
        ({"matrix": 4}, "colour matrix 4"),
        ({"matrix": 2}, "colour matrix 2"),
    ],
)
def test_invalid_settings_raise(kwargs, match):
    with pytest.raises(DualcodecError, match=match):
        BaseCodecSettings(**kwargs)


def test_the_quantiser_is_checked_at_the_frames_depth():
    # x264's 10-bit scale sits 12 higher (the README's --qp 44 at 10 bits, about 32 at 8):
    # 52-63 are real 10-bit quantisers, and past 51 at 8 bits, which x264 would take as 51.
    BaseCodecSettings(codec="h264", qp=54, bit_depth=10).check_quantiser()
    with pytest.raises(DualcodecError, match=r"qp 54 is out of range for 8-bit h264 \(0..51\)"):
        BaseCodecSettings(codec="h264", qp=54).check_quantiser()
    with pytest.raises(DualcodecError, match=r"crf 52.0 is out of range for 8-bit h264"):
        BaseCodecSettings(codec="h264", qp=None, crf=52.0).check_quantiser()
    BaseCodecSettings(codec="av1", qp=63, bit_depth=8).check_quantiser()
    assert [max_qp(c, d) for c in ("h264", "hevc", "av1") for d in (8, 10)] == [51, 63, 51, 51, 63, 63]


@pytest.mark.parametrize("kwargs, match", [({"colour": (9, 2)}, r"primaries and transfer \(9, 2\)"),
                                           ({"colour": (40, 18)}, r"primaries and transfer \(40, 18\)"),
                                           ({"aspect": Fraction(0)}, "aspect ratio must be positive")])
def test_invalid_signals_raise(kwargs, match):
    with pytest.raises(DualcodecError, match=match):
        VideoSignal(**kwargs)


def test_a_source_names_its_colour_or_gets_its_matrixs_standard():
    assert colour_of(9, 9, 18) == (9, 18)  # HLG
    assert colour_of(9, None, 2) == (9, 14) and colour_of(1, 2, 2) == (1, 1)  # unspecified: BT.2020, BT.709
    assert colour_of(6, 1, 99) == (1, 6)  # a transfer FFmpeg does not name: the standard's


def test_qp_range_edges_are_allowed():
    BaseCodecSettings(codec="h264", qp=0)
    BaseCodecSettings(codec="h264", qp=51)
    BaseCodecSettings(codec="av1", qp=63)


def test_encoder_options_carry_preset_and_gop():
    assert BaseCodecSettings(codec="h264", qp=30).encoder_options == {"preset": "medium", "qp": "30"}
    hevc = BaseCodecSettings(codec="hevc", qp=30, gop=16, preset="fast").encoder_options
    assert hevc["preset"] == "fast" and "keyint=16" in hevc["x265-params"] and "qp=30" in hevc["x265-params"]
    av1 = BaseCodecSettings(codec="av1", qp=40, gop=8).encoder_options
    assert av1["preset"] == "8" and av1["qp"] == "40" and av1["svtav1-params"] == "keyint=8"


def _x264_packets(settings: BaseCodecSettings, frames: list[Planes]) -> list:
    """The frames coded by a libx264 context of PyAV's, set up as BaseEncoder sets its own."""
    from fractions import Fraction

    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = frames[0].width, frames[0].height, settings.pix_fmt
    cc.time_base, cc.framerate, cc.gop_size = Fraction(1, 25), Fraction(25), settings.gop
    cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
    cc.options = settings.encoder_options
    packets = []
    for pts, planes in enumerate(frames):
        frame = frame_from_planes(planes, settings.pix_fmt)
        frame.pts, frame.time_base = pts, cc.time_base
        packets += cc.encode(frame)
    return packets + list(cc.encode(None))


def test_h264_packets_lose_x264s_banner_and_nothing_else():
    settings = BaseCodecSettings(codec="h264", qp=30, gop=4)
    frames = _planes(settings, count=6)
    encoder = BaseEncoder(settings, 64, 64)
    ours = [p for planes in frames for p in encoder.encode(planes)] + encoder.encode(None)
    theirs = _x264_packets(settings, frames)
    assert X264_BANNER_UUID in bytes(theirs[0])  # x264 writes it into the first packet
    assert not any(X264_BANNER_UUID in bytes(p) for p in ours)
    assert [bytes(p) for p in ours] == [without_x264_banner(bytes(p)) for p in theirs]
    assert 500 < theirs[0].size - ours[0].size < 800
    assert [(p.pts, p.dts, p.is_keyframe) for p in ours] == [(p.pts, p.dts, p.is_keyframe) for p in theirs]

    def decoded(packets):
        decoder = BaseDecoder("h264", 8)
        return [f for p in [*packets, None] for f in decoder.decode(p)]

    for a, b in zip(decoded(ours), decoded(theirs), strict=True):  # the pictures are the same
        assert all(np.array_equal(x, y) for x, y in zip((a.y, a.u, a.v), (b.y, b.u, b.v)))


@pytest.mark.parametrize("data", [
    b"",
    b"\x00\x00\x01\x65" + X264_BANNER_UUID,  # the UUID inside a slice, not an SEI
    b"\x00\x00\x01\x06\x05\x15" + X264_BANNER_UUID + b"abcd\x80" + b"\x00\x00\x01\x65xyz",  # a wrong size
    b"\x00\x00\x01\x06\x05\x14" + X264_BANNER_UUID + b"abcd" + b"\x01\x01\x00\x80",  # a second message follows
])
def test_other_data_is_left_as_it_is(data):
    assert without_x264_banner(data) == data


def test_only_the_banners_nal_unit_goes():
    banner = b"\x00\x00\x00\x01\x06\x05\x14" + X264_BANNER_UUID + b"abcd\x80"
    slice_ = b"\x00\x00\x01\x65\x88\x84"
    assert without_x264_banner(banner + slice_) == slice_
    assert without_x264_banner(slice_ + banner + slice_) == slice_ + slice_


def test_encoder_rejects_odd_size():
    with pytest.raises(DualcodecError, match="even"):
        BaseEncoder(BaseCodecSettings(), 33, 32)


@pytest.mark.parametrize("codec, too_small, smallest", [("hevc", (16, 14), (16, 16)), ("av1", (24, 64), (32, 4)),
                                                        ("h264", None, (2, 2))])
def test_smallest_base_layer_per_codec(codec, too_small, smallest):
    settings = BaseCodecSettings(codec=codec, qp=30)
    if too_small is not None:
        with pytest.raises(DualcodecError, match=f"at least {smallest[0]}x{smallest[1]}"):
            BaseEncoder(settings, *too_small)
    w, h = smallest
    planes = Planes(np.full((h, w), 100, np.uint8), np.full((h // 2, w // 2), 128, np.uint8),
                    np.full((h // 2, w // 2), 128, np.uint8))
    decoded, sizes = roundtrip(settings, [planes])
    assert decoded[0].y.shape == (h, w) and sizes[0] > 0


def _encoded_frames(settings: BaseCodecSettings, count: int = 2) -> list:
    """PyAV frames of the settings' own encoder and decoder (the stream's flags and all)."""
    encoder = BaseEncoder(settings, 64, 64)
    packets = []
    for planes in _planes(settings, count=count):
        packets += encoder.encode(planes)
    packets += encoder.encode(None)
    assert len(packets) == count
    decoder = BaseDecoder(settings.codec, settings.bit_depth)
    frames = [f for p in packets for f in decoder.codec_context.decode(p)]
    return frames + list(decoder.codec_context.decode(None))


@pytest.mark.parametrize("full_range, flag", [(False, 1), (True, 2)])
def test_encoder_writes_the_range_flag(full_range, flag):
    import av

    settings = BaseCodecSettings(codec="h264", qp=30, full_range=full_range)
    frames = _encoded_frames(settings)
    assert len(frames) == 2
    frame = frames[0]
    assert isinstance(frame, av.VideoFrame)
    assert frame.color_range == flag
    assert frame.colorspace == 1  # the default: BT.709 signalled in the stream
    assert frame.format.name == ("yuvj420p" if full_range else "yuv420p")  # FFmpeg's name for full range


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("matrix, primaries, transfer, bit_depth", [
    (1, 1, 1, 8), (5, 5, 6, 8), (6, 6, 6, 8), (9, 9, 14, 10)])
def test_encoder_writes_the_colour_description(codec, matrix, primaries, transfer, bit_depth):
    # The planes' matrix, with the primaries and transfer of its standard (ITU-T H.273).
    settings = BaseCodecSettings(codec=codec, qp=40, matrix=matrix, bit_depth=bit_depth)
    frame = _encoded_frames(settings, count=1)[0]
    assert (frame.colorspace, frame.color_primaries, frame.color_trc) == (matrix, primaries, transfer)


def test_decoder_returns_full_range_planes_as_they_are():
    settings = BaseCodecSettings(codec="h264", qp=0, preset="ultrafast", full_range=True)
    frames = _planes(settings, count=1)
    frames[0].y[:4] = 0  # below limited-range black: kept, not clipped or rescaled
    frames[0].y[4:8] = 255
    decoded, _ = roundtrip(settings, frames)
    assert np.array_equal(decoded[0].y, frames[0].y)  # QP 0 on x264 is lossless


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv420p10le"])
@pytest.mark.parametrize("size", [(8, 6), (37, 29)])
def test_frame_from_planes_and_back(tmp_path, pix_fmt, size):
    planes = synthetic_frames(*size, count=1, noise=30.0, pix_fmt=pix_fmt)[0]
    frame = frame_from_planes(planes, pix_fmt)
    assert (frame.width, frame.height, frame.format.name) == (*size, pix_fmt)
    for got, expected in zip(_av_planes(frame), (planes.y, planes.u, planes.v)):
        assert np.array_equal(got, expected)
    # The frame FFmpeg decodes from a y4m of the same planes (written by hand) ...
    with av.open(str(write_y4m(tmp_path / "f.y4m", [planes]))) as inp:
        decoded = next(inp.decode(video=0))
    # ... converts to the same picture, and reads back as the same planes.
    assert np.array_equal(frame.to_ndarray(format="rgb24", threads=1), decoded.to_ndarray(format="rgb24", threads=1))
    back = planes_from_frame(decoded)
    for got, expected in zip((back.y, back.u, back.v), (planes.y, planes.u, planes.v)):
        assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert back.u.shape == (-(-size[1] // 2), -(-size[0] // 2))


@pytest.mark.parametrize(
    "settings, level",
    [
        (dict(qp=32), 32),
        (dict(qp=None, crf=27.6), 28),
        (dict(qp=44, bit_depth=10), 32),  # x264's 10-bit scale sits 12 lower
        (dict(qp=5, bit_depth=10), 0),
        (dict(codec="hevc", qp=44, bit_depth=10), 44),  # x265's does not move
        (dict(codec="av1", qp=50), 50),
    ],
)
def test_the_level_is_the_quantiser_on_h264s_8_bit_scale(settings, level):
    assert BaseCodecSettings(**settings).level == level
