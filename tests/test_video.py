"""dualcodec.video: reading any video or image as 4:2:0 planes, writing y4m / PNG / MP4.

Every expectation here comes from PyAV (FFmpeg) or numpy directly, never from
dualcodec's own conversions.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image, ImageOps

from dualcodec.basecodec import Planes
from dualcodec.container import ContainerReader, Orientation
from dualcodec.errors import DualcodecError
from dualcodec.video import (
    Mp4Writer,
    PngDirWriter,
    VideoReader,
    Y4MWriter,
    is_pattern,
    open_writer,
    output_kind,
)
from dualcodec.yuv import YUVFormat
from helpers import image_planes, make_av_clip, psnr_yuv, shared_file, synthetic_frames, synthetic_rgb, to_planes, write_png, \
    write_y4m

BT709, BT601 = 1, 6
SD_8 = YUVFormat(bit_depth=8, full_range=False, matrix=BT601)  # what an unflagged SD stream reads as
IMAGE_8 = YUVFormat(bit_depth=8, full_range=True, matrix=BT601)  # what a PNG reads as (FFmpeg flags it full range)


def _av_planes(frame) -> Planes:
    """The 4:2:0 planes of a PyAV frame, read straight from its buffers with numpy."""
    dtype = np.dtype("<u2") if frame.format.name.endswith("p10le") else np.dtype(np.uint8)
    planes = [np.frombuffer(p, dtype=dtype).reshape(-1, p.line_size // dtype.itemsize)[: p.height, : p.width].copy()
              for p in frame.planes[:3]]
    return Planes(*planes)


def _av_decode(path) -> list:
    with av.open(str(path)) as inp:
        return list(inp.decode(video=0))


def _assert_same_planes(a: Planes, b: Planes) -> None:
    for name in ("y", "u", "v"):
        p, q = getattr(a, name), getattr(b, name)
        assert p.dtype == q.dtype and p.shape == q.shape, (name, p.dtype, q.dtype, p.shape, q.shape)
        assert np.array_equal(p, q), name


def _random_planes(width, height, count, seed=0, bits=8) -> list[Planes]:
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits == 8 else np.uint16
    cw, ch = -(-width // 2), -(-height // 2)
    return [Planes(*(rng.integers(0, 1 << bits, shape, dtype=dtype) for shape in ((height, width), (ch, cw), (ch, cw))))
            for _ in range(count)]


def _bt601_full_luma(rgb: np.ndarray) -> np.ndarray:
    """Y' of BT.601, full range, 8 bits, unrounded (the textbook formula)."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _bt601_limited_luma(rgb: np.ndarray) -> np.ndarray:
    """Y' of BT.601, limited range, 8 bits, unrounded (the textbook formula)."""
    return 16 + 219 * (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255


def _write_y4m_writer(path, frames, fmt, rate=Fraction(25), pix_fmt=None):
    writer = Y4MWriter(path, frames[0].width, frames[0].height, rate, fmt, pix_fmt)
    for planes in frames:
        writer.write(planes)
    writer.close()
    return path


# -- reading ----------------------------------------------------------------------------


def test_y4m_input_is_read_as_its_planes(tmp_path):
    frames = _random_planes(37, 29, 3) + synthetic_frames(37, 29, 1)  # odd size: chroma 19x15
    path = write_y4m(tmp_path / "in.y4m", frames, Fraction(30000, 1001))
    reader = VideoReader(path)
    assert (reader.info.width, reader.info.height) == (37, 29)
    assert reader.info.rate == Fraction(30000, 1001)
    assert not reader.info.has_audio and not reader.is_image
    assert reader.info.source_pix_fmt == "yuv420p" and not reader.info.converted
    assert reader.info.format == SD_8  # y4m flags no matrix: SD follows the size rule, BT.601
    back = list(reader.frames())
    assert len(back) == len(frames)
    assert back[0].u.shape == (15, 19)
    for a, b in zip(frames, back):
        _assert_same_planes(a, b)


def test_10bit_y4m_input_is_read_as_its_uint16_planes(tmp_path):
    frames = synthetic_frames(37, 29, 2, pix_fmt="yuv420p10le") + _random_planes(37, 29, 1, bits=10)
    assert frames[0].y.max() > 255  # real 10-bit code values
    path = write_y4m(tmp_path / "in10.y4m", frames)
    reader = VideoReader(path)
    assert reader.info.format.bit_depth == 10 and not reader.info.format.full_range
    assert reader.info.source_pix_fmt == "yuv420p10le" and not reader.info.converted
    back = list(reader.frames())
    assert len(back) == 3
    for a, b in zip(frames, back):
        assert b.y.dtype == np.uint16
        _assert_same_planes(a, b)


def test_standard_8bit_y4m_reads(tmp_path):
    # A plain 4:2:0 y4m as other tools write it (mid-grey luma, neutral chroma).
    w, h = 16, 8
    body = b"FRAME\n" + bytes([126]) * (w * h) + bytes([128]) * (w * h // 2)
    path = tmp_path / "grey.y4m"
    path.write_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n".encode() + body * 2)
    frames = list(VideoReader(path).frames())
    assert len(frames) == 2
    assert frames[0].y.shape == (h, w) and frames[0].u.shape == (h // 2, w // 2)
    assert (frames[0].y == 126).all() and (frames[0].u == 128).all() and (frames[0].v == 128).all()


def test_422_y4m_is_converted_once_by_swscale(tmp_path):
    # Not 4:2:0: converted as PyAV's reformat does by default, keeping range and matrix.
    w, h = 16, 8
    rng = np.random.default_rng(5)
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    u, v = (rng.integers(16, 241, (h, w // 2), dtype=np.uint8) for _ in range(2))
    path = tmp_path / "422.y4m"
    path.write_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C422\n".encode() + b"FRAME\n" + y.tobytes()
                     + u.tobytes() + v.tobytes())
    reader = VideoReader(path)
    assert reader.info.source_pix_fmt == "yuv422p" and reader.info.converted
    assert reader.info.format == SD_8
    (planes,) = reader.frames()
    (frame,) = _av_decode(path)
    _assert_same_planes(planes, _av_planes(frame.reformat(format="yuv420p")))
    assert np.array_equal(planes.y, y)  # 4:2:2 to 4:2:0 leaves luma alone


def test_raw_h264_input_reads():
    foreman = shared_file("video/foreman_352x288_300f_intra.264")
    reader = VideoReader(foreman)
    assert (reader.info.width, reader.info.height) == (352, 288)
    assert reader.info.rate == 25  # raw Annex B has no timing: FFmpeg's default
    frames = reader.frames()
    first = list(itertools.islice(frames, 3))
    frames.close()  # stop early: the file has 300 frames
    assert len(first) == 3
    assert all(f.y.shape == (288, 352) and f.u.shape == (144, 176) and f.y.dtype == np.uint8 for f in first)
    assert not np.array_equal(first[0].y, first[2].y)  # a moving sequence
    assert 40 < first[0].y.mean() < 220


def test_real_y4m_input_reads():
    cars = shared_file("video/cars_320x240_30f.y4m")
    reader = VideoReader(cars)
    assert (reader.info.width, reader.info.height, reader.info.rate) == (320, 240, 30)
    frames = reader.frames()
    first = next(frames)
    frames.close()
    assert first.y.shape == (240, 320) and first.u.shape == (120, 160)
    _assert_same_planes(first, _av_planes(next(iter(_av_decode(cars)))))


def test_mp4_input_reads_as_the_decoded_planes(tmp_path):
    path = make_av_clip(tmp_path / "clip.mp4", width=48, height=32, frames=4, audio=True)
    reader = VideoReader(path)
    assert (reader.info.width, reader.info.height) == (48, 32)
    assert reader.info.rate == 25 and reader.info.frames == 4 and reader.info.has_audio
    frames = list(reader.frames())
    assert len(frames) == 4
    for a, b in zip(frames, _av_decode(path)):
        _assert_same_planes(a, _av_planes(b))  # as decoded: no conversion
    expected = [to_planes(rgb) for rgb in synthetic_rgb(48, 32, 4, seed=1)]  # what make_av_clip encoded
    assert min(psnr_yuv(a, b) for a, b in zip(expected, frames)) > 30


@pytest.mark.parametrize("matrix, size, expected", [
    (6, (64, 48), 6),       # flagged BT.601 (525 lines)
    (5, (64, 48), 5),       # flagged BT.601 (625 lines)
    (1, (64, 48), 1),       # flagged BT.709 wins over the size rule
    (None, (64, 48), 6),    # unflagged SD: BT.601
    (None, (1280, 720), 1),  # unflagged HD: BT.709
])
def test_matrix_of_an_h264_source(tmp_path, matrix, size, expected):
    path = make_av_clip(tmp_path / "clip.mp4", width=size[0], height=size[1], frames=1, matrix=matrix)
    with av.open(str(path)) as inp:  # the flag really is (or is not) in the stream
        assert inp.streams.video[0].codec_context.colorspace == (2 if matrix is None else matrix)
    fmt = VideoReader(path).info.format
    assert fmt == YUVFormat(bit_depth=8, full_range=False, matrix=expected)


def test_image_input_is_a_one_frame_video(tmp_path):
    rgb = synthetic_rgb(23, 17, 1, noise=20.0)[0]
    path = write_png(tmp_path / "image.png", rgb)
    reader = VideoReader(path)
    assert reader.is_image
    assert reader.info.frames == 1 and (reader.info.width, reader.info.height) == (23, 17)
    assert not reader.info.has_audio
    assert reader.info.source_pix_fmt == "rgb24" and reader.info.converted
    assert reader.info.format == IMAGE_8  # as ``ffmpeg -pix_fmt yuv420p`` converts an image
    frames = list(reader.frames())
    assert len(frames) == 1
    # PyAV's default conversion of the decoded PNG (swscale: BT.601, the PNG's full range) ...
    _assert_same_planes(frames[0], image_planes(path))
    # ... which is the textbook BT.601 full-range luma.
    assert np.abs(frames[0].y - _bt601_full_luma(rgb)).max() <= 1.0


def test_image_with_alpha_and_grey_read_as_their_rgb(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 6), 77, dtype=np.uint8), "L").save(tmp_path / "g.png")
    (a,) = VideoReader(tmp_path / "a.png").frames()
    (g,) = VideoReader(tmp_path / "g.png").frames()
    _assert_same_planes(a, image_planes(tmp_path / "a.png"))
    _assert_same_planes(g, image_planes(tmp_path / "g.png"))
    assert (g.y == 77).all() and (g.u == 128).all() and (g.v == 128).all()  # full-range grey is its grey value


def test_16_bit_grey_png_reads_as_its_picture(tmp_path):
    grey8 = np.concatenate([np.arange(0, 256, 2), [1, 127, 128, 253, 254, 255] * 2 + [255] * 4]).astype(np.uint8)
    grey8 = grey8.reshape(8, 18)
    path16 = tmp_path / "grey16.png"
    Image.fromarray(grey8.astype(np.uint16) * 257).save(path16)  # PIL writes mode I;16 as a 16-bit PNG
    with Image.open(path16) as im:
        assert im.mode.startswith("I")
    reader = VideoReader(path16)
    assert reader.info.format == YUVFormat(bit_depth=10, full_range=True, matrix=BT601)
    (deep,) = reader.frames()
    (flat,) = VideoReader(write_png(tmp_path / "grey8.png", grey8)).frames()
    assert deep.y.dtype == np.uint16 and flat.y.dtype == np.uint8
    # The same picture: 10-bit luma is 4x the 8-bit image's, within one 8-bit code value.
    assert np.abs(deep.y / 4.0 - flat.y).max() <= 1.0
    assert np.abs(flat.y - grey8.astype(np.float64)).max() <= 1.0  # not nearly white: full range, black is 0
    assert (np.abs(deep.u.astype(int) - 512) <= 1).all()


def test_jpeg_keeps_its_full_range(tmp_path):
    rgb = synthetic_rgb(24, 16, 1)[0]
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=95)  # PIL: 4:2:0, full range (JFIF)
    reader = VideoReader(path)
    assert reader.info.source_pix_fmt == "yuvj420p" and not reader.info.converted
    assert reader.info.format.full_range and reader.info.format.bit_depth == 8
    (planes,) = reader.frames()
    (frame,) = _av_decode(path)
    _assert_same_planes(planes, _av_planes(frame))  # taken as it is
    # Full-range luma: the picture's BT.601 luma unscaled (limited range would be 16 + 219/255 of it).
    full = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(planes.y - full).mean() < 2.0 < np.abs(planes.y - _bt601_limited_luma(rgb)).mean()


def test_real_image_input():
    kodim = shared_file("images/test/kodak/kodim01.png")
    reader = VideoReader(kodim)
    assert reader.info.frames == 1 and reader.info.format == IMAGE_8
    (frame,) = reader.frames()
    assert sorted(frame.y.shape) == [512, 768] and sorted(frame.u.shape) == [256, 384]
    with Image.open(kodim) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert np.abs(frame.y - _bt601_full_luma(rgb)).max() <= 1.0
    _assert_same_planes(frame, image_planes(kodim))  # what ../shared/tools/anchors.py reads


def test_a_cover_picture_stored_first_is_not_the_video(tmp_path):
    # ffmpeg shows (and encodes) the moving picture, not a still stored as the first stream;
    # the reader coded the 32x32 still as a one-frame video.
    path = tmp_path / "with_cover.mkv"
    with av.open(str(path), "w") as out:
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        still = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24").reformat(format="yuvj420p")
        out.mux([*cover.encode(still), *cover.encode(None)])
        for i, rgb in enumerate(synthetic_rgb(64, 48, 5, seed=2)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    reader = VideoReader(path)
    assert (reader.info.width, reader.info.height) == (64, 48)
    with av.open(str(path)) as inp:
        expected = [f.to_ndarray() for f in inp.decode(video=1)]
    frames = list(reader.frames())
    assert len(frames) == len(expected) == 5
    assert all(np.array_equal(f.y, e[:48]) for f, e in zip(frames, expected))  # yuv420p as one array: Y rows first
    assert ContainerReader(path).sizes().frames == 5


def test_a_folder_reads_as_a_video_of_its_images(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rgb = synthetic_rgb(32, 24, 3, seed=6)
    for i, picture in enumerate(rgb):
        write_png(folder / f"frame_{i + 1:06d}.png", picture)
    reader = VideoReader(folder, rate=Fraction(50))
    assert (reader.info.frames, reader.info.rate, reader.info.has_audio) == (3, 50, False)
    frames = list(reader.frames(1))
    assert len(frames) == 2
    for frame, i in zip(frames, (2, 3)):
        _assert_same_planes(frame, image_planes(folder / f"frame_00000{i}.png"))  # as anchors.py reads a PNG
    with pytest.raises(DualcodecError, match="has 3 frames: --start 3 is past its end"):
        list(reader.frames(3))


@pytest.mark.parametrize("names, pattern, read", [
    (["shot_%04d.png" % i for i in (3, 4, 5, 9)], "shot_%04d.png", 3),  # from 3 (0 to 4 tried), to the gap at 6
    (["f%d.png" % i for i in range(0, 12)], "f%d.png", 12),  # unpadded: f9 then f10
    (["100%%_%03d.png" % i for i in (1, 2)], "100%%_%03d.png", 2),  # %% is a literal %
])
def test_a_numbered_sequence_reads_as_ffmpeg_reads_it(tmp_path, names, pattern, read):
    rgb = synthetic_rgb(16, 8, len(names), seed=3)
    for name, picture in zip(names, rgb):
        write_png(tmp_path / name, picture)
    reader = VideoReader(tmp_path / pattern, rate=Fraction(24))
    frames = list(reader.frames())
    with av.open(str(tmp_path / pattern), format="image2") as inp:  # FFmpeg's own reading of the pattern
        expected = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    assert len(expected) == read and (reader.info.frames, reader.info.rate, len(frames)) == (read, 24, read)
    assert all(np.array_equal(e, picture) for e, picture in zip(expected, rgb))  # ffmpeg read names[:read] too
    for frame, name in zip(frames, names):
        _assert_same_planes(frame, image_planes(tmp_path / name))  # as anchors.py reads a PNG


def test_a_pattern_without_its_first_frames_is_not_found(tmp_path):
    write_png(tmp_path / "late_0005.png", synthetic_rgb(16, 8, 1)[0])  # ffmpeg tries 0 to 4 only
    with pytest.raises(DualcodecError, match="no file numbered 0 to 4 matches"):
        VideoReader(tmp_path / "late_%04d.png")


@pytest.mark.parametrize("name, numbered", [("a_%04d.png", True), ("a%d.png", True), ("a%5d.png", True),
                                            ("a%%d.png", False), ("100%.png", False), ("a%d_%d.png", False)])
def test_is_pattern(name, numbered):
    assert is_pattern(name) == numbered


@pytest.mark.parametrize("source_fmt, depth", [("yuv420p", 10), ("yuv420p10le", 8)])
def test_a_reader_reads_at_the_depth_asked(tmp_path, source_fmt, depth):
    frames = synthetic_frames(16, 8, 2, seed=7, noise=30.0, pix_fmt=source_fmt)
    path = write_y4m(tmp_path / "src.y4m", frames)
    reader = VideoReader(path, bit_depth=depth)
    assert reader.info.format.bit_depth == depth and reader.info.converted
    for read, source in zip(reader.frames(), frames, strict=True):
        for got, plane in zip((read.y, read.u, read.v), (source.y, source.u, source.v)):
            plane = plane.astype(np.int64)
            # 8 to 10: code c is 4c, exactly; 10 to 8: the nearest code, halves up
            expected = plane * 4 if depth == 10 else np.minimum((plane + 2) // 4, 255)
            assert got.dtype == (np.uint16 if depth == 10 else np.uint8) and np.array_equal(got, expected)
    same = VideoReader(path, bit_depth=10 if source_fmt.endswith("10le") else 8)
    assert not same.info.converted
    assert all(np.array_equal(a.y, b.y) for a, b in zip(same.frames(), frames))
    with pytest.raises(DualcodecError, match="8 or 10 bits, not 12"):
        VideoReader(path, bit_depth=12)


def test_reader_errors(tmp_path):
    with pytest.raises(DualcodecError, match="input not found"):
        VideoReader(tmp_path / "missing.mp4")
    with pytest.raises(DualcodecError, match="folder"):
        VideoReader(tmp_path)
    (tmp_path / "empty.y4m").touch()
    with pytest.raises(DualcodecError, match="empty.y4m: the file is empty"):
        VideoReader(tmp_path / "empty.y4m")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DualcodecError, match="cannot read"):
        VideoReader(garbage)
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"\x89PNG broken")
    with pytest.raises(DualcodecError, match="cannot read"):
        VideoReader(bad_image)


def test_truncated_input_fails_while_reading(tmp_path):
    # moov first (faststart), media data cut: the file opens, reading it fails.
    path = make_av_clip(tmp_path / "fs.mp4", width=64, height=48, frames=20, faststart=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    reader = VideoReader(cut)
    with pytest.raises(DualcodecError, match="cannot read"):
        list(reader.frames())


def test_check_inputs_names_the_bad_one(tmp_path):
    from dualcodec.video import check_inputs

    good = write_png(tmp_path / "good.png", synthetic_rgb(8, 8, 1)[0])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    check_inputs([good])
    with pytest.raises(DualcodecError, match="bad.mp4"):
        check_inputs([good, bad])


def test_a_dualcodec_file_is_not_a_source(tmp_path, bicubic_file):
    with pytest.raises(DualcodecError, match="is a dualcodec file.*decode it first"):
        VideoReader(bicubic_file.path)


def test_frame_count_is_estimated_where_the_stream_has_none(tmp_path):
    path = write_y4m(tmp_path / "clip.y4m", synthetic_frames(16, 12, 7))
    assert VideoReader(path).info.frames == 7  # y4m streams carry no frame count


# -- writing y4m ------------------------------------------------------------------------


def _header_line(path) -> str:
    return path.read_bytes().split(b"\n", 1)[0].decode()


@pytest.mark.parametrize("full_range", [False, True])
def test_y4m_writer_8bit(tmp_path, full_range):
    frames = _random_planes(37, 29, 2) + synthetic_frames(37, 29, 1)
    fmt = YUVFormat(bit_depth=8, full_range=full_range, matrix=BT601)
    path = _write_y4m_writer(tmp_path / "out.y4m", frames, fmt, Fraction(30000, 1001))
    header = _header_line(path)
    assert header.startswith("YUV4MPEG2 W37 H29 F30000:1001")
    assert "C420jpeg" in header.split()
    assert f"XCOLORRANGE={'FULL' if full_range else 'LIMITED'}" in header.split()
    frame_bytes = 37 * 29 + 2 * 19 * 15
    assert path.stat().st_size == len(header) + 1 + 3 * (len(b"FRAME\n") + frame_bytes)
    decoded = _av_decode(path)  # other tools read it: FFmpeg sees the very planes written
    assert len(decoded) == 3
    assert decoded[0].format.name == "yuv420p" and decoded[0].color_range == (2 if full_range else 1)
    for a, b in zip(frames, decoded):
        _assert_same_planes(a, _av_planes(b))


def test_y4m_writer_10bit(tmp_path):
    frames = synthetic_frames(37, 29, 2, pix_fmt="yuv420p10le") + _random_planes(37, 29, 1, bits=10)
    path = _write_y4m_writer(tmp_path / "out10.y4m", frames, YUVFormat(bit_depth=10, matrix=BT709))
    header = _header_line(path).split()
    assert "C420p10" in header and "XCOLORRANGE=LIMITED" in header
    frame_bytes = 2 * (37 * 29 + 2 * 19 * 15)
    assert path.stat().st_size == len(" ".join(header)) + 1 + 3 * (len(b"FRAME\n") + frame_bytes)
    decoded = _av_decode(path)
    assert decoded[0].format.name == "yuv420p10le"
    for a, b in zip(frames, decoded):
        _assert_same_planes(a, _av_planes(b))


@pytest.mark.parametrize("bits", [8, 10])
def test_y4m_round_trip_keeps_every_code_value(tmp_path, bits):
    # Every code value, extremes included, in every plane: written and read back exactly.
    top = 1 << bits
    values = np.arange(top, dtype=np.uint8 if bits == 8 else np.uint16)
    width = 64
    y = np.resize(values, (top // width, width))
    c = np.resize(values[::-1], (top // width // 2, width // 2))
    planes = Planes(y, c, np.roll(c, 7))
    fmt = YUVFormat(bit_depth=bits)
    path = _write_y4m_writer(tmp_path / "all.y4m", [planes], fmt)
    (back,) = VideoReader(path).frames()
    _assert_same_planes(planes, back)


def test_y4m_writer_16bit_444_on_request(tmp_path):
    frames = synthetic_frames(37, 29, 2)
    path = _write_y4m_writer(tmp_path / "out16.y4m", frames, SD_8, pix_fmt="yuv444p16le")
    header = _header_line(path).split()
    assert "C444p16" in header and "XCOLORRANGE=LIMITED" in header
    assert path.stat().st_size == len(" ".join(header)) + 1 + 2 * (len(b"FRAME\n") + 3 * 2 * 37 * 29)
    decoded = _av_decode(path)
    assert len(decoded) == 2 and decoded[0].format.name == "yuv444p16le"
    for planes, frame in zip(frames, decoded):
        got = frame.to_ndarray()  # [H, W, 3] uint16: Y, U, V
        # swscale widens luma by a shift (limited-range 16 stays black: 16 << 8) ...
        assert np.array_equal(got[..., 0], planes.y.astype(np.uint16) << 8)
        # ... and the whole frame is PyAV's own conversion of the 8-bit frame.
        source = next(iter(_av_decode(write_y4m(tmp_path / "src.y4m", [planes]))))
        expected = source.reformat(format="yuv444p16le", src_color_range=1, dst_color_range=1, threads=1).to_ndarray()
        assert np.array_equal(got, expected)


def test_y4m_writer_through_open_writer(tmp_path):
    writer = open_writer("y4m", tmp_path / "x.y4m", 4, 2, Fraction(25), SD_8)
    assert isinstance(writer, Y4MWriter)
    writer.write(Planes(np.full((2, 4), 50, np.uint8), np.full((1, 2), 60, np.uint8), np.full((1, 2), 70, np.uint8)))
    writer.close()
    (frame,) = _av_decode(tmp_path / "x.y4m")
    planes = _av_planes(frame)
    assert (planes.y == 50).all() and (planes.u == 60).all() and (planes.v == 70).all()
    writer = open_writer("y4m", tmp_path / "y.y4m", 4, 2, Fraction(25), SD_8, pix_fmt="yuv444p16le")
    assert writer.pix_fmt == "yuv444p16le"
    writer.close()


# -- writing PNG and MP4 ----------------------------------------------------------------


@pytest.mark.parametrize("pix_fmt, fmt, kwargs", [
    ("yuv420p", SD_8, {}),
    ("yuv420p", YUVFormat(8, False, BT709), {"src_colorspace": "ITU709"}),
    ("yuv420p", YUVFormat(8, True, BT601), {"src_color_range": "JPEG"}),
    ("yuv420p10le", YUVFormat(10, False, BT601), {}),
], ids=["bt601", "bt709", "full", "10bit"])
def test_png_dir_writer(tmp_path, pix_fmt, fmt, kwargs):
    frames = synthetic_frames(37, 29, 3, noise=20.0, pix_fmt=pix_fmt)
    folder = tmp_path / "frames"
    folder.mkdir()
    writer = open_writer("dir", folder, 37, 29, Fraction(25), fmt)
    assert isinstance(writer, PngDirWriter)
    for planes in frames:
        writer.write(planes)
    writer.close()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    decoded = _av_decode(write_y4m(tmp_path / "same.y4m", frames))  # the same planes, through FFmpeg
    for name, frame in zip(names, decoded):
        with Image.open(folder / name) as im:
            assert im.mode == "RGB"
            written = np.asarray(im)
        assert np.array_equal(written, frame.to_ndarray(format="rgb24", **kwargs))


def test_png_dir_writer_uses_the_matrix(tmp_path):
    planes = synthetic_frames(16, 8, 1, noise=20.0)[0]
    for matrix in (BT601, BT709):
        (tmp_path / str(matrix)).mkdir()
        PngDirWriter(tmp_path / str(matrix), YUVFormat(matrix=matrix)).write(planes)
    a, b = (np.asarray(Image.open(tmp_path / str(m) / "frame_000001.png")).astype(int) for m in (BT601, BT709))
    assert np.abs(a - b).max() > 5


@pytest.mark.parametrize("fmt", [SD_8, YUVFormat(8, True, BT709), YUVFormat(10, False, BT709)],
                         ids=["bt601", "full-bt709", "10bit"])
def test_mp4_writer_for_viewing(tmp_path, fmt):
    pix_fmt = "yuv420p" if fmt.bit_depth == 8 else "yuv420p10le"
    frames = synthetic_frames(37, 29, 4, seed=2, pix_fmt=pix_fmt)
    path = tmp_path / "view.mp4"
    writer = open_writer("mp4", path, 37, 29, Fraction(30), fmt)
    assert isinstance(writer, Mp4Writer)
    for planes in frames:
        writer.write(planes)
    writer.close()
    with av.open(str(path)) as inp:
        stream = inp.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 30
        decoded = list(inp.decode(stream))
    assert len(decoded) == 4
    # Odd sizes are padded by one pixel for 4:2:0; the stream says the frames' matrix and range.
    assert (decoded[0].width, decoded[0].height) == (38, 30)
    assert decoded[0].format.name == ("yuvj420p" if fmt.full_range else pix_fmt)  # FFmpeg's name for full range
    assert decoded[0].colorspace == fmt.matrix and decoded[0].color_range == (2 if fmt.full_range else 1)
    # The same planes, coded: CRF 12 costs little.
    peak = 255.0 if fmt.bit_depth == 8 else 1023.0
    for planes, frame in zip(frames, decoded):
        back = _av_planes(frame)
        back = Planes(back.y[:29, :37], back.u[:15, :19], back.v[:15, :19])
        assert psnr_yuv(planes, back, peak) > 40


# -- output names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, kind",
    [("out.y4m", "y4m"), ("OUT.Y4M", "y4m"), ("out.mp4", "mp4"), ("out.png", "png"), ("frames/", "dir"),
     ("frames", "dir"), ("frames.png/", "dir")],
)
def test_output_kind(path, kind):
    assert output_kind(path) == kind


@pytest.mark.parametrize("path", ["out.avi", "out.jpg", "out.mkv"])
def test_output_kind_rejects_other_suffixes(path):
    with pytest.raises(DualcodecError, match="unsupported output"):
        output_kind(path)


def test_output_kind_existing_folder_with_dot(tmp_path):
    folder = tmp_path / "frames.v1"
    folder.mkdir()
    assert output_kind(str(folder)) == "dir"


def test_output_kind_of_stdout_is_y4m():
    assert output_kind("-") == "y4m"


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("tag", range(1, 9))
def test_a_pictures_exif_orientation_shows_it_as_pil_shows_it(tmp_path, tag, suffix):
    # The stored pixels turned as the orientation says (counter-clockwise, then mirrored)
    # are what PIL's exif_transpose shows; EXIF 2 used to come out upside down (FFmpeg
    # reads its mirror as a rotation of 180 degrees).
    exif = Image.Exif()
    exif[0x0112] = tag
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(synthetic_rgb(64, 48, 1)[0]).save(path, exif=exif.tobytes())
    reader = VideoReader(path)
    orientation = reader.info.orientation
    with Image.open(path) as image:
        stored, shown = np.asarray(image.convert("RGB")), np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    turned = np.rot90(stored, orientation.rotation // 90)
    assert np.array_equal(turned[:, ::-1] if orientation.mirrored else turned, shown)
    assert [f.y.shape for f in reader.frames()] == [(48, 64)]  # the frames as stored


def test_a_video_without_a_display_matrix_is_shown_as_stored(tmp_path):
    assert not VideoReader(make_av_clip(tmp_path / "clip.mp4", frames=2)).info.orientation
    assert not VideoReader(write_y4m(tmp_path / "clip.y4m", synthetic_frames(32, 16, 2))).info.orientation


@pytest.mark.parametrize("rotation, mirrored", [(90, False), (0, True), (270, True)])
def test_a_videos_display_matrix_is_its_orientation(tmp_path, rotation, mirrored):
    path = make_av_clip(tmp_path / "clip.mp4", frames=2, rotation=rotation, mirrored=mirrored)
    assert VideoReader(path).info.orientation == Orientation(rotation, mirrored)


def test_frames_that_do_not_come_at_a_constant_rate_carry_their_times(tmp_path):
    times = [0, 0.033, 0.1, 0.133, 0.25, 0.3]  # a phone's video: the rate varies
    reader = VideoReader(make_av_clip(tmp_path / "vfr.mp4", frames=6, times=times))
    assert reader.info.time_base == Fraction(1, 90000)
    assert [float(f.time) for f in reader.frames()] == pytest.approx(times)
    steady = VideoReader(make_av_clip(tmp_path / "cfr.mp4", frames=3))
    assert steady.info.time_base is None and [f.time for f in steady.frames()] == [0, Fraction(1, 25), Fraction(2, 25)]


@pytest.mark.parametrize("kind", ["mp4", "y4m"])
def test_frames_from_a_start_frame_are_the_whole_reads_tail(tmp_path, kind):
    times = [0, 0.033, 0.1, 0.133, 0.25, 0.3]
    path = (make_av_clip(tmp_path / "vfr.mp4", frames=6, times=times) if kind == "mp4"
            else write_y4m(tmp_path / "clip.y4m", synthetic_frames(32, 16, 6)))
    whole = list(VideoReader(path).frames())
    tail = list(VideoReader(path).frames(start=4))
    assert len(tail) == 2
    for a, b in zip(whole[4:], tail):
        assert np.array_equal(a.y, b.y) and np.array_equal(a.v, b.v) and a.time == b.time  # times from frame 0
    with pytest.raises(DualcodecError, match=r"has 6 frames: --start 6 is past its end"):
        list(VideoReader(path).frames(start=6))
