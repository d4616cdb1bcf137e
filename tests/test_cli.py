"""dualcodec.cli: the command line, in-process (main) and as the installed script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from dualcodec import __version__
from dualcodec.basecodec import Planes
from dualcodec.codec import decode
from dualcodec.container import ContainerReader
from dualcodec.header import FORMAT_VERSION
from dualcodec.video import VideoReader
from helpers import (assert_one_line_error, clip_with_a_flash_and_a_click, display_matrix, flash_and_click_seconds,
                     make_av_clip, packet_spans, psnr, psnr_yuv, pyav_rgb, read_yuv420, run, shared_file,
                     synthetic_frames, synthetic_rgb, write_png, write_y4m)

SCRIPT = Path(sys.executable).parent / "dualcodec"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def same(a, b) -> bool:
    """Two frames' planes are equal, value and type."""
    return all(p.dtype == q.dtype and np.array_equal(p, q) for p, q in ((a.y, b.y), (a.u, b.u), (a.v, b.v)))


def shapes(planes) -> tuple:
    return planes.y.shape, planes.u.shape, planes.v.shape


@pytest.fixture()
def out_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# -- the installed script ----------------------------------------------------------------


def test_script_help():
    if not SCRIPT.is_file():
        pytest.skip(f"console script not installed next to the interpreter: {SCRIPT}")
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: dualcodec")
    for command in ("encode", "decode", "info", "train"):
        assert command in result.stdout
    assert "examples:" in result.stdout
    assert result.stderr == ""


def test_script_version():
    if not SCRIPT.is_file():
        pytest.skip(f"console script not installed next to the interpreter: {SCRIPT}")
    result = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"dualcodec {__version__}"


