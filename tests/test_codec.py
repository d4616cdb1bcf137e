"""dualcodec.codec: the closed loop, file to dualcodec MP4 and back, in every mode."""

from __future__ import annotations

import itertools
import shutil
from fractions import Fraction

import av
import numpy as np
import pytest

from dualcodec.basecodec import BaseCodecSettings
from dualcodec.codec import BicubicLayers, LayeredCodec, ModelLayers, PlainLayers, decode, make_codec
from dualcodec.container import ContainerReader
from dualcodec.sidestream import SideMode
from dualcodec.errors import DualcodecError
from dualcodec.model import load_model
from dualcodec.video import VideoReader
from helpers import make_av_clip, psnr, shared_file, synthetic_frames, write_png, write_y4m


def _layers(mode: str, model_path=None):
    """The layers the command line would build (for dual: the model's rate weight at QP 30)."""
    if mode == "dual":
        return make_codec(BaseCodecSettings(qp=30), None, str(model_path), None).layers
    if mode == "bicubic":
        return BicubicLayers(2)
    return PlainLayers()


def _round_trip(source, destination, layers, model=None, **settings):
    report = LayeredCodec(layers, BaseCodecSettings(**settings)).encode(source, destination)
    video = decode(destination, model)
    return report, video, list(video.frames)


@pytest.mark.parametrize("mode", ["dual", "bicubic", "plain"])
def test_encode_decode_every_mode(mode, clip, tiny_model, tmp_path):
    out = tmp_path / f"{mode}.mp4"
    model = str(tiny_model.path) if mode == "dual" else None
    report, video, frames = _round_trip(clip.path, out, _layers(mode, tiny_model.path), model, qp=27)
    scale = 1 if mode == "plain" else 2
    assert video.header.mode == mode and video.header.scale == scale
    assert (report.frames, report.width, report.height) == (3, 37, 29)
    assert report.file_bytes == out.stat().st_size
    assert report.base_bytes > 0
    assert report.side_bytes == 0 or mode == "dual"  # only a dual file may carry side bytes
    assert video.rate == 25
    assert len(frames) == 3
    for src, dec in zip(clip.frames, frames):
        assert dec.shape == src.shape and dec.dtype == np.uint8
        assert psnr(src, dec) > (33.0 if mode == "plain" else 25.0)
    if mode == "dual":
        assert video.header.model_fingerprint == tiny_model.fingerprint
        assert video.header.model_name == "tiny"


def test_expensive_side_bits_are_never_sent(clip, tiny_model, tmp_path):
    # With a prohibitive rate weight the encoder never pays for new latents: every frame
    # is SKIP (5 bytes: CRC and mode), in the data track the model's side stream always has.
    layers = ModelLayers(load_model(str(tiny_model.path)), lmbda=1e6)
    out = tmp_path / "cheap.mp4"
    report, video, frames = _round_trip(clip.path, out, layers, str(tiny_model.path), qp=30)
    reader = ContainerReader(out)
    assert reader.has_side_stream and [s.mode for s in reader.side_frames()] == [SideMode.SKIP] * 3
    assert report.side_bytes == 3 * 5 and video.header.mode == "dual"
    assert len(frames) == 3 and frames[0].shape == (29, 37, 3)


@pytest.mark.parametrize("bit_depth, full_range", [(8, False), (8, True), (10, False)])
def test_plain_file_of_even_size_is_a_standard_mp4(bit_depth, full_range, tmp_path):
    frames = synthetic_frames(64, 48, 3, seed=6)
    source = write_y4m(tmp_path / "even.y4m", frames)
    out = tmp_path / "plain.mp4"
    report, video, decoded = _round_trip(source, out, PlainLayers(), qp=20, bit_depth=bit_depth,
                                         full_range=full_range)
    with av.open(str(out)) as inp:
        assert "dualcodec" not in inp.metadata and not inp.streams.data  # the codec's own file, nothing added
    assert not ContainerReader(out).has_header
    assert (video.header.mode, video.header.width, video.header.height) == ("plain", 64, 48)
    assert (video.header.bit_depth, video.header.full_range) == (bit_depth, full_range)  # from the stream
    assert report.side_bytes == 0 and len(decoded) == 3
    # Decoded with the encoder's own conversion (BT.709, the flagged range): 36.5 dB or more
    # here; decoding with the other range gives 30.3 dB at most.
    assert min(psnr(a, b) for a, b in zip(frames, decoded)) > 34.0


