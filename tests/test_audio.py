"""dualcodec.audio: the input's audio carried into the output, copied or transcoded, in
sync with the frames coded (read back with PyAV)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from dualcodec.basecodec import BaseCodecSettings
from dualcodec.codec import BicubicLayers, LayeredCodec
from dualcodec.container import ContainerReader
from helpers import clip_with_a_flash_and_a_click, flash_and_click_seconds, make_av_clip, synthetic_rgb


def test_audio_is_copied_unchanged(tmp_path):
    source = make_av_clip(tmp_path / "with_audio.mp4", width=64, height=48, frames=5, audio=True)
    out = tmp_path / "enc.mp4"
    report = LayeredCodec(BicubicLayers(2), BaseCodecSettings(qp=30)).encode(source, out)
    assert report.frames == 5

    def audio_packets(path):
        with av.open(str(path)) as inp:
            assert len(inp.streams.audio) == 1
            stream = inp.streams.audio[0]
            return stream.codec_context.name, stream.rate, [bytes(p) for p in inp.demux(stream) if p.size]

    name_in, rate_in, packets_in = audio_packets(source)
    name_out, rate_out, packets_out = audio_packets(out)
    assert (name_out, rate_out) == (name_in, rate_in) == ("aac", 16000)
    assert len(packets_in) > 3
    assert packets_out == packets_in
    # The audio counts as "other" bytes, not base or side.
    sizes = ContainerReader(out).sizes()
    assert sizes.other_bytes > sum(len(p) for p in packets_out)


def test_audio_is_cut_to_the_encoded_frames(tmp_path):
    source = make_av_clip(tmp_path / "long.mp4", width=64, height=48, frames=25, audio=True)  # 1 s
    out = tmp_path / "cut.mp4"
    LayeredCodec(BicubicLayers(2), BaseCodecSettings(qp=30)).encode(source, out, max_frames=5)  # 0.2 s
    with av.open(str(out)) as inp:
        stream = inp.streams.audio[0]
        starts = [float((p.pts - (stream.start_time or 0)) * p.time_base) for p in inp.demux(stream) if p.size]
    assert starts and max(starts) < 0.2  # nothing of the 0.8 s that was not encoded
    assert max(starts) > 0.1  # and the audio of the frames that were


def _clip_with_pcm_audio(path, frames: int = 10, rate: int = 25):
    """An MKV with H.264 video and 16-bit PCM audio, which MP4 players do not play."""
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream("pcm_s16le", rate=16000)
        sound.layout = "mono"
        for i, rgb in enumerate(synthetic_rgb(64, 48, frames, seed=2)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = (3000 * np.sin(np.arange(16000 * frames // rate) * 0.05)).astype(np.int16)
        for start in range(0, len(samples), 1600):
            chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 1600], format="s16", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    return path


@pytest.mark.parametrize("policy, codec, described", [
    ("auto", "aac", ("pcm_s16le transcoded to aac",)),
    ("aac", "aac", ("pcm_s16le transcoded to aac",)),
    ("copy", "pcm_s16le", ("pcm_s16le copied",)),
    ("none", None, ()),
])
def test_audio_policies(tmp_path, policy, codec, described):
    source = _clip_with_pcm_audio(tmp_path / "pcm.mkv")
    out = tmp_path / "out.mp4"
    report = LayeredCodec(BicubicLayers(2), BaseCodecSettings(qp=30), audio=policy).encode(source, out)
    assert report.audio == described
    with av.open(str(out)) as inp:
        assert [s.codec_context.name for s in inp.streams.audio] == ([codec] if codec else [])
        if codec == "aac":  # the whole 0.4 s of sound, decodable
            samples = sum(f.samples for f in inp.decode(inp.streams.audio[0]))
            assert abs(samples - 6400) <= 2048  # AAC frames are 1024 samples; priming and padding


@pytest.mark.parametrize("video_start, audio_start", [(0.2, 0.0), (0.0, 0.3)])
@pytest.mark.parametrize("audio_codec", ["aac", "pcm_s16le"])  # copied, transcoded
@pytest.mark.parametrize("start", [0, 6])
def test_audio_stays_in_sync_when_the_streams_start_apart(tmp_path, video_start, audio_start, audio_codec, start):
    # The output's video starts at 0 with the first frame coded; the audio keeps its time
    # from that frame (it was put at 0 with the video: 0.2 s early in the first case).
    source = clip_with_a_flash_and_a_click(tmp_path / f"src.{'mkv' if 'pcm' in audio_codec else 'mp4'}",
                                            video_start, audio_start, audio_codec)
    flash, click = flash_and_click_seconds(source)
    assert flash == pytest.approx(video_start + 0.4) and click == pytest.approx(flash, abs=0.01)
    out = tmp_path / "out.mp4"
    LayeredCodec(BicubicLayers(2), BaseCodecSettings(qp=20)).encode(source, out, start=start)
    flash, click = flash_and_click_seconds(out)
    assert flash == pytest.approx((10 - start) / 25)
    assert click == pytest.approx(flash, abs=0.01)


@pytest.mark.parametrize("audio_codec", ["aac", "pcm_s16le"])  # copied, transcoded
def test_audio_from_before_the_start_frame_is_left_out(tmp_path, audio_codec):
    # 4 s in, what played before the first frame coded is not carried behind the edit
    # list: a copied stream keeps one packet to prime its decoder, a transcoded one none.
    source = clip_with_a_flash_and_a_click(tmp_path / f"src.{'mkv' if 'pcm' in audio_codec else 'mp4'}",
                                            0.0, 0.0, audio_codec, flash=105, frames=110)
    out = tmp_path / "out.mp4"
    LayeredCodec(BicubicLayers(2), BaseCodecSettings(qp=30)).encode(source, out, start=100)
    with av.open(str(out)) as inp:
        stream = inp.streams.audio[0]
        packets = [p for p in inp.demux(stream) if p.size]
    stored = sum(p.duration for p in packets) * stream.time_base
    assert 10 / 25 <= stored <= 10 / 25 + 3 * 1024 / 16000  # the 0.4 s coded, an AAC encoder's or copy's spare frames
    flash, click = flash_and_click_seconds(out)
    assert flash == pytest.approx(5 / 25) and click == pytest.approx(flash, abs=0.01)


def test_aac_audio_is_copied_by_default(tmp_path):
    source = make_av_clip(tmp_path / "aac.mp4", frames=5, audio=True)
    report = LayeredCodec(BicubicLayers(2), BaseCodecSettings(qp=30)).encode(source, tmp_path / "out.mp4")
    assert report.audio == ("aac copied",)