def test_subcommand_help(capsys):
    for command in ("encode", "decode", "info", "train"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and out.startswith(f"usage: dualcodec {command}")


def test_no_command_is_a_usage_error(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage:" in err


# -- encode ------------------------------------------------------------------------------


def test_encode_dual_and_summary(capsys, clip, tiny_model, out_dir):
    out = out_dir / "clip.mp4"
    code, stdout, err = run(capsys, "encode", clip.path, "-o", out, "--model", tiny_model.path, "--qp", 30,
                            "--scale", 2)
    assert code == 0, err
    assert out.is_file() and leftovers(out_dir) == ["clip.mp4"]
    assert stdout == ""
    summary = [line for line in err.splitlines() if line.startswith(str(out))]
    assert len(summary) == 1
    assert "3 frames 37x29, base 20x16" in summary[0]
    assert f"{out.stat().st_size} bytes" in summary[0]
    assert "scale auto" not in err  # the scale was given: nothing was chosen


@pytest.mark.parametrize("chroma, pix_fmt, depth", [("C422", "yuv422p", 8), ("C420p12", "yuv420p12le", 10)])
def test_encode_summary_names_a_conversion(capsys, tmp_path, out_dir, chroma, pix_fmt, depth):
    # As ffmpeg's stream mapping shows "yuv422p -> yuv420p": a source not coded as it came says so.
    w, h = 16, 8
    sample = 2 if depth > 8 else 1
    chroma_size = w // 2 * h if chroma == "C422" else w // 2 * h // 2
    frame = b"FRAME\n" + bytes((w * h + 2 * chroma_size) * sample)
    source = tmp_path / f"{pix_fmt}.y4m"
    source.write_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 {chroma}\n".encode() + frame)
    out = out_dir / "converted.mp4"
    code, _, err = run(capsys, "encode", source, "-o", out, "--baseline", "none")
    assert code == 0, err
    assert f"1 frame 16x8 (from {pix_fmt}, coded as 4:2:0 {depth}-bit), base 16x8" in err
    assert ContainerReader(out).header.bit_depth == depth


def test_encode_summary_names_no_conversion_of_420(capsys, clip, out_dir):
    out = out_dir / "as_it_came.mp4"
    code, _, err = run(capsys, "encode", clip.path, "-o", out, "--baseline", "none")
    assert code == 0, err
    assert "coded as" not in err and "3 frames 37x29, base" in err


def test_encode_scale_auto_says_what_it_chose(capsys, clip, tiny_model, out_dir):
    out = out_dir / "auto.mp4"
    code, _, err = run(capsys, "encode", clip.path, "-o", out, "--model", tiny_model.path, "--qp", 30)
    assert code == 0, err
    assert leftovers(out_dir) == ["auto.mp4"]  # the candidates are gone
    _, stdout, _ = run(capsys, "info", out, "--json")
    report = json.loads(stdout)
    # One line names the candidates, the kept one first, with its bytes (the file's).
    chose = [line for line in err.splitlines() if line.startswith("scale auto")]
    assert len(chose) == 1
    kept = f"{report['scale']}x {report['mode']} ({out.stat().st_size} B"
    assert "1x plain (" in chose[0] and "2x dual (" in chose[0] and kept in chose[0]
    assert chose[0].index(kept) == min(chose[0].index("1x plain ("), chose[0].index("2x dual ("))
    summary = [line for line in err.splitlines() if line.startswith(str(out))]
    assert len(summary) == 1 and f"{out.stat().st_size} bytes" in summary[0]


def test_encode_codes_an_8_bit_source_at_10_bits(capsys, clip, tiny_model, out_dir):
    # as ffmpeg -pix_fmt yuv420p10le: the base layer is 10-bit, the decode too, and
    # --scale auto judges its trials against the source at 10 bits (a mixed-depth
    # comparison would put every learned candidate tens of dB below the plain codec).
    out = out_dir / "deep.mp4"
    code, _, err = run(capsys, "encode", clip.path, "-o", out, "--model", tiny_model.path, "--pix-fmt",
                       "yuv420p10le", "--qp", 30)
    assert code == 0, err
    assert "(from yuv420p, coded as 4:2:0 10-bit)" in err
    with av.open(str(out)) as inp:
        assert inp.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    psnrs = [float(dB) for dB in re.findall(r"B, ([0-9.]+) dB", err)]
    assert len(psnrs) == 2 and min(psnrs) > 20  # the plain codec and the 2x model
    decoded = list(decode(out, str(tiny_model.path)).frames)
    assert len(decoded) == 3 and decoded[0].y.dtype == np.uint16
    wide = [Planes(*(p.astype(np.uint16) * 4 for p in (f.y, f.u, f.v))) for f in clip.frames]  # in numpy
    assert min(psnr_yuv(a, b, 1023.0) for a, b in zip(wide, decoded)) > 27


def test_encode_codes_a_10_bit_source_at_8_bits_for_any_player(capsys, tmp_path, out_dir):
    deep = write_y4m(tmp_path / "deep.y4m", synthetic_frames(64, 48, 2, seed=3, pix_fmt="yuv420p10le"))
    out = out_dir / "eight.mp4"
    code, _, err = run(capsys, "encode", deep, "-o", out, "--baseline", "none", "--pix-fmt", "yuv420p")
    assert code == 0, err
    assert "(from yuv420p10le, coded as 4:2:0 8-bit)" in err
    with av.open(str(out)) as inp:
        cc = inp.streams.video[0].codec_context
        assert cc.pix_fmt == "yuv420p" and cc.profile != "High 10"  # what players without High 10 play


def test_encode_takes_10_bit_x264_quantisers_for_10_bit_frames(capsys, tmp_path, out_dir):
    # x264's 10-bit scale sits 12 higher: QP 54 there is QP 42 at 8 bits, and was refused.
    deep = write_y4m(tmp_path / "deep.y4m", synthetic_frames(64, 48, 2, seed=3, pix_fmt="yuv420p10le"))
    code, _, err = run(capsys, "encode", deep, "-o", out_dir / "coarse.mp4", "--baseline", "none", "--qp", "54")
    assert code == 0, err
    code, _, err = run(capsys, "encode", deep, "-o", out_dir / "eight.mp4", "--baseline", "none", "--qp", "54",
                       "--pix-fmt", "yuv420p")
    assert "qp 54 is out of range for 8-bit h264 (0..51)" in assert_one_line_error(code, err)
    assert leftovers(out_dir) == ["coarse.mp4"]


def test_encode_quiet_prints_nothing(capsys, clip, tiny_model, out_dir):
    code, stdout, err = run(capsys, "encode", clip.path, "-o", out_dir / "q.mp4", "--model", tiny_model.path, "-q")
    assert code == 0 and stdout == "" and err == ""


@pytest.mark.parametrize(
    "options, mode, scale, codec",
    [
        (["--baseline", "bicubic"], "bicubic", 2, "h264"),
        (["--baseline", "bicubic", "--scale", "4"], "bicubic", 4, "h264"),
        (["--baseline", "bicubic", "--codec", "hevc"], "bicubic", 2, "hevc"),
        (["--baseline", "none", "--codec", "av1", "--crf", "30"], "plain", 1, "av1"),
        (["--scale", "1", "--model", "TINY"], "plain", 1, "h264"),  # a model without a scale-1 sibling: plain
        (["--baseline", "bicubic", "--gop", "2", "--preset", "fast"], "bicubic", 2, "h264"),
    ],
)
def test_encode_baselines(capsys, clip, tiny_model, out_dir, options, mode, scale, codec):
    out = out_dir / "b.mp4"
    options = [str(tiny_model.path) if o == "TINY" else o for o in options]
    code, _, err = run(capsys, "encode", clip.path, "-o", out, "-q", *options)
    assert code == 0, err
    info_code, stdout, _ = run(capsys, "info", out, "--json")
    report = json.loads(stdout)
    assert info_code == 0
    assert (report["mode"], report["scale"], report["codec"]) == (mode, scale, codec)
    assert report["model"] is None
    assert report["frames"] == 3


def test_bit_depth_is_no_longer_an_option(capsys, clip, out_dir):
    # The base layer codes the source's own bit depth.
    code, _, err = run(capsys, "encode", clip.path, "-o", out_dir / "x.mp4", "--bit-depth", "10", "--baseline",
                       "bicubic", "-q")
    assert code == 2 and "unrecognized arguments: --bit-depth" in err
    assert leftovers(out_dir) == []


def test_baseline_bicubic_at_scale_1_is_refused(capsys, clip, out_dir):
    code, _, err = run(capsys, "encode", clip.path, "-o", out_dir / "x.mp4", "--baseline", "bicubic", "--scale", "1",
                       "-q")
    assert "--baseline bicubic needs a scale of 2 or 4" in assert_one_line_error(code, err)
    assert leftovers(out_dir) == []


def test_encode_default_model(capsys, default_model_path, clip, out_dir):
    out = out_dir / "d.mp4"
    code, _, err = run(capsys, "encode", clip.path, "-o", out, "-q")
    assert code == 0, err
    code, _, err = run(capsys, "decode", out, "-o", out_dir / "d.y4m", "-q")  # model found by name
    assert code == 0, err
    assert len(list(VideoReader(out_dir / "d.y4m").frames())) == 3


def test_encode_without_default_model_names_the_problem(capsys, clip, out_dir, tmp_path, monkeypatch):
    import dualcodec.model

    monkeypatch.setattr(dualcodec.model, "BUILTIN_DIR", tmp_path / "no_models")
    code, _, err = run(capsys, "encode", clip.path, "-o", out_dir / "x.mp4", "-q")
    line = assert_one_line_error(code, err)
    assert "default" in line
    assert leftovers(out_dir) == []


def test_missing_input(capsys, out_dir):
    code, _, err = run(capsys, "encode", out_dir / "missing.y4m", "-o", out_dir / "x.mp4", "--baseline", "bicubic")
    line = assert_one_line_error(code, err)
    assert "input not found" in line and "missing.y4m" in line
    assert leftovers(out_dir) == []


@pytest.mark.parametrize("layout", ["moov_last", "faststart"])
def test_truncated_input(capsys, tmp_path, out_dir, layout):
    # moov_last: the cut file does not open; faststart: it opens and fails half-way.
    source = make_av_clip(tmp_path / "full.mp4", width=64, height=48, frames=20, faststart=layout == "faststart")
    data = source.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "encode", cut, "-o", out_dir / "x.mp4", "--baseline", "bicubic", "-q")
    line = assert_one_line_error(code, err)
    assert "cut.mp4" in line
    assert leftovers(out_dir) == []


def test_truncated_real_video(capsys, tmp_path, out_dir):
    bikes = shared_file("video/bikes_640x272_250f.mp4")
    data = bikes.read_bytes()
    cut = tmp_path / "bikes_cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "encode", cut, "-o", out_dir / "x.mp4", "--baseline", "bicubic", "-q")
    assert_one_line_error(code, err)
    assert leftovers(out_dir) == []


def test_unsupported_codec_is_a_usage_error(capsys, clip, out_dir):
    code, _, err = run(capsys, "encode", clip.path, "-o", out_dir / "x.mp4", "--codec", "vp9")
    assert code == 2
    assert "invalid choice: 'vp9'" in err
    assert leftovers(out_dir) == []


def test_qp_and_crf_together_is_a_usage_error(capsys, clip, out_dir):
    code, _, err = run(capsys, "encode", clip.path, "-o", out_dir / "x.mp4", "--qp", "30", "--crf", "28")
    assert code == 2 and "not allowed with" in err


@pytest.mark.parametrize(
    "options, message",
    [
        (["-o", "{out}/x.avi"], "output must be a .mp4 file"),
        (["-o", "{out}/x.mp4", "--qp", "99"], "out of range"),
        (["-o", "{out}/x.mp4", "--gop", "0"], "gop"),
        (["-o", "{out}/missing_folder/x.mp4"], "output folder does not exist"),
    ],
)
def test_bad_encode_options(capsys, clip, out_dir, options, message):
    argv = [o.format(out=out_dir) for o in options]
    code, _, err = run(capsys, "encode", clip.path, *argv, "--baseline", "bicubic", "-q")
    line = assert_one_line_error(code, err)
    assert message in line
    assert leftovers(out_dir) == []


@pytest.mark.parametrize("codec, scale, message", [("hevc", "4", "at least 16x16 pixels, got 10x8"),
                                                   ("av1", "2", "at least 32x4 pixels, got 20x16")])
def test_base_layer_too_small_for_the_codec(capsys, clip, out_dir, codec, scale, message):
    # x265 cannot open tiny pictures; SVT-AV1 opens them and corrupts memory.
    code, _, err = run(capsys, "encode", clip.path, "-o", out_dir / "x.mp4", "--baseline", "bicubic",
                       "--scale", scale, "--codec", codec, "-q")
    line = assert_one_line_error(code, err)
    assert message in line
    assert leftovers(out_dir) == []


def test_encode_with_model_of_wrong_scale(capsys, clip, tiny_model, out_dir):
    code, _, err = run(capsys, "encode", clip.path, "-o", out_dir / "x.mp4", "--model", tiny_model.path,
                       "--scale", "4", "-q")
    line = assert_one_line_error(code, err)
    assert "2x, not 4x" in line
    assert leftovers(out_dir) == []


def test_encode_with_damaged_model(capsys, clip, tiny_model, tmp_path, out_dir):
    bad = tmp_path / "bad.pt"
    data = bytearray(tiny_model.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    code, _, err = run(capsys, "encode", clip.path, "-o", out_dir / "x.mp4", "--model", bad, "-q")
    line = assert_one_line_error(code, err)
    assert "bad.pt" in line
    assert leftovers(out_dir) == []


# -- decode ------------------------------------------------------------------------------


def test_decode_to_y4m_is_the_decoder_output(capsys, dual_file, tiny_model, out_dir):
    out = out_dir / "d.y4m"
    code, stdout, err = run(capsys, "decode", dual_file.path, "-o", out, "--model", tiny_model.path, "-q")
    assert code == 0, err
    assert stdout == "" and err == ""
    assert leftovers(out_dir) == ["d.y4m"]
    reader = VideoReader(out)
    assert (reader.info.width, reader.info.height, reader.info.rate) == (37, 29, 25)
    assert reader.info.format == VideoReader(dual_file.clip.path).info.format  # the source's
    frames = list(reader.frames())
    expected = list(decode(dual_file.path, str(tiny_model.path)).frames)
    assert len(frames) == len(expected) == 3
    assert all(same(a, b) for a, b in zip(frames, expected))  # lossless
    assert min(psnr_yuv(a, b) for a, b in zip(dual_file.clip.frames, frames)) > 27  # about 29.5 dB


def test_decode_from_a_start_frame_is_the_tail_of_a_whole_decode(capsys, dual_file, tiny_model, out_dir):
    out = out_dir / "d.y4m"
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out, "--model", tiny_model.path, "--start", "2", "-q")
    assert code == 0, err
    frames = list(VideoReader(out).frames())
    whole = list(decode(dual_file.path, str(tiny_model.path)).frames)
    assert len(frames) == len(whole) - 2 == 1 and same(frames[0], whole[2])
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "e.y4m", "--model", tiny_model.path,
                       "--start", "3")
    assert "has 3 frames: --start 3 is past its end" in assert_one_line_error(code, err)
    assert leftovers(out_dir) == ["d.y4m"]
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "e.y4m", "--start", "1", "--frames", "1",
                       "--model", tiny_model.path, "-q")
    assert code == 0, err
    assert len(frames := list(VideoReader(out_dir / "e.y4m").frames())) == 1 and same(frames[0], whole[1])
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "f.y4m", "--frames", "0")
    assert "--frames must be at least 1" in assert_one_line_error(code, err)
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "f.y4m", "--start", "-1")
    assert "--start must be 0 or more" in assert_one_line_error(code, err)
    assert leftovers(out_dir) == ["d.y4m", "e.y4m"]