def test_plain_beats_bicubic_at_the_same_qp(clip, tmp_path):
    _, _, plain = _round_trip(clip.path, tmp_path / "p.mp4", PlainLayers(), qp=27)
    _, _, bic = _round_trip(clip.path, tmp_path / "b.mp4", BicubicLayers(2), qp=27)
    assert np.mean([psnr(a, b) for a, b in zip(clip.frames, plain)]) > \
        np.mean([psnr(a, b) for a, b in zip(clip.frames, bic)])


def test_decoding_is_deterministic(dual_file, tiny_model):
    a = list(decode(dual_file.path, str(tiny_model.path)).frames)
    b = list(decode(dual_file.path, str(tiny_model.path)).frames)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("mode", ["dual", "bicubic", "plain"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (33, 21), (7, 64)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_one_frame_image_of_odd_size_decodes_to_its_size(mode, size, tiny_model, tmp_path):
    width, height = size
    image = synthetic_frames(width, height, 1, seed=5)[0]
    source = write_png(tmp_path / "image.png", image)
    model = str(tiny_model.path) if mode == "dual" else None
    report, video, frames = _round_trip(source, tmp_path / "o.mp4", _layers(mode, tiny_model.path), model, qp=27)
    assert report.frames == 1 and len(frames) == 1
    assert (video.header.width, video.header.height) == (width, height)
    assert frames[0].shape == (height, width, 3)
    scale = video.header.scale
    assert video.header.base_width % 2 == 0 and video.header.base_height % 2 == 0
    assert video.header.base_width * scale >= width and video.header.base_height * scale >= height
    assert video.header.base_width * scale - width < 2 * scale  # padding to the next multiple only


@pytest.mark.parametrize("codec", ["h264", "hevc", "av1"])
def test_every_base_codec_in_dual_mode(codec, tiny_model, tmp_path):
    # 66x64 gives a 34x32 base layer (padded from 68x64): big enough for SVT-AV1.
    source = synthetic_frames(66, 64, 3, seed=4)
    path = write_y4m(tmp_path / "in.y4m", source)
    out = tmp_path / f"{codec}.mp4"
    _, video, frames = _round_trip(path, out, _layers("dual", tiny_model.path), str(tiny_model.path),
                                   codec=codec, qp=30)
    assert (video.header.base_width, video.header.base_height) == (34, 32)
    assert video.header.codec == codec
    with av.open(str(out)) as inp:
        # The stream's codec (PyAV names AV1 streams after the decoder it picks).
        assert inp.streams.video[0].codec_context.name in {codec, {"av1": "libdav1d"}.get(codec)}
    assert len(frames) == 3 and frames[0].shape == (64, 66, 3)
    assert min(psnr(a, b) for a, b in zip(source, frames)) > 25.0


def test_base_layer_too_small_for_av1(clip, tmp_path):
    # 37x29 at 2x is a 20x16 base layer: SVT-AV1 would corrupt memory, so it is refused.
    with pytest.raises(DualcodecError, match="at least 32x4"):
        LayeredCodec(BicubicLayers(2), BaseCodecSettings(codec="av1", qp=30)).encode(clip.path, tmp_path / "a.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ["hevc", "av1"])
def test_every_base_codec_bicubic_64x64(codec, tmp_path):
    frames = synthetic_frames(64, 64, 2, seed=3)
    source = write_y4m(tmp_path / "in.y4m", frames)
    _, video, out = _round_trip(source, tmp_path / "o.mp4", BicubicLayers(2), codec=codec, qp=27)
    assert video.header.codec == codec and len(out) == 2
    assert min(psnr(a, b) for a, b in zip(frames, out)) > 25.0


def test_crf_and_10bit_base_layer(clip, tmp_path):
    out = tmp_path / "ten.mp4"
    _, video, frames = _round_trip(clip.path, out, BicubicLayers(2), codec="h264", qp=None, crf=20.0, bit_depth=10)
    assert video.header.bit_depth == 10 and len(frames) == 3
    with av.open(str(out)) as inp:
        assert inp.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    assert min(psnr(a, b) for a, b in zip(clip.frames, frames)) > 25.0


def test_lower_qp_costs_more_and_looks_better(clip, tmp_path):
    fine, _, fine_frames = _round_trip(clip.path, tmp_path / "f.mp4", PlainLayers(), qp=20)
    coarse, _, coarse_frames = _round_trip(clip.path, tmp_path / "c.mp4", PlainLayers(), qp=44)
    assert fine.base_bytes > coarse.base_bytes
    assert np.mean([psnr(a, b) for a, b in zip(clip.frames, fine_frames)]) > \
        np.mean([psnr(a, b) for a, b in zip(clip.frames, coarse_frames)]) + 3


def test_bicubic_baseline_on_real_content(tmp_path):
    cars = shared_file("video/cars_320x240_30f.y4m")
    reader = VideoReader(cars)
    frames = list(itertools.islice(reader.frames(), 5))
    source = write_y4m(tmp_path / "cars5.y4m", frames, reader.info.rate)
    report, video, out = _round_trip(source, tmp_path / "cars.mp4", BicubicLayers(2), codec="h264", qp=27)
    assert (report.base_width, report.base_height) == (160, 120)
    assert video.rate == Fraction(30)
    assert len(out) == 5
    mean_psnr = np.mean([psnr(a, b) for a, b in zip(frames, out)])
    assert 26.0 < mean_psnr < 34.0  # 2x bicubic on traffic at QP 27: about 29 dB
    bpp = 8 * report.file_bytes / (5 * 320 * 240)
    assert 0.05 < bpp < 1.0


def test_wrong_model_is_refused(dual_file, other_model):
    with pytest.raises(DualcodecError, match="model mismatch"):
        decode(dual_file.path, str(other_model.path))


def test_model_not_built_in_must_be_passed(dual_file):
    with pytest.raises(DualcodecError, match="--model"):
        decode(dual_file.path)


def test_model_of_another_scale_is_refused(dual_file, tmp_path):
    from dualcodec.config import ModelConfig
    from dualcodec.model import DualLayerModel, save_model

    path = tmp_path / "x4.pt"
    config = ModelConfig(scale=4, up_width=8, side_width=16, down_width=16)
    save_model(DualLayerModel(config), config, "x4", path, lmbda=0.01)
    with pytest.raises(DualcodecError, match="model"):
        decode(dual_file.path, str(path))
    with pytest.raises(DualcodecError, match="4x, not 2x"):
        make_codec(BaseCodecSettings(), None, str(path), 2)


def test_make_codec_modes(tiny_model):
    settings = BaseCodecSettings()
    assert make_codec(settings, "none", "unused", None).layers.mode == "plain"
    bicubic = make_codec(settings, "bicubic", "unused", 4).layers
    assert bicubic.mode == "bicubic" and bicubic.scale == 4
    assert make_codec(settings, "bicubic", "unused", None).layers.scale == 2
    dual = make_codec(settings, None, str(tiny_model.path), None).layers
    assert dual.mode == "dual" and dual.scale == 2
    with pytest.raises(DualcodecError, match="no model named"):
        make_codec(settings, None, "no-such-model", None)


def test_audio_is_copied_unchanged(tmp_path):
    source = make_av_clip(tmp_path / "with_audio.mp4", width=64, height=48, frames=5, audio=True)
    out = tmp_path / "enc.mp4"
    report, video, frames = _round_trip(source, out, BicubicLayers(2), qp=30)
    assert report.frames == 5 and len(frames) == 5

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


def test_mp4_input_without_audio(tmp_path):
    source = make_av_clip(tmp_path / "in.mp4", width=48, height=32, frames=4)
    report, video, frames = _round_trip(source, tmp_path / "o.mp4", PlainLayers(), qp=25)
    assert report.frames == 4 and frames[0].shape == (32, 48, 3)
    with av.open(str(tmp_path / "o.mp4")) as inp:
        assert len(inp.streams.audio) == 0


def test_encode_into_missing_folder_fails_cleanly(clip, tmp_path):
    with pytest.raises(DualcodecError, match="output folder does not exist"):
        LayeredCodec(PlainLayers(), BaseCodecSettings()).encode(clip.path, tmp_path / "no" / "o.mp4")


def test_failed_encode_leaves_no_file(tmp_path):
    source = tmp_path / "broken.y4m"
    source.write_bytes(b"YUV4MPEG2 W16 H16 F25:1 C420jpeg\nFRAME\n" + b"\x80" * 10)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(DualcodecError):
        LayeredCodec(PlainLayers(), BaseCodecSettings()).encode(source, out_dir / "o.mp4")
    assert list(out_dir.iterdir()) == []


def test_encoding_twice_gives_identical_files(clip, tiny_model, tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for path in (a, b):
        LayeredCodec(_layers("dual", tiny_model.path), BaseCodecSettings(qp=30)).encode(clip.path, path)
    ra, rb = ContainerReader(a), ContainerReader(b)
    assert [s.to_bytes() for s in ra.side_frames()] == [s.to_bytes() for s in rb.side_frames()]
    with av.open(str(a)) as ia, av.open(str(b)) as ib:
        assert [bytes(p) for p in ia.demux(ia.streams.video[0])] == [bytes(p) for p in ib.demux(ib.streams.video[0])]


def test_copy_of_file_decodes_the_same(dual_file, tiny_model, tmp_path):
    # The file is self-contained: nothing depends on its name or location.
    moved = tmp_path / "renamed.mp4"
    shutil.copy(dual_file.path, moved)
    a = list(decode(dual_file.path, str(tiny_model.path)).frames)
    b = list(decode(moved, str(tiny_model.path)).frames)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_default_model_round_trip(default_model_path, clip, tmp_path):
    codec = make_codec(BaseCodecSettings(qp=30), None, "default", None)
    out = tmp_path / "default.mp4"
    codec.encode(clip.path, out)
    video = decode(out)  # the built-in model is found by name
    frames = list(video.frames)
    assert video.header.model_name and len(frames) == 3
    assert frames[0].shape == (29, 37, 3)


def test_audio_is_cut_to_the_encoded_frames(tmp_path):
    source = make_av_clip(tmp_path / "long.mp4", width=64, height=48, frames=25, audio=True)  # 1 s
    out = tmp_path / "cut.mp4"
    LayeredCodec(BicubicLayers(2), BaseCodecSettings(qp=30)).encode(source, out, max_frames=5)  # 0.2 s
    with av.open(str(out)) as inp:
        stream = inp.streams.audio[0]
        starts = [float((p.pts - (stream.start_time or 0)) * p.time_base) for p in inp.demux(stream) if p.size]
    assert starts and max(starts) < 0.2  # nothing of the 0.8 s that was not encoded
    assert max(starts) > 0.1  # and the audio of the frames that were


def test_a_model_without_a_side_stream_writes_no_data_track(clip, tmp_path):
    from dualcodec.config import ModelConfig
    from dualcodec.model import DualLayerModel, save_model

    config = ModelConfig(up_width=8, side_width=16, down_width=16, side_stream=False)
    path = tmp_path / "noside.pt"
    save_model(DualLayerModel(config), config, "noside", path, lmbda=0.02)
    out = tmp_path / "noside.mp4"
    report, video, frames = _round_trip(clip.path, out, ModelLayers(load_model(str(path))), str(path), qp=30)
    with av.open(str(out)) as inp:
        assert len(inp.streams.data) == 0  # the data track exists exactly when the model has a side stream
    assert report.side_bytes == 0 and video.header.mode == "dual" and len(frames) == 3


def _clip_with_pcm_audio(path, frames: int = 10, rate: int = 25):
    """An MKV with H.264 video and 16-bit PCM audio, which MP4 players do not play."""
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream("pcm_s16le", rate=16000)
        sound.layout = "mono"
        for i, rgb in enumerate(synthetic_frames(64, 48, frames, seed=2)):
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


def test_aac_audio_is_copied_by_default(tmp_path):
    source = make_av_clip(tmp_path / "aac.mp4", frames=5, audio=True)
    report = LayeredCodec(BicubicLayers(2), BaseCodecSettings(qp=30)).encode(source, tmp_path / "out.mp4")
    assert report.audio == ("aac copied",)
