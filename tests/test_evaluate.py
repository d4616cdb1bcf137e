"""`dualcodec eval`: real files in, CompressAI-layout results out; the plain rows against PyAV alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dualcodec.cli import main
from dualcodec.errors import DualcodecError
from dualcodec.evaluate import RDPoint, results_json
from helpers import (
    make_av_clip,
    psnr,
    read_yuv420,
    shared_file,
    synthetic_frames,
    synthetic_rgb,
    video_bitstream,
    without_banner_units,
    write_png,
    write_y4m,
    x264_mp4,
)


def _eval(capsys, *argv) -> tuple[int, str]:
    code = main(["eval", *map(str, argv)])
    return code, capsys.readouterr().err


@pytest.fixture
def inputs(tmp_path) -> list[Path]:
    still = write_png(tmp_path / "still.png", synthetic_rgb(96, 64, 1, seed=3)[0])
    clip = write_y4m(tmp_path / "clip.y4m", synthetic_frames(96, 64, 4, seed=4))
    return [still, clip]


def test_eval_writes_compressai_results_that_compressai_parses(tmp_path, capsys, inputs):
    from compressai.utils.plot.__main__ import parse_json_file

    out = tmp_path / "plain.json"
    code, err = _eval(capsys, *inputs, "--baseline", "none", "--qp", "40", "30", "--frames", "3", "-o", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    results = data["results"]
    assert data["name"] == "plain h264" and data["settings"]["baseline"] == "none"
    assert data["settings"]["model"] is None and data["settings"]["model_fingerprint"] is None
    assert results["qp"] == [30, 40]  # sorted
    for key in ("bpp", "psnr-rgb", "psnr-yuv", "psnr-y", "psnr-u", "psnr-v", "ms-ssim-rgb", "lpips", "vmaf",
                "encoding_time", "decoding_time", "file_bytes", "base_bytes", "side_bytes", "other_bytes"):
        assert len(results[key]) == 2, key
    assert results["bpp"][0] > results["bpp"][1] and results["psnr-rgb"][0] > results["psnr-rgb"][1]
    assert results["lpips"][0] < results["lpips"][1]
    assert 100 >= results["vmaf"][0] > results["vmaf"][1] > 0  # VMAF falls with the rate
    assert results["ms-ssim-rgb"] == [None, None]  # 64 pixels high: too small for MS-SSIM
    assert results["side_bytes"] == [0, 0]
    # Per-input points; the clip was cut to 3 frames; bytes add up; bpp is the whole file's.
    points = {Path(i["source"]).name: i["points"] for i in data["inputs"]}
    assert [p["frames"] for p in points["clip.y4m"]] == [3, 3]
    for p in points["still.png"] + points["clip.y4m"]:
        assert p["base_bytes"] + p["side_bytes"] + p["other_bytes"] == p["file_bytes"]
        assert p["bpp"] == pytest.approx(8 * p["file_bytes"] / (p["frames"] * 96 * 64))
        assert p["encode_seconds"] > 0 and p["decode_seconds"] > 0
        assert p["psnr_yuv"] == pytest.approx((6 * p["psnr_y"] + p["psnr_u"] + p["psnr_v"]) / 8)
        assert (p["mode"], p["scale"]) == ("plain", 1)
    assert results["bpp"][0] == pytest.approx(np.mean([points[n][0]["bpp"] for n in points]))
    assert results["file_bytes"][1] == sum(points[n][1]["file_bytes"] for n in points)
    parsed = parse_json_file(out, "psnr")
    assert parsed["xs"] == results["bpp"] and parsed["ys"] == results["psnr-rgb"]
    assert "QP 30" in err and f"wrote {out}" in err


def test_eval_of_the_default_model_reports_the_dual_layer(default_model_path, tmp_path, capsys, inputs):
    out = tmp_path / "dual.json"
    code, err = _eval(capsys, inputs[0], "--qp", "32", "-q", "-o", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["name"] == "dualcodec default auto h264"  # --scale auto, the default
    assert data["settings"]["model"] == "default" and data["settings"]["scale"] == "auto"
    point = data["inputs"][0]["points"][0]
    assert point["psnr_rgb"] > 25 and point["psnr_yuv"] > 25 and 0 <= point["lpips"] < 0.5
    assert (point["mode"], point["scale"]) in {("plain", 1), ("dual", 2)}  # what auto chose
    assert err == ""  # --quiet


@pytest.mark.parametrize("scale, name, modes", [
    ("1", "plain h264", {("plain", 1)}),
    ("2", "dualcodec {model} h264", {("dual", 2)}),
    ("auto", "dualcodec {model} auto h264", {("plain", 1), ("dual", 2)}),
])
def test_eval_scale(tmp_path, capsys, inputs, tiny_model, scale, name, modes):
    out = tmp_path / "r.json"
    code, err = _eval(capsys, inputs[1], "--model", tiny_model.path, "--scale", scale, "--qp", "30", "--frames", "2",
                      "-q", "-o", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["name"] == name.format(model=tiny_model.path)
    assert data["settings"]["scale"] == (scale if scale == "auto" else int(scale))
    assert data["settings"]["model_fingerprint"] == (None if scale == "1" else tiny_model.fingerprint)
    point = data["inputs"][0]["points"][0]
    assert (point["mode"], point["scale"]) in modes  # the file's, whatever auto chose
    assert point["side_bytes"] == 0 or point["mode"] == "dual"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--baseline", "none", "-o", "out.txt"], "output must be a .json file"),
        (["--baseline", "none", "--frames", "0", "-o", "out.json"], "--frames must be at least 1"),
        (["--baseline", "none", "--qp", "70", "-o", "out.json"], "qp 70 is out of range"),
        (["--baseline", "none", "--qp", "32", "54", "-o", "out.json"], "qp 54 is out of range for 8-bit h264"),
        (["--baseline", "none", "--start", "-1", "-o", "out.json"], "--start must be 0 or more"),
    ],
)
def test_eval_errors_are_one_line_and_leave_no_file(tmp_path, capsys, inputs, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _eval(capsys, inputs[0], *argv)
    assert code == 1 and err.count("\n") == 1 and message in err
    assert not list(tmp_path.glob("out.*"))


def test_eval_measures_at_the_depth_asked_as_encode_codes_it(tmp_path, capsys):
    deep = write_y4m(tmp_path / "deep.y4m", synthetic_frames(96, 64, 3, seed=6, noise=20.0, pix_fmt="yuv420p10le"))
    code, err = _eval(capsys, deep, "--baseline", "none", "--qp", "30", "--pix-fmt", "yuv420p", "-q",
                      "-o", tmp_path / "eight.json")
    assert code == 0, err
    data = json.loads((tmp_path / "eight.json").read_text())
    assert data["settings"]["pix_fmt"] == "yuv420p"
    (point,) = data["inputs"][0]["points"]
    # the same coding by encode, decoded by PyAV and scored in numpy against the source rounded to 8 bits
    code = main(["encode", str(deep), "-o", str(tmp_path / "eight.mp4"), "--baseline", "none", "--qp", "30",
                 "--pix-fmt", "yuv420p", "-q"])
    assert code == 0
    assert point["file_bytes"] == (tmp_path / "eight.mp4").stat().st_size
    decoded = read_yuv420(tmp_path / "eight.mp4")
    source = read_yuv420(deep)
    scores = []
    for frame, original in zip(decoded, source, strict=True):
        values = [psnr(np.minimum((o.astype(np.int64) + 2) >> 2, 255), d, 255.0) for o, d in zip(original, frame)]
        scores.append((6 * values[0] + values[1] + values[2]) / 8)
    assert point["psnr_yuv"] == pytest.approx(float(np.mean(scores)), abs=1e-6)


def test_eval_from_a_start_frame_measures_what_a_cut_clip_gives(tmp_path, capsys):
    frames = synthetic_frames(96, 64, 5, seed=4)
    whole, cut = write_y4m(tmp_path / "whole.y4m", frames), write_y4m(tmp_path / "cut.y4m", frames[2:4])
    for source, extra, out in ((whole, ["--start", "2", "--frames", "2"], "a.json"), (cut, [], "b.json")):
        code, err = _eval(capsys, source, "--baseline", "none", "--qp", "30", *extra, "-q", "-o", tmp_path / out)
        assert code == 0, err
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert a["settings"]["start"] == 2 and "start" not in b["settings"]
    (pa,), (pb,) = a["inputs"][0]["points"], b["inputs"][0]["points"]
    assert pa["frames"] == 2 and (pa["file_bytes"], pa["psnr_yuv"]) == (pb["file_bytes"], pb["psnr_yuv"])


def test_eval_measures_the_coding_without_the_sources_tags(tmp_path, capsys):
    # A phone's creation time costs a dual file 72 bytes; the rate eval reports is the coding's.
    tags = {"creation_time": "2023-11-27T16:03:21.000000Z"}
    phone, bare = (make_av_clip(tmp_path / name, width=96, height=64, frames=2, tags=t)
                   for name, t in (("phone.mp4", tags), ("bare.mp4", None)))
    sizes = []
    for source in (phone, bare):
        code, err = _eval(capsys, source, "--baseline", "bicubic", "--qp", "30", "-q", "-o", tmp_path / "r.json", "-y")
        assert code == 0, err
        sizes.append(json.loads((tmp_path / "r.json").read_text())["inputs"][0]["points"][0]["file_bytes"])
    assert sizes[0] == sizes[1]
    code = main(["encode", str(phone), "-o", str(tmp_path / "kept.mp4"), "--baseline", "bicubic", "--qp", "30", "-q"])
    assert code == 0 and (tmp_path / "kept.mp4").stat().st_size == sizes[0] + 72  # the creation time's mdta key


def test_eval_missing_input_is_an_error(tmp_path, capsys):
    code, err = _eval(capsys, tmp_path / "nope.png", "--baseline", "none", "-o", tmp_path / "r.json")
    assert code == 1 and "input not found" in err


def test_results_average_over_inputs_and_store_nan_as_null():
    def point(source: str, qp: int, psnr: float, ms_ssim: float) -> RDPoint:
        return RDPoint(source, qp, 1, 10, 10, 100, 80, 0, psnr, psnr, 50, 50, psnr, ms_ssim, 0.1, 1.0, 0.5)

    points = [point("a", 32, 30.0, 0.9), point("b", 32, 34.0, float("nan")), point("a", 27, 33.0, 0.95)]
    data = results_json(points, "x", "y", {})
    assert data["results"]["qp"] == [27, 32]
    assert data["results"]["psnr-rgb"] == [33.0, 32.0]
    assert data["results"]["ms-ssim-rgb"] == [0.95, None]
    assert data["inputs"][1]["points"][0]["ms_ssim"] is None
    json.dumps(data, allow_nan=False)


def _independent_plain_encode(source: Path, path: Path, qp: int, frames: int) -> tuple[int, int, float, float]:
    """The plain codec without dualcodec's reader, codec, container or decoder: the y4m's
    planes (PyAV) straight into libx264 and an MP4 (PyAV), preset medium, constant QP, GOP 32,
    flagged as the base layer of an unflagged 320x240 source is (BT.601, limited range).

    Returns (file bytes, video packet bytes, PSNR-YUV, RGB PSNR), quality the mean over the
    frames, as in the results; RGB by swscale's defaults (BT.601, limited range).
    """
    import av

    with av.open(str(source)) as inp:
        rate = inp.streams.video[0].average_rate
    originals = read_yuv420(source, frames)
    x264_mp4(path, originals, qp, rate, colour=(6, 6, 6, 1), gop=32, preset="medium")
    decoded = read_yuv420(path)
    assert len(decoded) == frames

    def rgb(planes):
        height, width = planes[0].shape
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, data in zip(frame.planes, planes):
            padded = np.zeros((data.shape[0], plane.line_size), np.uint8)
            padded[:, : data.shape[1]] = data
            plane.update(padded.tobytes())
        return frame.to_ndarray(format="rgb24")

    yuv = [(6 * psnr(a[0], b[0]) + psnr(a[1], b[1]) + psnr(a[2], b[2])) / 8 for a, b in zip(originals, decoded)]
    rgb_psnr = [psnr(rgb(a), rgb(b)) for a, b in zip(originals, decoded)]
    video_bytes = sum(len(p) for p in video_bitstream(path)[1])
    return path.stat().st_size, video_bytes, float(np.mean(yuv)), float(np.mean(rgb_psnr))


@pytest.mark.slow
@pytest.mark.parametrize("qp", [27, 37])
def test_plain_rows_match_an_independent_pyav_encode(tmp_path, capsys, qp):
    source = shared_file("video/cars_320x240_30f.y4m")
    out = tmp_path / "plain.json"
    code, err = _eval(capsys, source, "--baseline", "none", "--qp", qp, "--frames", 30, "-q", "-o", out)
    assert code == 0, err
    row = json.loads(out.read_text())["inputs"][0]["points"][0]
    file_bytes, video_bytes, psnr_yuv, psnr_rgb = _independent_plain_encode(source, tmp_path / "pyav.mp4", qp, 30)
    banner = video_bytes - sum(len(without_banner_units(p)) for p in video_bitstream(tmp_path / "pyav.mp4")[1])
    assert 500 < banner < 800 and row["base_bytes"] == video_bytes - banner  # the same bitstream, less x264's SEI
    # Issue 4: the same bytes within 1% and the same PSNR within 0.01 dB. A plain file
    # carries no dualcodec header (it cost 345 bytes, 2.1% of this clip at QP 37).
    assert row["file_bytes"] == pytest.approx(file_bytes - banner, rel=0.01)
    assert row["psnr_yuv"] == pytest.approx(psnr_yuv, abs=0.01)
    assert row["psnr_rgb"] == pytest.approx(psnr_rgb, abs=0.01)


def _point(source: str, qp: int) -> RDPoint:
    return RDPoint(source, qp, 1, 10, 10, 100, 80, 0, 30.0, 30.0, 40.0, 40.0, 31.0, float("nan"), 0.1, 1.0, 0.5,
                   mode="plain", scale=1, vmaf=88.5)


def test_a_partial_sweep_averages_only_the_qps_every_source_has():
    points = [_point("a", 27), _point("b", 27), _point("a", 32)]
    data = results_json(points, "x", "y", {}, sources=["a", "b"], planned_qps=[27, 32])
    assert data["results"]["qp"] == [27] and data["complete"] is False
    assert [len(i["points"]) for i in data["inputs"]] == [2, 1]
    done = results_json(points + [_point("b", 32)], "x", "y", {}, sources=["a", "b"], planned_qps=[27, 32])
    assert done["results"]["qp"] == [27, 32] and done["complete"] is True


def test_points_round_trip_through_the_results_file(tmp_path):
    from dualcodec.evaluate import points_from_results, resumable_points

    points = [_point("a", 27), _point("b", 32)]
    settings = {"codec": "h264", "qps": [27, 32]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results_json(points, "x", "y", settings)))
    back = resumable_points(path, settings)
    assert [p.source for p in back] == ["a", "b"] and math.isnan(back[0].ms_ssim)
    assert [dict(vars(p), ms_ssim=0) for p in back] == [dict(vars(p), ms_ssim=0) for p in points]
    assert points_from_results({"inputs": []}) == []
    with pytest.raises(DualcodecError, match="measured with other codec"):
        resumable_points(path, {**settings, "codec": "hevc"})
    path.write_bytes(b"\xff\xfe not json")
    with pytest.raises(DualcodecError, match="not a dualcodec eval results file"):
        resumable_points(path, settings)