@pytest.mark.parametrize("runtime, threads", [("torch", "1"), ("openvino", "2")])
def test_decode_with_a_runtime_and_threads(capsys, dual_file, tiny_model, out_dir, runtime, threads):
    out = out_dir / "d.y4m"
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out, "--model", tiny_model.path, "-q",
                       "--runtime", runtime, "--threads", threads)
    assert code == 0, err
    expected = list(decode(dual_file.path, str(tiny_model.path), runtime="torch").frames)
    frames = list(VideoReader(out).frames())
    assert len(frames) == 3
    for a, b in zip(frames, expected):  # the runtimes agree to within a rounding tie
        assert max(int(np.abs(p.astype(int) - q).max()) for p, q in ((a.y, b.y), (a.u, b.u), (a.v, b.v))) <= 1


@pytest.mark.parametrize("argv, message", [
    (["--runtime", "onnx"], "invalid choice: 'onnx'"),
    (["--threads", "0"], "must be a whole number of at least 1, got '0'"),
])
def test_decode_refuses_a_bad_runtime_option(capsys, dual_file, out_dir, argv, message):
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "d.y4m", *argv)
    assert code == 2 and message in err
    assert leftovers(out_dir) == []


@pytest.mark.parametrize("weight", ["0", "-2", "inf", "lots"])
def test_encode_refuses_a_side_weight_that_is_not_positive(capsys, clip, out_dir, weight):
    code, _, err = run(capsys, "encode", clip.path, "-o", out_dir / "e.mp4", "--side-weight", weight)
    assert code == 2 and f"must be a positive number, got '{weight}'" in err
    assert leftovers(out_dir) == []


def test_decode_with_int8_graphs_that_do_not_exist_is_one_line(capsys, dual_file, tiny_model, out_dir):
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "d.y4m", "--model", tiny_model.path,
                       "--runtime", "openvino-int8")
    assert "has no int8 graphs" in assert_one_line_error(code, err) and "dualcodec export" in err
    assert leftovers(out_dir) == []


def test_export_refuses_a_missing_calibration_folder(capsys, tiny_model, tmp_path):
    code, _, err = run(capsys, "export", tiny_model.path, "--calibration", tmp_path / "nowhere")
    assert "calibration folder not found" in assert_one_line_error(code, err)


def test_export_writes_int8_graphs_beside_the_model(capsys, tiny_model, tmp_path):
    import shutil

    model = shutil.copy(tiny_model.path, tmp_path / "mine.pt")
    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "a.png", synthetic_rgb(48, 32, count=1, seed=2, noise=10.0)[0])
    code, stdout, err = run(capsys, "export", model, "--calibration", images, "--images", "1", "--qp", "22", "-q")
    assert code == 0, err
    assert stdout == "" and err == ""
    assert sorted(p.name for p in (tmp_path / "mine.int8").iterdir()) == ["meta.json", "side.bin", "side.xml",
                                                                           "up.bin", "up.xml"]


def test_decode_a_10_bit_file_to_8_bits_rounds(capsys, tmp_path, out_dir):
    # swscale dithers 10 bits down to 8: a quarter of the samples one off the nearest code,
    # which costs the PSNR measured on the output (about 0.5 dB at 45 dB).
    deep = write_y4m(tmp_path / "deep.y4m", synthetic_frames(64, 48, 2, seed=8, noise=20.0, pix_fmt="yuv420p10le"))
    coded = out_dir / "deep.mp4"
    code, _, err = run(capsys, "encode", deep, "-o", coded, "--baseline", "none", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "eight.y4m", "--pix-fmt", "yuv420p", "-q")
    assert code == 0, err
    expected = list(decode(coded).frames)
    frames = read_yuv420(out_dir / "eight.y4m")
    assert len(frames) == 2 and frames[0][0].dtype == np.uint8
    for frame, planes in zip(frames, expected):
        for p, q in zip(frame, (planes.y, planes.u, planes.v)):
            assert np.array_equal(p, np.minimum((q.astype(np.int64) + 2) >> 2, 255))  # the nearest 8-bit code


