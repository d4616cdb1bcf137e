"""`dualcodec eval`: real files in, CompressAI-layout results out; the plain rows against PyAV alone."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dualcodec.cli import main
from dualcodec.errors import DualcodecError
from dualcodec.evaluate import RDPoint, results_json
from helpers import shared_file, synthetic_frames, write_png, write_y4m


def _eval(capsys, *argv) -> tuple[int, str]:
    code = main(["eval", *map(str, argv)])
    return code, capsys.readouterr().err


@pytest.fixture
def inputs(tmp_path) -> list[Path]:
    still = write_png(tmp_path / "still.png", synthetic_frames(96, 64, 1, seed=3)[0])
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
    assert results["qp"] == [30, 40]  # sorted
    for key in ("bpp", "psnr-rgb", "psnr-yuv", "psnr-y", "psnr-u", "psnr-v", "ms-ssim-rgb", "lpips",
                "encoding_time", "decoding_time", "file_bytes", "base_bytes", "side_bytes", "other_bytes"):
        assert len(results[key]) == 2, key
    assert results["bpp"][0] > results["bpp"][1] and results["psnr-rgb"][0] > results["psnr-rgb"][1]
    assert results["lpips"][0] < results["lpips"][1]
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
    assert results["bpp"][0] == pytest.approx(np.mean([points[n][0]["bpp"] for n in points]))
    assert results["file_bytes"][1] == sum(points[n][1]["file_bytes"] for n in points)
    parsed = parse_json_file(out, "psnr")
    assert parsed["xs"] == results["bpp"] and parsed["ys"] == results["psnr-rgb"]
    assert "QP 30" in err and f"wrote {out}" in err


def test_eval_of_the_default_model_reports_the_dual_layer(tmp_path, capsys, inputs):
    out = tmp_path / "dual.json"
    code, err = _eval(capsys, inputs[0], "--qp", "32", "-q", "-o", out)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["name"] == "dualcodec default h264" and data["settings"]["model"] == "default"
    point = data["inputs"][0]["points"][0]
    assert point["psnr_rgb"] > 25 and 0 <= point["lpips"] < 0.5
    assert err == ""  # --quiet


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--baseline", "none", "-o", "out.txt"], "output must be a .json file"),
        (["--baseline", "none", "--frames", "0", "-o", "out.json"], "--frames must be at least 1"),
        (["--baseline", "none", "--qp", "70", "-o", "out.json"], "qp 70 is out of range"),
    ],
)
def test_eval_errors_are_one_line_and_leave_no_file(tmp_path, capsys, inputs, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _eval(capsys, inputs[0], *argv)
    assert code == 1 and err.count("\n") == 1 and message in err
    assert not list(tmp_path.glob("out.*"))


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


def _independent_plain_encode(source: Path, path: Path, qp: int, frames: int) -> tuple[int, int, float]:
    """The plain codec without dualcodec's codec, container or decoder: PyAV straight to MP4.

    Same source frames, same RGB -> BT.709 limited-range 4:2:0 conversion (the frames
    handed to any base codec), x264 preset medium, constant QP, GOP 32, yuv420p.
    Returns (file bytes, video packet bytes, RGB PSNR of the decoded frames).
    """
    import av
    import torch

    from dualcodec.video import VideoReader
    from dualcodec.yuv import YUVFormat, quantize_planes, rgb_to_yuv420, yuv420_to_rgb

    fmt = YUVFormat(8, False)
    originals = [rgb for _, rgb in zip(range(frames), VideoReader(source).frames())]
    rate = VideoReader(source).info.rate
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        h, w = originals[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = w, h, "yuv420p", 32
        stream.codec_context.colorspace = stream.codec_context.color_primaries = stream.codec_context.color_trc = 1
        stream.codec_context.color_range = 1
        stream.options = {"preset": "medium", "qp": str(qp)}
        for i, rgb in enumerate(originals):
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
            y, uv = quantize_planes(*rgb_to_yuv420(x, fmt), fmt)
            planes = np.concatenate([y.numpy().ravel(), uv.numpy().ravel()]).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(planes.reshape(-1, w), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1) / rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    video_bytes, mse = 0, []
    with av.open(str(path)) as inp:
        for packet in inp.demux(inp.streams.video[0]):
            video_bytes += packet.size
            for frame, rgb in zip(packet.decode(), originals[len(mse):]):
                planes = frame.to_ndarray().astype(np.float32)  # [3H/2, W]: Y, then U and V
                y = torch.from_numpy(planes[:h])[None, None]
                uv = torch.from_numpy(planes[h:].reshape(2, h // 2, w // 2))[None]
                x_hat = (yuv420_to_rgb(y, uv, fmt).clamp(0, 1) * 255).round()[0].permute(1, 2, 0).numpy()
                mse.append(np.mean((x_hat - rgb.astype(np.float32)) ** 2))
    assert len(mse) == frames
    return path.stat().st_size, video_bytes, float(np.mean([10 * math.log10(255**2 / m) for m in mse]))


@pytest.mark.slow
@pytest.mark.parametrize("qp", [27, 37])
def test_plain_rows_match_an_independent_pyav_encode(tmp_path, capsys, qp):
    source = shared_file("video/cars_320x240_30f.y4m")
    out = tmp_path / "plain.json"
    code, err = _eval(capsys, source, "--baseline", "none", "--qp", qp, "--frames", 30, "-q", "-o", out)
    assert code == 0, err
    row = json.loads(out.read_text())["inputs"][0]["points"][0]
    file_bytes, video_bytes, psnr = _independent_plain_encode(source, tmp_path / "pyav.mp4", qp, 30)
    assert row["base_bytes"] == video_bytes  # the very same bitstream
    # Issue 4: the same bytes within 1% and the same PSNR within 0.01 dB. A plain file
    # carries no dualcodec header (it cost 345 bytes, 2.1% of this clip at QP 37).
    assert row["file_bytes"] == pytest.approx(file_bytes, rel=0.01)
    assert row["psnr_rgb"] == pytest.approx(psnr, abs=0.01)


def _point(source: str, qp: int) -> RDPoint:
    return RDPoint(source, qp, 1, 10, 10, 100, 80, 0, 30.0, 30.0, 40.0, 40.0, 31.0, float("nan"), 0.1, 1.0, 0.5)


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
