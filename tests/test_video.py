"""dualcodec.video: reading any video or image, writing y4m / PNG / MP4."""

from __future__ import annotations

import itertools
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from dualcodec.errors import DualcodecError
from dualcodec.video import (
    Mp4Writer,
    PngDirWriter,
    VideoReader,
    Y4MWriter,
    open_writer,
    output_kind,
)
from dualcodec.basecodec import _planes_from_frame
from dualcodec.codec import planes_to_rgb
from dualcodec.yuv import YUVFormat
from helpers import make_av_clip, psnr, shared_file, synthetic_frames, write_png, write_y4m


def _random_frames(width, height, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def test_y4m_output_is_lossless(tmp_path):
    frames = _random_frames(37, 29, 3) + synthetic_frames(37, 29, 1)
    path = write_y4m(tmp_path / "out.y4m", frames, Fraction(30000, 1001))
    reader = VideoReader(path)
    assert (reader.info.width, reader.info.height) == (37, 29)
    assert reader.info.rate == Fraction(30000, 1001)
    assert not reader.info.has_audio and not reader.is_image
    back = list(reader.frames())
    assert len(back) == len(frames)
    for a, b in zip(frames, back):
        assert b.dtype == np.uint8 and b.shape == a.shape
        assert np.array_equal(a, b)


def test_y4m_is_lossless_for_many_colours(tmp_path):
    # 2**18 distinct colours spread over the RGB cube, extremes included.
    levels = np.unique(np.concatenate([np.linspace(0, 255, 64).round(), [1, 2, 127, 128, 253, 254]])).astype(np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    cube = np.stack([r.ravel(), g.ravel(), b.ravel()], axis=-1)
    side = int(np.ceil(np.sqrt(len(cube))))
    image = np.zeros((side * side, 3), dtype=np.uint8)
    image[: len(cube)] = cube
    image = image.reshape(side, side, 3)
    path = write_y4m(tmp_path / "cube.y4m", [image])
    back = next(VideoReader(path).frames())
    assert np.array_equal(back, image)


def test_y4m_header(tmp_path):
    path = write_y4m(tmp_path / "h.y4m", _random_frames(5, 3, 2), Fraction(25))
    data = path.read_bytes()
    header = data.split(b"\n", 1)[0].decode()
    assert header.startswith("YUV4MPEG2 W5 H3 F25:1")
    assert "C444p16" in header and "XCOLORRANGE=FULL" in header
    frame_bytes = 3 * 5 * 3 * 2
    assert len(data) == len(header) + 1 + 2 * (len(b"FRAME\n") + frame_bytes)
    # Other tools read it too: FFmpeg sees a 16-bit 4:4:4 full-range stream.
    with av.open(str(path)) as inp:
        frame = next(inp.decode(video=0))
        assert frame.format.name == "yuv444p16le" and frame.color_range == 2


def test_standard_8bit_y4m_reads(tmp_path):
    # A plain 4:2:0 y4m as other tools write it (mid-grey luma, neutral chroma).
    w, h = 16, 8
    body = b"FRAME\n" + bytes([126]) * (w * h) + bytes([128]) * (w * h // 2)
    path = tmp_path / "grey.y4m"
    path.write_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n".encode() + body * 2)
    reader = VideoReader(path)
    frames = list(reader.frames())
    assert len(frames) == 2 and frames[0].shape == (h, w, 3)
    assert np.abs(frames[0].astype(int) - frames[0].mean()).max() <= 2  # flat grey
    assert 120 <= frames[0].mean() <= 135


def test_raw_h264_input_reads():
    foreman = shared_file("video/foreman_352x288_300f_intra.264")
    reader = VideoReader(foreman)
    assert (reader.info.width, reader.info.height) == (352, 288)
    assert reader.info.rate == 25  # raw Annex B has no timing: FFmpeg's default
    frames = reader.frames()
    first = list(itertools.islice(frames, 3))
    frames.close()  # stop early: the file has 300 frames
    assert len(first) == 3
    assert all(f.shape == (288, 352, 3) and f.dtype == np.uint8 for f in first)
    assert not np.array_equal(first[0], first[2])  # a moving sequence
    assert 40 < first[0].mean() < 220


def test_real_y4m_input_reads():
    cars = shared_file("video/cars_320x240_30f.y4m")
    reader = VideoReader(cars)
    assert (reader.info.width, reader.info.height, reader.info.rate) == (320, 240, 30)
    frames = reader.frames()
    first = next(frames)
    frames.close()
    assert first.shape == (240, 320, 3)


def test_mp4_input_reads(tmp_path):
    path = make_av_clip(tmp_path / "clip.mp4", width=48, height=32, frames=4, audio=True)
    reader = VideoReader(path)
    assert (reader.info.width, reader.info.height) == (48, 32)
    assert reader.info.rate == 25 and reader.info.frames == 4 and reader.info.has_audio
    frames = list(reader.frames())
    assert len(frames) == 4
    expected = synthetic_frames(48, 32, 4, seed=1)  # what make_av_clip encoded
    assert min(psnr(a, b) for a, b in zip(expected, frames)) > 30


def test_image_input_is_a_one_frame_video(tmp_path):
    image = _random_frames(23, 17, 1)[0]
    path = write_png(tmp_path / "image.png", image)
    reader = VideoReader(path)
    assert reader.is_image
    assert reader.info.frames == 1 and (reader.info.width, reader.info.height) == (23, 17)
    assert not reader.info.has_audio
    frames = list(reader.frames())
    assert len(frames) == 1 and np.array_equal(frames[0], image)


def test_image_with_alpha_and_grey_become_rgb(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 6), 77, dtype=np.uint8), "L").save(tmp_path / "g.png")
    (a,) = VideoReader(tmp_path / "a.png").frames()
    (g,) = VideoReader(tmp_path / "g.png").frames()
    assert a.shape == g.shape == (4, 6, 3)
    assert (a[..., 0] == 200).all() and (g == 77).all()


def test_real_image_input():
    kodim = shared_file("images/test/kodak/kodim01.png")
    reader = VideoReader(kodim)
    assert reader.info.frames == 1
    (frame,) = reader.frames()
    assert frame.shape[2] == 3 and sorted(frame.shape[:2]) == [512, 768]


def test_reader_errors(tmp_path):
    with pytest.raises(DualcodecError, match="input not found"):
        VideoReader(tmp_path / "missing.mp4")
    with pytest.raises(DualcodecError, match="folder"):
        VideoReader(tmp_path)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DualcodecError, match="cannot read"):
        VideoReader(garbage)
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"\x89PNG broken")
    with pytest.raises(DualcodecError, match="cannot read image"):
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