@pytest.mark.parametrize("pix_fmt, tag", [("yuv420p", "C420jpeg"), ("yuv420p10le", "C420p10"),
                                          ("yuv444p16le", "C444p16")])
def test_decode_to_y4m_in_a_pixel_format(capsys, bicubic_file, out_dir, pix_fmt, tag):
    out = out_dir / "x.y4m"
    code, _, err = run(capsys, "decode", bicubic_file.path, "-o", out, "--pix-fmt", pix_fmt)
    assert code == 0, err
    assert f"(y4m {pix_fmt})" in err
    header = out.read_bytes().split(b"\n", 1)[0].decode().split()
    assert tag in header and "XCOLORRANGE=LIMITED" in header
    expected = list(decode(bicubic_file.path).frames)
    if pix_fmt != "yuv444p16le":  # 4:2:0 at 8 or 10 bits: the same code values (times 4 at 10 bits)
        frames = read_yuv420(out)
        factor = 4 if pix_fmt == "yuv420p10le" else 1
        assert len(frames) == 3
        for frame, planes in zip(frames, expected):
            assert frame[0].dtype == (np.uint16 if factor == 4 else np.uint8)
            for p, q in zip(frame, (planes.y, planes.u, planes.v)):
                assert np.array_equal(p, q.astype(np.uint16) * factor)
    else:  # 4:4:4 at 16 bits: luma scaled to 16 bits, chroma upsampled (swscale)
        with av.open(str(out)) as inp:
            frames = [np.frombuffer(f.planes[0], "<u2").reshape(29, -1)[:, :37] for f in inp.decode(video=0)]
        assert len(frames) == 3
        for luma, planes in zip(frames, expected):
            assert np.abs(luma / 256.0 - planes.y).max() <= 1.0


def test_pix_fmt_is_for_y4m_only(capsys, bicubic_file, out_dir):
    code, _, err = run(capsys, "decode", bicubic_file.path, "-o", f"{out_dir}/frames/", "--pix-fmt", "yuv420p", "-q")
    assert "--pix-fmt is for y4m output" in assert_one_line_error(code, err)
    assert leftovers(out_dir) == []


def test_decode_to_png_folder(capsys, dual_file, tiny_model, out_dir):
    from PIL import Image

    code, _, err = run(capsys, "decode", dual_file.path, "-o", f"{out_dir}/frames/", "--model", tiny_model.path, "-q")
    assert code == 0, err
    assert leftovers(out_dir) == ["frames"]
    names = sorted(p.name for p in (out_dir / "frames").iterdir())
    assert names == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    expected = list(decode(dual_file.path, str(tiny_model.path)).frames)
    for name, planes in zip(names, expected):
        # R'G'B' of the decoded planes, as swscale converts BT.601 limited range (the clip's format).
        assert np.array_equal(np.asarray(Image.open(out_dir / "frames" / name)), pyav_rgb(planes))


def test_decode_one_frame_to_png(capsys, dual_file, tiny_model, out_dir):
    from PIL import Image

    out = out_dir / "second.png"
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out, "--model", tiny_model.path, "--start", 1,
                       "--frames", 1)
    assert code == 0, err
    assert leftovers(out_dir) == ["second.png"] and f"{out}: 1 frame 37x29 (PNG)" in err
    expected = list(decode(dual_file.path, str(tiny_model.path)).frames)[1]
    assert np.array_equal(np.asarray(Image.open(out)), pyav_rgb(expected))


def test_decode_an_encoded_image_to_png(capsys, tmp_path, out_dir):
    from PIL import Image

    write_png(tmp_path / "photo.png", synthetic_rgb(64, 48, 1, seed=4, noise=10.0)[0])
    code, _, err = run(capsys, "encode", tmp_path / "photo.png", "-o", out_dir / "photo.mp4", "--baseline",
                       "bicubic", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "decode", out_dir / "photo.mp4", "-o", out_dir / "back.png", "-q")
    assert code == 0, err
    (expected,) = decode(out_dir / "photo.mp4").frames
    assert np.array_equal(np.asarray(Image.open(out_dir / "back.png")), pyav_rgb(expected, full_range=True))


def test_decode_to_png_refuses_many_frames(capsys, dual_file, tiny_model, out_dir):
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "all.png", "--model", tiny_model.path, "-q")
    line = assert_one_line_error(code, err)
    assert "holds one picture, not 3 frames of" in line and "--frames 1" in line and f"{out_dir}/all/" in line
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "all.png", "--model", tiny_model.path,
                       "--start", 1, "--frames", 2)
    assert "not 2 frames of" in assert_one_line_error(code, err) and "from frame 1" in err
    assert leftovers(out_dir) == []


def test_decode_into_an_empty_folder(capsys, bicubic_file, out_dir):
    folder = out_dir / "frames"
    folder.mkdir()
    code, _, err = run(capsys, "decode", bicubic_file.path, "-o", folder, "-q")
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == [f"frame_00000{i}.png" for i in (1, 2, 3)]
    assert leftovers(out_dir) == ["frames"]


def test_decode_to_mp4(capsys, dual_file, tiny_model, out_dir):
    out = out_dir / "view.mp4"
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out, "--model", tiny_model.path, "-q")
    assert code == 0, err
    assert leftovers(out_dir) == ["view.mp4"]
    with av.open(str(out)) as inp:
        stream = inp.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(inp.decode(stream))
    assert len(frames) == 3
    assert (frames[0].width, frames[0].height) == (38, 30)  # padded to even for 4:2:0
    with av.open(str(out)) as inp:
        assert "dualcodec" not in inp.metadata  # a plain video for viewing, not a dualcodec file


def test_decode_bicubic_and_plain_need_no_model(capsys, bicubic_file, out_dir):
    code, _, err = run(capsys, "decode", bicubic_file.path, "-o", out_dir / "b.y4m", "-q")
    assert code == 0, err
    frames = list(VideoReader(out_dir / "b.y4m").frames())
    assert len(frames) == 3 and shapes(frames[0]) == ((29, 37), (15, 19), (15, 19))
    assert all(same(a, b) for a, b in zip(frames, decode(bicubic_file.path).frames))


def test_decode_without_the_model(capsys, dual_file, out_dir):
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "x.y4m", "-q")
    line = assert_one_line_error(code, err)
    assert "'tiny'" in line and "--model" in line
    assert leftovers(out_dir) == []


def test_decode_with_the_wrong_model(capsys, dual_file, other_model, out_dir):
    code, _, err = run(capsys, "decode", dual_file.path, "-o", out_dir / "x.y4m", "--model", other_model.path, "-q")
    line = assert_one_line_error(code, err)
    assert "model mismatch" in line
    assert leftovers(out_dir) == []


