"""dualcodec.auto: --scale auto keeps whichever candidate pays best, never worse than plain."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dualcodec.auto import AutoCodec, Trial, choose, plain_curve_at, psnr_yuv
from dualcodec.basecodec import BaseCodecSettings
from dualcodec.codec import BicubicLayers, LayeredCodec, PlainLayers, decode, make_codec
from dualcodec.container import ContainerReader
from dualcodec.video import VideoReader
from helpers import synthetic_frames, write_y4m


def _trial(file_bytes: int, quality: float, mode: str = "plain", scale: int = 1) -> Trial:
    return Trial(mode, scale, file_bytes, quality)


def test_plain_curve_is_the_line_in_psnr_over_log_rate():
    a, b = _trial(1000, 30.0), _trial(2000, 33.0)  # 3 dB per doubling
    assert plain_curve_at(2000, [a, b]) == pytest.approx(33.0)
    assert plain_curve_at(1000, [b, a]) == pytest.approx(30.0)
    assert plain_curve_at(math.sqrt(2) * 1000, [a, b]) == pytest.approx(31.5)
    assert plain_curve_at(500, [a, b]) == pytest.approx(27.0)  # extrapolated on the left
    assert plain_curve_at(4000, [a, b]) == pytest.approx(36.0)
    assert plain_curve_at(700, [_trial(1000, 30.0), _trial(1000, 31.0)]) == 31.0  # one rate: its best quality
    # Between the two points around the rate, not the two at the top.
    c = _trial(500, 25.0)  # 5 dB per halving below 1000 B
    assert plain_curve_at(math.sqrt(2) * 500, [b, a, c]) == pytest.approx(27.5)
    assert plain_curve_at(250, [b, a, c]) == pytest.approx(20.0)


def test_choose_keeps_a_candidate_only_above_the_plain_curve():
    plain = [_trial(2000, 33.0), _trial(1000, 30.0)]  # 3 dB per doubling of the rate
    above, below = _trial(1000, 30.5, "dual", 2), _trial(1000, 29.5, "dual", 2)
    assert choose(plain, [above])[0] == 0
    assert choose(plain, [below])[0] is None
    kept, why = choose(plain, [below, _trial(1500, 33.0, "bicubic", 2)])
    assert kept == 1
    assert why.startswith("scale auto: kept 2x bicubic (1500 B, 33.00 dB, +1.25 dB against the plain codec")
    assert "tried 1x plain (2000 B, 33.00 dB)" in why and "2x dual (1000 B, 29.50 dB, -0.50 dB" in why
    assert choose(plain, [])[0] is None  # no candidate: plain
    assert choose(plain, [_trial(1000, 30.25, "dual", 2)])[0] is None  # within the margin: plain


def test_choose_does_not_compare_a_candidate_smaller_than_any_plain_file():
    # As SVT-AV1 coded kodim01 at QP 48: a 4x file of 5478 B at 25.8 dB, far below the plain
    # codec's smallest file, beat the line extrapolated down to it, 11 dB under the plain file.
    plain = [_trial(65007, 36.99), _trial(16930, 30.13)]  # the requested QP and the top one
    tiny = _trial(5478, 25.78, "dual", 4)
    assert tiny.psnr_yuv - plain_curve_at(tiny.file_bytes, plain) > 0.3  # the extrapolation says it pays
    kept, why = choose(plain, [tiny])
    assert kept is None
    assert "4x dual (5478 B, 25.78 dB, below the plain codec's smallest file (16930 B): not compared)" in why
    assert choose(plain, [tiny, _trial(20000, 32.0, "dual", 2)])[0] == 1  # within reach: compared


def test_psnr_yuv_matches_numpy(clip, bicubic_file):
    decoded = list(decode(bicubic_file.path).frames)
    expected = []
    for plane in ("y", "u", "v"):
        a = np.stack([getattr(f, plane) for f in clip.frames]).astype(np.float64)
        b = np.stack([getattr(f, plane) for f in decoded]).astype(np.float64)
        expected.append(10 * np.log10(255**2 / np.mean((a - b) ** 2)))
    want = (6 * expected[0] + expected[1] + expected[2]) / 8
    assert psnr_yuv(clip.frames, decoded, 8) == pytest.approx(want, abs=1e-9)


def _auto(second, qp: int) -> AutoCodec:
    settings = BaseCodecSettings(qp=qp)
    return AutoCodec(LayeredCodec(PlainLayers(), settings), [LayeredCodec(second, settings)])


def test_a_worse_candidate_is_not_chosen(clip, tiny_model, tmp_path):
    # The tiny model's random side stream and upsampler lose to plain at a fine QP.
    codec = make_codec(BaseCodecSettings(qp=20), None, str(tiny_model.path), "auto")
    assert isinstance(codec, AutoCodec)
    out = tmp_path / "auto.mp4"
    report = codec.encode(clip.path, out)
    assert (report.mode, report.scale) == ("plain", 1)
    assert report.choice.startswith("scale auto: kept 1x plain") and "tried 2x dual" in report.choice
    header = ContainerReader(out).header
    assert header.mode == "plain"
    plain = tmp_path / "plain.mp4"
    LayeredCodec(PlainLayers(), BaseCodecSettings(qp=20)).encode(clip.path, plain)
    assert out.read_bytes() == plain.read_bytes()  # the plain candidate's very file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no candidate left behind


@pytest.fixture(scope="module")
def smooth_clip(tmp_path_factory):
    """Smooth content, coded coarsely below: the half-resolution base pays."""
    frames = synthetic_frames(256, 192, count=2, seed=3, noise=1.0)
    return write_y4m(tmp_path_factory.mktemp("smooth") / "smooth.y4m", frames)


def test_a_better_candidate_is_chosen_and_its_file_written(smooth_clip, tmp_path):
    out = tmp_path / "auto.mp4"
    report = _auto(BicubicLayers(2), qp=42).encode(smooth_clip, out)
    assert (report.mode, report.scale) == ("bicubic", 2), report.choice
    assert ContainerReader(out).header.mode == "bicubic"
    alone = tmp_path / "bicubic.mp4"
    LayeredCodec(BicubicLayers(2), BaseCodecSettings(qp=42)).encode(smooth_clip, alone)
    assert out.read_bytes() == alone.read_bytes()
    assert report.choice.startswith("scale auto: kept 2x bicubic") and "tried 1x plain" in report.choice


def test_auto_reads_standard_input_once(smooth_clip, tmp_path, monkeypatch):
    data = smooth_clip.read_bytes()
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))
    out = tmp_path / "from_stdin.mp4"
    report = _auto(BicubicLayers(2), qp=42).encode(Path("-"), out)
    from_file = tmp_path / "from_file.mp4"
    _auto(BicubicLayers(2), qp=42).encode(smooth_clip, from_file)
    assert out.read_bytes() == from_file.read_bytes()
    assert report.frames == 2


def test_compress_keeps_what_encode_keeps(smooth_clip, tmp_path):
    from dualcodec.codec import decompress
    from dualcodec.video import VideoReader

    reader = VideoReader(smooth_clip)
    data = _auto(BicubicLayers(2), qp=42).compress(reader.frames(), reader.info.format, reader.info.rate)
    out = tmp_path / "auto.mp4"
    _auto(BicubicLayers(2), qp=42).encode(smooth_clip, out)
    assert data == out.read_bytes()
    assert decompress(data).header.mode == "bicubic"


def test_the_plain_codec_is_measured_down_to_each_candidates_rate(smooth_clip, tmp_path, monkeypatch):
    from dualcodec import auto

    seen = []
    encode = LayeredCodec.encode

    def record(self, source, destination, **kwargs):
        report = encode(self, source, destination, **kwargs)
        seen.append((self.layers.mode, self.settings.qp, report.file_bytes))
        return report

    monkeypatch.setattr(LayeredCodec, "encode", record)
    _auto(BicubicLayers(2), qp=20).encode(smooth_clip, tmp_path / "a.mp4")
    plain = [(qp, size) for mode, qp, size in seen if mode == "plain"]
    (bicubic,) = [size for mode, _, size in seen if mode == "bicubic"]
    assert [qp for qp, _ in plain] == [20 + auto.STEP * k for k in range(len(plain))]
    assert plain[-1][1] <= bicubic < plain[-2][1]  # the last two plain points bracket the candidate
    near_top = AutoCodec(LayeredCodec(PlainLayers(), BaseCodecSettings(qp=48)), [])
    assert near_top.coarser(6).settings.qp == 51  # x264's top, not past it
    assert near_top.coarser(12) is None  # the top was the last step
    assert AutoCodec(LayeredCodec(PlainLayers(), BaseCodecSettings(qp=51)), []).coarser(6) is None
    assert near_top.coarser(12, bit_depth=10).settings.qp == 60  # 10-bit x264 goes on to 63
    assert near_top.coarser(18, bit_depth=10).settings.qp == 63


def test_a_long_source_is_judged_on_gops_spread_over_it(tmp_path, monkeypatch):
    # Every trial coded the whole source: a minute of 1080p, six or more times. Now a source
    # of more than 8 GOPs is judged on 4 of them, then coded once.
    from dualcodec import auto

    assert auto._stretches(250, 16) == [(0, 16), (80, 16), (160, 16), (240, 10)]  # GOPs 0, 5, 10, 15 of 16
    frames = synthetic_frames(64, 48, count=70, seed=5, noise=1.0)
    source = write_y4m(tmp_path / "long.y4m", frames)
    seen = []
    encode = LayeredCodec.encode

    def record(self, source, destination, **kwargs):
        report = encode(self, source, destination, **kwargs)
        seen.append((self.layers.mode, report.frames))
        return report

    monkeypatch.setattr(LayeredCodec, "encode", record)
    out = tmp_path / "auto.mp4"
    settings = BaseCodecSettings(qp=42, gop=8)
    report = AutoCodec(LayeredCodec(PlainLayers(), settings), [LayeredCodec(BicubicLayers(2), settings)]).encode(
        source, out)
    assert "(judged on 4 GOPs of 8 frames spread over the 70)" in report.choice
    *trials, final = seen
    assert {n for _, n in trials} == {8 * 3 + 6} and final == (report.mode, 70) and report.frames == 70
    alone = tmp_path / "alone.mp4"
    chosen = BicubicLayers(2) if report.mode == "bicubic" else PlainLayers()
    encode(LayeredCodec(chosen, settings), source, alone)
    assert out.read_bytes() == alone.read_bytes()
    sample = VideoReader(auto._spool(tmp_path / "s.y4m", VideoReader(source), 2, 60, [(0, 2), (57, 5)]))
    got = list(sample.frames())
    assert len(got) == 5 and all(np.array_equal(g.y, frames[i].y) for g, i in zip(got, [2, 3, 59, 60, 61]))