def test_png_dir_writer(tmp_path):
    frames = _random_frames(9, 7, 3)
    folder = tmp_path / "frames"
    folder.mkdir()
    writer = open_writer("dir", folder, 9, 7, Fraction(25))
    assert isinstance(writer, PngDirWriter)
    for f in frames:
        writer.write(f)
    writer.close()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    for name, f in zip(names, frames):
        assert np.array_equal(np.asarray(Image.open(folder / name)), f)


def test_mp4_writer_for_viewing(tmp_path):
    frames = synthetic_frames(37, 29, 4, seed=2)
    path = tmp_path / "view.mp4"
    writer = open_writer("mp4", path, 37, 29, Fraction(30))
    assert isinstance(writer, Mp4Writer)
    for f in frames:
        writer.write(f)
    writer.close()
    with av.open(str(path)) as inp:
        stream = inp.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 30
        decoded = list(inp.decode(stream))
    assert len(decoded) == 4
    # Odd sizes are padded by one pixel for 4:2:0 and the stream says BT.709, limited range.
    assert (decoded[0].width, decoded[0].height) == (38, 30)
    assert decoded[0].colorspace == 1 and decoded[0].color_range == 1
    # Converted back with the BT.709 conversion it was written with, the picture is
    # close to the input: CRF 12 costs little beyond the 4:2:0 chroma subsampling.
    rgb = [planes_to_rgb(_planes_from_frame(f, 8), YUVFormat())[0] for f in decoded]
    rgb = [(x.permute(1, 2, 0).numpy() * 255).round()[:29, :37] for x in rgb]
    assert min(psnr(a, b) for a, b in zip(frames, rgb)) > 34


def test_y4m_writer_through_open_writer(tmp_path):
    writer = open_writer("y4m", tmp_path / "x.y4m", 4, 2, Fraction(25))
    assert isinstance(writer, Y4MWriter)
    writer.close()


@pytest.mark.parametrize(
    "path, kind",
    [("out.y4m", "y4m"), ("OUT.Y4M", "y4m"), ("out.mp4", "mp4"), ("frames/", "dir"), ("frames", "dir")],
)
def test_output_kind(path, kind):
    assert output_kind(path) == kind


@pytest.mark.parametrize("path", ["out.avi", "out.png", "out.mkv"])
def test_output_kind_rejects_other_suffixes(path):
    with pytest.raises(DualcodecError, match="unsupported output"):
        output_kind(path)


def test_output_kind_existing_folder_with_dot(tmp_path):
    folder = tmp_path / "frames.v1"
    folder.mkdir()
    assert output_kind(str(folder)) == "dir"


def test_output_kind_of_stdout_is_y4m():
    assert output_kind("-") == "y4m"


def test_check_inputs_names_the_bad_one(tmp_path):
    from dualcodec.video import check_inputs

    good = write_png(tmp_path / "good.png", synthetic_frames(8, 8, 1)[0])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    check_inputs([good])
    with pytest.raises(DualcodecError, match="bad.mp4"):
        check_inputs([good, bad])


def test_16_bit_grey_png_reads_as_its_picture(tmp_path):
    grey = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300)  # 0 .. 57300 of 65535
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)  # PIL writes mode I;16 as a 16-bit PNG
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    rgb = next(VideoReader(path).frames())
    expected = np.round(grey / 257.0).astype(np.uint8)
    assert rgb.shape == (12, 16, 3)
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)


def test_a_dualcodec_file_is_not_a_source(tmp_path, bicubic_file):
    with pytest.raises(DualcodecError, match="is a dualcodec file.*decode it first"):
        VideoReader(bicubic_file.path)


def test_frame_count_is_estimated_where_the_stream_has_none(tmp_path):
    path = write_y4m(tmp_path / "clip.y4m", synthetic_frames(16, 12, 7))
    assert VideoReader(path).info.frames == 7  # y4m streams carry no frame count