def _corrupt(source: Path, destination: Path, kind: str) -> Path:
    data = bytearray(source.read_bytes())
    if kind == "side":
        pos, size = packet_spans(source, "data")[1]  # the middle frame's side packet
        data[pos + size // 2] ^= 0xFF
    elif kind == "base":
        pos, size = packet_spans(source, "video")[0]  # the key frame
        for i in range(pos + 8, pos + size):
            data[i] ^= 0x5A
    elif kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "tail":
        data = data[:-40]
    destination.write_bytes(bytes(data))
    return destination


@pytest.mark.parametrize("kind", ["side", "base", "truncated", "tail"])
@pytest.mark.parametrize("target", ["x.y4m", "x.mp4", "frames/"])
def test_strict_refuses_a_damaged_file_cleanly(capsys, dual_file, tiny_model, tmp_path, out_dir, kind, target):
    bad = _corrupt(dual_file.path, tmp_path / "bad.mp4", kind)
    code, _, err = run(capsys, "decode", bad, "-o", f"{out_dir}/{target}", "--model", tiny_model.path, "-q",
                       "--strict")
    line = assert_one_line_error(code, err)
    if kind == "side":
        assert "side stream of frame 2 is corrupted" in line
    assert "bad.mp4" in line
    assert leftovers(out_dir) == []  # no partial output, no *.partial* files


@pytest.mark.parametrize("kind, message", [("side", "1 damaged frame concealed (2)"),
                                           ("base", "damaged frame")])
def test_damage_is_concealed_and_named_by_default(capsys, dual_file, tiny_model, tmp_path, out_dir, kind, message):
    bad = _corrupt(dual_file.path, tmp_path / "bad.mp4", kind)
    code, _, err = run(capsys, "decode", bad, "-o", out_dir / "x.y4m", "--model", tiny_model.path, "-q")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dualcodec: warning: {bad}: ") and message in lines[0]
    assert "--strict refuses damaged files" in lines[0]
    frames = list(VideoReader(out_dir / "x.y4m").frames())
    assert len(frames) == 3  # every frame, the damaged one concealed
    clean = list(decode(dual_file.path, str(tiny_model.path)).frames)
    if kind == "side":  # frames 1 and 3 decode exactly; frame 2 lost its side stream only
        assert same(frames[0], clean[0]) and same(frames[2], clean[2])
        assert not same(frames[1], clean[1]) and psnr_yuv(frames[1], clean[1]) > 25


def test_truncated_file_is_refused_by_default_too(capsys, dual_file, tiny_model, tmp_path, out_dir):
    bad = _corrupt(dual_file.path, tmp_path / "bad.mp4", "truncated")  # the index is gone: nothing to conceal
    code, _, err = run(capsys, "decode", bad, "-o", out_dir / "x.y4m", "--model", tiny_model.path, "-q")
    assert "bad.mp4" in assert_one_line_error(code, err)
    assert leftovers(out_dir) == []


def test_corrupted_file_keeps_an_existing_output(capsys, dual_file, tiny_model, tmp_path, out_dir):
    (out_dir / "x.y4m").write_bytes(b"previous result")
    bad = _corrupt(dual_file.path, tmp_path / "bad.mp4", "side")
    code, _, err = run(capsys, "decode", bad, "-o", out_dir / "x.y4m", "--model", tiny_model.path, "-q", "--strict")
    assert_one_line_error(code, err)
    assert leftovers(out_dir) == ["x.y4m"]
    assert (out_dir / "x.y4m").read_bytes() == b"previous result"


@pytest.mark.parametrize("target, message", [("x.avi", "unsupported output"), ("x.jpg", "unsupported output")])
def test_decode_unsupported_output(capsys, bicubic_file, out_dir, target, message):
    code, _, err = run(capsys, "decode", bicubic_file.path, "-o", out_dir / target, "-q")
    line = assert_one_line_error(code, err)
    assert message in line
    assert leftovers(out_dir) == []


def test_decode_a_plain_mp4(capsys, tmp_path, out_dir):
    plain = make_av_clip(tmp_path / "plain.mp4", frames=2)
    code, _, err = run(capsys, "decode", plain, "-o", out_dir / "x.y4m", "-q")
    assert code == 0, err
    decoded = list(VideoReader(out_dir / "x.y4m").frames())
    assert len(decoded) == 2 and shapes(decoded[0]) == ((48, 64), (24, 32), (24, 32))
    assert all(same(a, b) for a, b in zip(decoded, decode(plain).frames, strict=True))


def test_decode_a_file_without_video(capsys, tmp_path, out_dir):
    sound = tmp_path / "sound.mp4"
    with av.open(str(sound), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    code, _, err = run(capsys, "decode", sound, "-o", out_dir / "x.y4m", "-q")
    assert "has no video stream" in assert_one_line_error(code, err)
    assert leftovers(out_dir) == []


# -- info --------------------------------------------------------------------------------


def test_info_json(capsys, dual_file, tiny_model):
    code, stdout, err = run(capsys, "info", dual_file.path, "--json")
    assert code == 0 and err == ""
    report = json.loads(stdout)
    size = dual_file.path.stat().st_size
    assert report["frames"] == 3
    assert (report["width"], report["height"]) == (37, 29)
    assert (report["base_width"], report["base_height"]) == (20, 16)
    assert report["scale"] == 2 and report["mode"] == "dual" and report["codec"] == "h264"
    assert report["model"] == {"name": "tiny", "fingerprint": tiny_model.fingerprint}
    b = report["bytes"]
    assert b["total"] == size
    assert b["base"] + b["side"] + b["other"] == size
    assert b["base"] > 0 and b["side"] > 0 and b["other"] > 0
    assert report["bpp"] == pytest.approx(8 * size / (3 * 37 * 29))
    with av.open(str(dual_file.path)) as inp:  # as ffprobe reads the base layer's track
        assert Fraction(report["rate"]) == inp.streams.video[0].average_rate == 25
    assert not report["rate_varies"] and report["seconds"] == pytest.approx(3 / 25)
    assert report["kbps"] == pytest.approx(8 * size / (3 / 25) / 1000)
    assert report["header"]["version"] == FORMAT_VERSION and report["header"]["format"] == "dualcodec"
    # The source's format: 8-bit limited range, BT.601 by the size rule (37x29, unflagged).
    assert report["header"]["bit_depth"] == 8
    assert report["header"]["color"] == {"matrix": "smpte170m", "range": "tv", "chroma": "420"}
    # The same numbers the encoder reported.
    assert (b["base"], b["side"]) == (dual_file.report.base_bytes, dual_file.report.side_bytes)


def test_info_text(capsys, dual_file, tiny_model):
    code, stdout, _ = run(capsys, "info", dual_file.path)
    assert code == 0
    assert "mode dual, scale 2x" in stdout
    assert ("frames 3 at 25 fps (0.12 s), 37x29 from a h264 base layer 20x16 (4:2:0 8-bit, range tv, matrix "
            "smpte170m, primaries smpte170m, transfer smpte170m)") in stdout
    assert "sample aspect ratio" not in stdout  # square samples
    assert tiny_model.fingerprint in stdout
    assert f"bytes {dual_file.path.stat().st_size}:" in stdout


def test_info_of_a_plain_mp4(capsys, tmp_path):
    plain = make_av_clip(tmp_path / "plain.mp4", frames=2)
    code, stdout, err = run(capsys, "info", plain, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert (report["mode"], report["scale"], report["codec"], report["frames"]) == ("plain", 1, "h264", 2)
    assert (report["width"], report["height"]) == (64, 48) and report["header"] is None
    assert report["bytes"]["total"] == plain.stat().st_size and report["bytes"]["side"] == 0
    code, stdout, _ = run(capsys, "info", plain)
    assert code == 0 and "no dualcodec header, mode plain, scale 1x" in stdout


def test_info_errors(capsys, tmp_path):
    code, _, err = run(capsys, "info", tmp_path / "missing.mp4")
    assert "input not found" in assert_one_line_error(code, err)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 1000)
    code, _, err = run(capsys, "info", garbage, "--json")
    assert "cannot open" in assert_one_line_error(code, err)


# -- whole pipeline on real content -------------------------------------------------------


def test_real_clip_through_the_command_line(capsys, tiny_model, tmp_path, out_dir):
    foreman = shared_file("video/foreman_352x288_2f.y4m")
    out = out_dir / "foreman.mp4"
    code, _, err = run(capsys, "encode", foreman, "-o", out, "--model", tiny_model.path, "--scale", 2, "-q")
    assert code == 0, err
    code, stdout, _ = run(capsys, "info", out, "--json")
    assert (json.loads(stdout)["frames"], json.loads(stdout)["mode"]) == (2, "dual")
    code, _, err = run(capsys, "decode", out, "-o", out_dir / "foreman.y4m", "--model", tiny_model.path, "-q")
    assert code == 0, err
    source = list(VideoReader(foreman).frames())
    decoded = list(VideoReader(out_dir / "foreman.y4m").frames())
    assert len(decoded) == 2 and shapes(decoded[0]) == ((288, 352), (144, 176), (144, 176))
    assert min(psnr_yuv(a, b) for a, b in zip(source, decoded)) > 26
    assert leftovers(out_dir) == ["foreman.mp4", "foreman.y4m"]


def test_working_directory_relative_paths(capsys, clip, tmp_path, monkeypatch):
    shutil.copy(clip.path, tmp_path / "in.y4m")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "encode", "in.y4m", "-o", "out.mp4", "--baseline", "bicubic", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "decode", "out.mp4", "-o", "frames/", "-q")
    assert code == 0, err
    assert len(os.listdir(tmp_path / "frames")) == 3


def test_hevc_files_play_in_apple_players_and_carry_no_x265_option_string(capsys, clip, out_dir):
    out = out_dir / "hevc.mp4"
    code, _, err = run(capsys, "encode", clip.path, "-o", out, "--codec", "hevc", "--baseline", "bicubic", "-q")
    assert code == 0, err
    with av.open(str(out)) as inp:
        assert inp.streams.video[0].codec_tag == "hvc1"
    assert b"x265 (build" not in out.read_bytes()  # the info SEI: 2.3 KB per file


def test_decode_reports_what_it_wrote(capsys, bicubic_file, out_dir):
    code, _, err = run(capsys, "decode", bicubic_file.path, "-o", out_dir / "x.y4m")
    assert code == 0
    assert f"{out_dir / 'x.y4m'}: 3 frames 37x29 (y4m yuv420p) from a bicubic file;" in err


def test_decode_to_mp4_keeps_the_audio(capsys, tmp_path, out_dir):
    source = make_av_clip(tmp_path / "talk.mp4", frames=5, audio=True)
    coded = out_dir / "coded.mp4"
    code, _, err = run(capsys, "encode", source, "-o", coded, "--baseline", "bicubic")
    assert code == 0 and "audio: aac copied" in err
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "view.mp4", "-q")
    assert code == 0, err
    with av.open(str(coded)) as inp:
        expected = [bytes(p) for p in inp.demux(inp.streams.audio[0]) if p.size]
    with av.open(str(out_dir / "view.mp4")) as inp:
        assert [bytes(p) for p in inp.demux(inp.streams.audio[0]) if p.size] == expected


@pytest.mark.parametrize("rotation, mirrored", [(270, False), (90, True)])
@pytest.mark.parametrize("how", [["--baseline", "bicubic"], ["--baseline", "none"], ["--scale", "2"]])
def test_a_turned_source_stays_turned_through_encode_and_decode(capsys, tmp_path, out_dir, tiny_model, how,
                                                                 rotation, mirrored):
    # A phone's portrait video is stored landscape with a display matrix: the base-layer
    # track and an MP4 decode carry the same matrix, the frames stay as stored.
    source = make_av_clip(tmp_path / "portrait.mp4", width=64, height=48, frames=3, rotation=rotation,
                          mirrored=mirrored)
    matrix = display_matrix(source)
    assert matrix is not None
    model = ["--model", str(tiny_model.path)] if "--scale" in how else []
    coded = out_dir / "coded.mp4"
    code, _, err = run(capsys, "encode", source, "-o", coded, *how, *model, "-q")
    assert code == 0, err
    assert display_matrix(coded) == matrix
    code, out, _ = run(capsys, "info", coded, "--json")
    assert (json.loads(out)["rotation"], json.loads(out)["mirrored"]) == (rotation, mirrored)
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "view.mp4", *model, "-q")
    assert code == 0 and err == ""
    assert display_matrix(out_dir / "view.mp4") == matrix
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "frames.y4m", *model, "-q")
    assert code == 0
    shown = f"rotated by {rotation} degrees counter-clockwise"
    shown += " and then mirrored left to right" if mirrored else ""
    assert err.strip() == (f"dualcodec: warning: {coded} is flagged to be shown {shown}, which y4m cannot carry: its "
                           "frames are written as stored (an .mp4 output keeps the flag)")
    assert [f[0].shape for f in read_yuv420(out_dir / "frames.y4m")] == [(48, 64)] * 3


@pytest.mark.parametrize("tag", range(1, 9))
def test_a_photos_exif_orientation_becomes_the_display_matrix_ffmpeg_reads_from_it(capsys, tmp_path, out_dir, tag):
    # FFmpeg turns a JPEG's EXIF orientation into a display matrix (its rotation readable
    # through PyAV, its mirror not); the encoded file's matrix gives the same rotation and
    # mirrors exactly the orientations that mirror (2, 4, 5, 7).
    exif = Image.Exif()
    exif[0x0112] = tag
    Image.fromarray(synthetic_rgb(64, 48, 1)[0]).save(tmp_path / "photo.jpg", exif=exif.tobytes())
    code, _, err = run(capsys, "encode", tmp_path / "photo.jpg", "-o", out_dir / "photo.mp4", "--baseline", "none",
                       "-q")
    assert code == 0, err
    with av.open(str(tmp_path / "photo.jpg"), format="image2") as inp:
        ffmpeg_rotation = next(inp.decode(video=0)).rotation
    with av.open(str(out_dir / "photo.mp4")) as inp:
        assert next(inp.decode(video=0)).rotation == ffmpeg_rotation
    a, b, _, c, d, *_ = display_matrix(out_dir / "photo.mp4") or [1, 0, 0, 0, 1]
    assert (a * d - b * c < 0) == (tag in (2, 4, 5, 7))


def _tags(path: Path) -> tuple[dict, list]:
    """The container's tags and each stream's language, as PyAV reads them (no dualcodec code)."""
    with av.open(str(path)) as inp:
        return dict(inp.metadata), [s.metadata.get("language") for s in inp.streams if s.type in ("video", "audio")]


@pytest.mark.parametrize("how", [["--baseline", "none"], ["--baseline", "bicubic"]])
def test_the_sources_tags_are_carried_as_ffmpeg_carries_them(capsys, tmp_path, out_dir, how):
    # A phone's creation time, a title and the streams' language, through encode and decode
    # to MP4; a tag the MP4 muxer does not write (ffmpeg drops it too) and --no-tags.
    tags = {"creation_time": "2023-11-27T16:03:21.000000Z", "title": "dog on a bed", "com.android.version": "13"}
    source = make_av_clip(tmp_path / "phone.mp4", frames=3, audio=True, tags=tags, language="eng")
    code, _, err = run(capsys, "encode", source, "-o", out_dir / "coded.mp4", *how, "-q")
    assert code == 0, err
    code, _, err = run(capsys, "decode", out_dir / "coded.mp4", "-o", out_dir / "view.mp4", "-q")
    assert code == 0, err
    for path in (out_dir / "coded.mp4", out_dir / "view.mp4"):
        container, languages = _tags(path)
        assert {k: container.get(k) for k in tags} == {**tags, "com.android.version": None}
        assert languages == ["eng", "eng"]
    code, _, err = run(capsys, "encode", source, "-o", out_dir / "bare.mp4", *how, "--no-tags", "-q")
    assert code == 0, err
    container, languages = _tags(out_dir / "bare.mp4")
    assert not set(tags) & set(container) and languages == ["und", "und"]


def _colour(path: Path) -> tuple[int, int, int]:
    """(primaries, transfer, matrix) of the video stream, as PyAV reads them (no dualcodec code)."""
    with av.open(str(path)) as inp:
        cc = inp.streams.video[0].codec_context
        return cc.color_primaries, cc.color_trc, cc.colorspace


@pytest.mark.parametrize("flagged, expected, name", [((9, 18), (9, 18, 9), "arib-std-b67"),
                                                     ((9, 16), (9, 16, 9), "smpte2084"),
                                                     (None, (9, 14, 9), "bt2020-10")])
def test_a_phones_hdr_transfer_is_carried(capsys, tmp_path, out_dir, tiny_model, flagged, expected, name):
    # A phone's HLG (or PQ) video came out flagged as BT.2020 SDR (transfer 14), so an HDR
    # player showed it flat; unflagged, the matrix's standard's values, as before.
    source = make_av_clip(tmp_path / "hdr.mp4", frames=2, matrix=9, colour=flagged)
    coded = out_dir / "coded.mp4"
    code, _, err = run(capsys, "encode", source, "-o", coded, "--scale", "2", "--model", tiny_model.path, "-q")
    assert code == 0, err
    assert _colour(coded) == expected
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "view.mp4", "--model", tiny_model.path, "-q")
    assert code == 0 and _colour(out_dir / "view.mp4") == expected
    code, out, _ = run(capsys, "info", coded, "--json")
    assert (json.loads(out)["primaries"], json.loads(out)["transfer"]) == ("bt2020", name)  # as ffprobe names them


@pytest.mark.parametrize("how", [["--scale", "2"], ["--baseline", "none"]])
@pytest.mark.parametrize("aspect", [Fraction(32, 27), None])
def test_an_anamorphic_sources_sample_aspect_ratio_is_carried(capsys, tmp_path, out_dir, tiny_model, how, aspect):
    # A DVD's 720x480 samples are shown 32/27 wide: dropped, players showed it squeezed.
    source = make_av_clip(tmp_path / "dvd.mp4", frames=2, aspect=aspect)
    coded = out_dir / "coded.mp4"
    model = ["--model", str(tiny_model.path)] if "--scale" in how else []
    code, _, err = run(capsys, "encode", source, "-o", coded, *how, *model, "-q")
    assert code == 0, err
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "view.mp4", *model, "-q")
    assert code == 0, err
    for path in (coded, out_dir / "view.mp4"):
        with av.open(str(path)) as inp:
            assert inp.streams.video[0].sample_aspect_ratio == aspect  # PyAV: None where square or unflagged
    code, out, _ = run(capsys, "info", coded, "--json")
    assert json.loads(out)["sample_aspect_ratio"] == ("32:27" if aspect else "1:1")


def test_a_folder_of_frames_encodes_in_natural_order_at_its_rate(capsys, tmp_path, out_dir):
    # decode -o FOLDER/ wrote frames that encode could not read back ("input is a folder").
    folder = tmp_path / "frames"
    folder.mkdir()
    rgb = synthetic_rgb(64, 48, 3, seed=4, noise=10.0)
    for name, picture in zip(["f2.png", "f10.png", "f1.png"], [rgb[1], rgb[2], rgb[0]]):
        write_png(folder / name, picture)
    (folder / "notes.txt").write_text("not a frame")
    coded = out_dir / "coded.mp4"
    code, _, err = run(capsys, "encode", folder, "-o", coded, "--baseline", "none", "--qp", "0", "--rate", "30000/1001",
                       "-q")
    assert code == 0, err
    with av.open(str(coded)) as inp:
        assert inp.streams.video[0].average_rate == Fraction(30000, 1001)
        decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    assert len(decoded) == 3
    # in natural order: each decoded frame is nearest its own picture (4:2:0 keeps about 30 dB of these)
    nearest = [max(range(3), key=lambda i: psnr(frame, rgb[i])) for frame in decoded]
    assert nearest == [0, 1, 2] and min(psnr(d, r) for d, r in zip(decoded, rgb)) > 27
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_png(mixed / "a.png", rgb[0])
    write_png(mixed / "b.png", synthetic_rgb(32, 32, 1)[0])
    for argv, message in (([folder / "notes.txt"], "cannot read"), ([tmp_path / "empty"], "folder without frames"),
                          ([coded, "--rate", "30"], "--rate is for a folder or numbered sequence of frames"),
                          ([mixed, "--baseline", "none", "-q"], "frame 2 is 32x32, the first was 64x48")):
        code, _, err = run(capsys, "encode", *argv, "-o", out_dir / "x.mp4")
        assert message in assert_one_line_error(code, err)


def test_numbered_frames_encode_as_ffmpeg_reads_them(capsys, tmp_path, out_dir):
    rgb = synthetic_rgb(64, 48, 3, seed=5, noise=10.0)
    for i, picture in enumerate(rgb, start=1):
        write_png(tmp_path / f"render_{i:04d}.png", picture)
    coded = out_dir / "render.mp4"
    code, _, err = run(capsys, "encode", tmp_path / "render_%04d.png", "-o", coded, "--baseline", "none", "--qp", "0",
                       "--rate", "24", "-q")
    assert code == 0, err
    with av.open(str(coded)) as inp:
        assert inp.streams.video[0].average_rate == 24
        decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    assert len(decoded) == 3 and min(psnr(d, r) for d, r in zip(decoded, rgb)) > 27
    code, _, err = run(capsys, "encode", tmp_path / "other_%04d.png", "-o", out_dir / "x.mp4")
    assert "no file numbered 0 to 4 matches" in assert_one_line_error(code, err)


def test_a_source_that_ends_before_its_announced_frames_is_named(capsys, tmp_path, out_dir):
    # A half-downloaded MKV announces its whole duration; the encode kept what there was
    # and said nothing.
    whole = tmp_path / "whole.mkv"
    with av.open(str(whole), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i, rgb in enumerate(synthetic_rgb(64, 48, 40, seed=3, noise=20.0)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for source, warned in ((whole, False), (cut, True)):
        code, _, err = run(capsys, "encode", source, "-o", out_dir / f"{source.stem}.mp4", "--baseline", "none", "-q")
        assert code == 0, err
        lines = [line for line in err.splitlines() if "warning" in line]
        assert len(lines) == warned
    assert f"{cut} ended after " in lines[0] and "of the 40 its container announces" in lines[0]
    code, _, err = run(capsys, "encode", cut, "-o", out_dir / "part.mp4", "--baseline", "none", "--frames", "5", "-q")
    assert code == 0 and "warning" not in err  # the 5 frames asked for are there


def test_an_unturned_source_gets_no_display_matrix(capsys, tmp_path, out_dir):
    source = make_av_clip(tmp_path / "clip.mp4", frames=2)
    code, _, err = run(capsys, "encode", source, "-o", out_dir / "coded.mp4", "--baseline", "bicubic", "-q")
    assert code == 0, err
    assert display_matrix(out_dir / "coded.mp4") is None
    write_png(tmp_path / "one.png", synthetic_rgb(64, 48, 1)[0])
    code, _, err = run(capsys, "encode", tmp_path / "one.png", "-o", out_dir / "one.mp4", "--baseline", "none")
    assert code == 0 and f"{out_dir / 'one.mp4'}: 1 frame 64x48 (from rgb24, coded as 4:2:0 8-bit), base 64x48;" in err
    assert display_matrix(out_dir / "one.mp4") is None
    code, out, _ = run(capsys, "info", out_dir / "coded.mp4")
    assert "shown" not in out


@pytest.mark.parametrize("audio_codec", ["aac", "pcm_s16le"])
def test_a_seek_to_mp4_keeps_the_audio_in_sync(capsys, tmp_path, out_dir, audio_codec):
    # decode --start N -o view.mp4 carries the audio from frame N's time (it used to drop it).
    source = clip_with_a_flash_and_a_click(tmp_path / f"src.{'mkv' if 'pcm' in audio_codec else 'mp4'}", 0.0, 0.0,
                                           audio_codec, flash=40, frames=50)
    coded = out_dir / "coded.mp4"
    code, _, err = run(capsys, "encode", source, "-o", coded, "--baseline", "bicubic", "--gop", "16", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "view.mp4", "--start", "35", "-q")
    assert code == 0, err
    flash, click = flash_and_click_seconds(out_dir / "view.mp4")
    assert flash == pytest.approx(5 / 25) and click == pytest.approx(flash, abs=0.01)
    # --frames ends the video and its audio: frames 35-44 play 0.4 s
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "part.mp4", "--start", "35", "--frames", "10", "-q")
    assert code == 0, err
    with av.open(str(out_dir / "part.mp4")) as inp:
        assert inp.streams.video[0].frames == 10
        audio = [p for p in inp.demux(inp.streams.audio[0]) if p.size]
        stored = sum(p.duration for p in audio) * inp.streams.audio[0].time_base
    assert 10 / 25 <= stored <= 10 / 25 + 3 * 1024 / 16000  # a copy's spare frames
    assert flash_and_click_seconds(out_dir / "part.mp4") == (flash, click)


def test_decoding_a_plain_video_to_mp4_keeps_all_its_audio(capsys, tmp_path, out_dir):
    # Its audio runs 0.13 s past the last frame; only --frames ends it with the frames.
    source = clip_with_a_flash_and_a_click(tmp_path / "src.mp4", 0.0, 0.0, "aac", flash=5, frames=10)

    def audio_seconds(path: Path) -> float:
        with av.open(str(path)) as inp:
            stream = inp.streams.audio[0]
            return float(sum(p.duration for p in inp.demux(stream) if p.size) * stream.time_base)

    code, _, err = run(capsys, "decode", source, "-o", out_dir / "view.mp4", "-q")
    assert code == 0, err
    kept = audio_seconds(out_dir / "view.mp4")
    assert kept == pytest.approx(audio_seconds(source))
    code, _, err = run(capsys, "decode", source, "-o", out_dir / "part.mp4", "--frames", "10", "-q")
    assert code == 0, err
    assert audio_seconds(out_dir / "part.mp4") <= 10 / 25 + 2 * 1024 / 16000 < kept  # a copy's priming packet


def _shown_times(path: Path, kind: str = "video") -> list[float]:
    """When each frame (or data packet) is shown, as PyAV reads the file (no dualcodec code)."""
    with av.open(str(path)) as inp:
        if kind == "video":
            return [float(f.pts * f.time_base) for f in inp.decode(video=0)]
        return [float(p.pts * p.time_base) for p in inp.demux(inp.streams.data[0]) if p.size]


@pytest.mark.parametrize("how", [["--baseline", "none"], ["--scale", "2"]])
def test_frames_keep_their_times_through_encode_and_decode(capsys, tmp_path, out_dir, tiny_model, how):
    # Phone videos vary their rate (facade's frames come 33 to 67 ms apart); at the average
    # rate a frame was shown up to 183 ms from its time there.
    times = [0, 0.033, 0.1, 0.133, 0.25, 0.3, 0.333]
    source = make_av_clip(tmp_path / "phone.mp4", frames=7, times=times)
    model = ["--model", str(tiny_model.path)] if "--scale" in how else []
    coded = out_dir / "coded.mp4"
    code, _, err = run(capsys, "encode", source, "-o", coded, *how, *model, "-q")
    assert code == 0, err
    assert _shown_times(coded) == pytest.approx(times, abs=1e-4)
    if model:  # the side stream's packets share their frames' times
        assert _shown_times(coded, "data") == pytest.approx(times, abs=1e-4)
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "view.mp4", *model, "-q")
    assert code == 0, err
    assert _shown_times(out_dir / "view.mp4") == pytest.approx(times, abs=1e-4)
    code, out, _ = run(capsys, "info", coded, "--json")
    with av.open(str(coded)) as inp:
        average = inp.streams.video[0].average_rate
    report = json.loads(out)
    assert report["rate_varies"] and Fraction(report["rate"]) == average
    assert report["seconds"] == pytest.approx(times[-1] + 1 / average, abs=1e-4)  # the last frame's end
    code, _, err = run(capsys, "decode", coded, "-o", out_dir / "tail.mp4", "--start", "4", *model, "-q")
    assert code == 0, err
    assert _shown_times(out_dir / "tail.mp4") == pytest.approx([t - times[4] for t in times[4:]], abs=1e-4)
    assert decode(coded, model[1] if model else None, start=4).start_time == pytest.approx(times[4], abs=1e-4)
    code, _, err = run(capsys, "encode", source, "-o", out_dir / "cut.mp4", "--start", "2", *how, *model, "-q")
    assert code == 0, err
    assert _shown_times(out_dir / "cut.mp4") == pytest.approx([t - times[2] for t in times[2:]], abs=1e-4)
