"""dualcodec.codec: the closed loop, file to dualcodec MP4 and back, in every mode."""

from __future__ import annotations

import importlib.util
import dataclasses
import itertools
import shutil
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from dualcodec.basecodec import BaseCodecSettings, Planes
from dualcodec.codec import BicubicLayers, LayeredCodec, ModelLayers, PlainLayers, decode, make_codec
from dualcodec.container import ContainerReader
from dualcodec.sidestream import SideFrame, SideMode
from dualcodec.errors import DualcodecError
from dualcodec.model import load_model
from dualcodec.video import VideoReader
from helpers import (
    SHARED_DATA,
    image_planes,
    make_av_clip,
    new_latents_every_frame,
    psnr_yuv,
    read_yuv420,
    run,
    sequence_psnr_yuv,
    shared_file,
    synthetic_frames,
    synthetic_rgb,
    video_bitstream,
    without_banner_units,
    write_png,
    write_y4m,
    x264_mp4,
)


def _layers(mode: str, model_path=None):
    """The layers the command line would build (for dual, ``--scale 2``: the model's rate weight
    and side level at QP 30)."""
    if mode == "dual":
        return make_codec(BaseCodecSettings(qp=30), None, str(model_path), 2).layers
    if mode == "bicubic":
        return BicubicLayers(2)
    return PlainLayers()


def _same(a, b) -> bool:
    """Two frames' planes are equal, value and type."""
    return all(p.dtype == q.dtype and np.array_equal(p, q) for p, q in ((a.y, b.y), (a.u, b.u), (a.v, b.v)))


def _shapes(planes) -> tuple:
    return planes.y.shape, planes.u.shape, planes.v.shape


def _mean_psnr_yuv(source, decoded, peak: float = 255.0) -> float:
    return float(np.mean([psnr_yuv(a, b, peak) for a, b in zip(source, decoded, strict=True)]))


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
    assert video.format == VideoReader(clip.path).info.format  # the source's planes, back in its format
    for src, dec in zip(clip.frames, frames):
        assert _shapes(dec) == _shapes(src) == ((29, 37), (15, 19), (15, 19))
        assert dec.y.dtype == dec.u.dtype == dec.v.dtype == np.uint8
        # About 41 dB plain, 39 bicubic, 29.5 dual (the tiny model's random weights).
        assert psnr_yuv(src, dec) > {"plain": 38.0, "bicubic": 36.0, "dual": 27.0}[mode]
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
    assert len(frames) == 3 and _shapes(frames[0]) == ((29, 37), (15, 19), (15, 19))


class _OracleRuntime:
    """A runtime that is an oracle: a block (8x8 luma) whose decoded latents are non-zero
    comes out as the original frame, any other as bicubic of the base, so enhancing a
    block gains exactly its bicubic error."""

    name = "oracle"

    def __init__(self, original, model) -> None:
        self.original, self.model = original, model

    def analyse(self, original, base, fmt):  # the model's own analysis, eager
        from dualcodec.basecodec import Planes
        from dualcodec.codec import to_unit

        return self.model.analyse(*to_unit(Planes(*original), fmt), *to_unit(Planes(*base), fmt))

    def side_features(self, w_hat, lr_height, lr_width):
        return w_hat

    def upsample(self, y, u, v, w_hat, fmt, level=None, memory=None):
        from dualcodec.basecodec import Planes
        from dualcodec.codec import to_planes, to_unit
        from dualcodec.nets.common import bicubic_up

        up = to_planes(*(bicubic_up(p, 2) for p in to_unit(Planes(y, u, v), fmt)), fmt)
        if w_hat is None:
            return up.y, up.u, up.v
        mask = (w_hat[0] != 0).any(dim=0).numpy()
        out = []
        for plane, original, size in ((up.y, self.original.y, 8), (up.u, self.original.u, 4), (up.v, self.original.v, 4)):
            m = mask.repeat(size, 0).repeat(size, 1)[: plane.shape[0], : plane.shape[1]]
            out.append(np.where(m, original, plane))
        return tuple(out)


def _oracle_layers(tiny_model, original, lmbda, zero_block=(1, 2), metric="l1"):
    """ModelLayers over the tiny model with :class:`_OracleRuntime` for ``original``; the
    analysis's latents of ``zero_block`` are zeroed."""
    loaded = load_model(str(tiny_model.path))
    analyse = loaded.model.analyse

    def zeroing_analyse(*args):
        w = analyse(*args).clone()
        w[..., zero_block[0], zero_block[1]] = 0
        return w

    loaded.model.analyse = zeroing_analyse
    return ModelLayers(loaded, lmbda, level=30, runtime=_OracleRuntime(original, loaded.model), metric=metric)


def _side_inputs(clip):
    """The first clip frame, padded as the encoder pads it, its base layer (bicubic, lossless
    but for the rounding to code values), and their format."""
    from dualcodec.codec import to_planes, to_unit
    from dualcodec.nets.common import bicubic_down
    from dualcodec.video import pad_planes
    from dualcodec.yuv import YUVFormat

    fmt = YUVFormat(8, False, 6)
    original = pad_planes(clip.frames[0], 40, 32)
    return original, to_planes(*(bicubic_down(p, 2) for p in to_unit(original, fmt)), fmt), fmt


def test_the_inter_weight_prices_only_the_frames_the_base_codec_predicts(clip, tiny_model):
    from dataclasses import replace

    original, base, fmt = _side_inputs(clip)
    layers = _oracle_layers(tiny_model, original, 1e-9)  # side bits all but free on a key frame
    layers.inter_weight = 1e15  # and prohibitive on a predicted one
    assert layers.side(original, replace(base, key_frame=True), fmt).mode == SideMode.NEW
    layers.reset()
    assert layers.side(original, base, fmt).mode == SideMode.SKIP


@pytest.mark.parametrize("metric", ["l1", "mse"])
@pytest.mark.parametrize("split", [False, True])
def test_the_encoder_enhances_the_blocks_worth_their_bits(clip, tiny_model, split, metric):
    import torch

    from dualcodec.codec import code_block_distortion, to_unit

    original, base, fmt = _side_inputs(clip)
    layers = _oracle_layers(tiny_model, original, 0.0, metric=metric)
    model, coder = layers.model, layers.model.latent_coder
    y_lr_hat, _ = to_unit(base, fmt)
    classes = model.side_classes(y_lr_hat, fmt)
    q = coder.quantize(model.analyse(*to_unit(original, fmt), *to_unit(base, fmt)), 30)
    nonzero = (q[0] != 0).any(dim=0)
    assert nonzero.shape == (4, 5) and not nonzero[1, 2] and int(nonzero.sum()) == 19
    # A block's gain is its bicubic error in the metric (as code values); its cost, lmbda
    # times its bits per pixel.
    bicubic = Planes(*layers.runtime.upsample(base.y, base.u, base.v, None, fmt))
    gain = torch.from_numpy(code_block_distortion(bicubic, original, 8, fmt, metric))
    bits_per_pixel = coder.block_bits(q, classes, 30)[0] / (40 * 32)
    if split:  # lmbda at the median gain per bit: about half the blocks are worth their bits
        layers.lmbda = float((gain / bits_per_pixel)[nonzero].median())
    compressed = []
    compress = coder.compress
    coder.compress = lambda *args: compressed.append(args[3].clone()) or compress(*args)
    side = layers.side(original, base, fmt)
    (enhanced,) = compressed  # the blocks the encoder priced as NEW
    if not split:  # free bits: every block whose latents are not all zero, and the frame is NEW
        assert torch.equal(enhanced, nonzero)
        assert side.mode == SideMode.NEW
        decoded = coder.decompress(side.entropy_bytes, classes)
        assert torch.equal(decoded.enhanced, enhanced)
        assert torch.equal(decoded.w_hat, coder.dequantize(q * enhanced, 30))
        assert torch.equal(layers._w_hat, decoded.w_hat)  # what a REPEAT would reuse: the decoder's latents
    else:
        assert torch.equal(enhanced, nonzero & (gain > layers.lmbda * bits_per_pixel))
        assert 5 < int(enhanced.sum()) < 14
        # The frame then pays for the payload's header, flags and flush too: NEW or SKIP.
        if side.mode == SideMode.NEW:
            assert torch.equal(coder.decompress(side.entropy_bytes, classes).enhanced, enhanced)
        else:
            assert side.mode == SideMode.SKIP and layers._w_hat is None


def test_the_encoder_skips_a_frame_whose_blocks_are_not_worth_their_bits(clip, tiny_model):
    original, base, fmt = _side_inputs(clip)
    layers = _oracle_layers(tiny_model, original, lmbda=1e9)
    side = layers.side(original, base, fmt)
    assert side.mode == SideMode.SKIP and side.entropy_bytes == b"" and layers._w_hat is None
    # The next frame could repeat nothing: with nothing kept, it is SKIP again, never REPEAT.
    assert layers.side(original, base, fmt).mode == SideMode.SKIP


def test_the_encoder_repeats_the_last_latents_when_they_still_fit(clip, tiny_model):
    original, base, fmt = _side_inputs(clip)
    layers = _oracle_layers(tiny_model, original, lmbda=1e-3)
    assert layers.side(original, base, fmt).mode == SideMode.NEW
    # The same frame again: the kept latents reconstruct it as well, for no bits.
    assert layers.side(original, base, fmt).mode == SideMode.REPEAT
    layers.reset()  # a key frame
    assert layers.side(original, base, fmt).mode == SideMode.NEW


def _pairs_with_key_frames(clip):
    """Six (original, base) pairs of the clip's frames, two GOPs of three, frames repeated
    so the kept latents can serve again."""
    from dataclasses import replace

    pairs = []
    for i, index in enumerate([0, 0, 1, 1, 1, 2]):
        original, base, fmt = _side_inputs(type(clip)(clip.path, clip.frames[index:]))
        pairs.append((original, replace(base, key_frame=i % 3 == 0)))
    return pairs, fmt


def test_the_pipelined_encoder_chooses_as_a_one_thread_encoder_frame_by_frame(clip, tiny_model):
    pytest.importorskip("openvino")
    from dualcodec.runtime import OpenVINORuntime

    pairs, fmt = _pairs_with_key_frames(clip)
    loaded = load_model(str(tiny_model.path))
    # Cheap key frames, dear predicted ones: NEW, SKIP and REPEAT or KEEP occur (measured).
    serial = ModelLayers(loaded, 2e-5, level=30, runtime=OpenVINORuntime(loaded, threads=1), inter_weight=20)
    expected = []
    for original, base in pairs:
        if base.key_frame:
            serial.reset()
        expected.append(serial.side(original, base, fmt))
    assert {SideMode.NEW, SideMode.SKIP} < {side.mode for side in expected}
    for threads in (1, 3):
        layers = ModelLayers(loaded, 2e-5, level=30, runtime="openvino", threads=threads, inter_weight=20)
        assert list(layers.sides(iter(pairs), fmt)) == expected


@pytest.mark.parametrize("threads", [None, 2])
def test_with_new_on_key_frames_only_the_predicted_frames_keep_repeat_or_skip(clip, tiny_model, monkeypatch, threads):
    pytest.importorskip("openvino")
    from dualcodec.runtime import OpenVINORuntime, TorchRuntime

    pairs, fmt = _pairs_with_key_frames(clip)
    loaded = load_model(str(tiny_model.path))
    runtime = "torch" if threads is None else "openvino"

    def modes(new: str) -> list[SideMode]:  # side bits all but free, on every frame
        layers = ModelLayers(loaded, 1e-9, level=30, runtime=runtime, threads=threads, new=new)
        return [side.mode for side in layers.sides(iter(pairs), fmt)]

    every = modes("all")  # each frame's own latents, or the kept ones where they fit a block better
    assert every[::3] == [SideMode.NEW] * 2 and set(every[1:3] + every[4:]) <= {SideMode.NEW, SideMode.KEEP}
    analysed = []
    kind = TorchRuntime if threads is None else OpenVINORuntime
    analyse = kind.analyse
    monkeypatch.setattr(kind, "analyse", lambda self, *a: analysed.append(1) or analyse(self, *a))
    key = modes("key")
    assert key[::3] == [SideMode.NEW] * 2 and SideMode.NEW not in key[1:3] + key[4:]
    assert {SideMode.REPEAT, SideMode.KEEP} & set(key)  # the key frame's latents serve the frames after it (measured)
    assert len(analysed) == 2  # the predicted frames' latents are never computed
    with pytest.raises(DualcodecError, match="unknown choice of NEW frames"):
        ModelLayers(loaded, new="some")


def test_a_failure_on_a_worker_reaches_the_encoder(clip, tiny_model, monkeypatch):
    pytest.importorskip("openvino")
    from dualcodec.runtime import OpenVINORuntime

    pairs, fmt = _pairs_with_key_frames(clip)

    def failing(self, original, base, fmt):
        raise DualcodecError("analysis failed")

    monkeypatch.setattr(OpenVINORuntime, "analyse", failing)
    layers = ModelLayers(load_model(str(tiny_model.path)), 1e-3, level=30, runtime="openvino", threads=2)
    with pytest.raises(DualcodecError, match="analysis failed"):
        list(layers.sides(iter(pairs), fmt))


def test_code_block_distortion_is_the_models_block_distortion_of_the_same_planes(clip):
    import torch

    from dualcodec.codec import code_block_distortion, to_unit
    from dualcodec.model import block_distortion

    original, base, fmt = _side_inputs(clip)
    other, _, _ = _side_inputs(type(clip)(clip.path, clip.frames[1:]))
    ours = code_block_distortion(other, original, 8, fmt)
    reference = block_distortion(*to_unit(other, fmt), *to_unit(original, fmt), 8)[0]
    assert ours.shape == (4, 5) and ours.sum() > 0
    assert np.allclose(ours, reference.double().numpy(), rtol=1e-5, atol=1e-9)


def test_code_block_distortion_in_mse_sums_to_the_frames_mse_six_one_one(clip):
    from dualcodec.codec import code_block_distortion, to_unit

    original, base, fmt = _side_inputs(clip)
    other, _, _ = _side_inputs(type(clip)(clip.path, clip.frames[1:]))
    ours = code_block_distortion(other, original, 8, fmt, "mse")
    (y1, uv1), (y0, uv0) = to_unit(other, fmt), to_unit(original, fmt)
    mse_y, mse_uv = float(((y1 - y0) ** 2).mean()), float(((uv1 - uv0) ** 2).mean())
    assert ours.shape == (4, 5) and np.isclose(ours.sum(), (6 * mse_y + 2 * mse_uv) / 8, rtol=1e-5)
    block_y = float(((y1 - y0)[..., :8, :8] ** 2).sum()) / y0.numel()
    block_uv = float(((uv1 - uv0)[..., :4, :4] ** 2).sum()) / uv0.numel()
    assert np.isclose(ours[0, 0], (6 * block_y + 2 * block_uv) / 8, rtol=1e-5)
    with pytest.raises(ValueError):
        code_block_distortion(other, original, 8, fmt, "psnr")


def _flag_full_range(path):
    """Mark a y4m written by :func:`helpers.write_y4m` as full range (``XCOLORRANGE=FULL``)."""
    data = path.read_bytes()
    end = data.index(b"\n")
    path.write_bytes(data[:end] + b" XCOLORRANGE=FULL" + data[end:])
    return path


@pytest.mark.parametrize("bit_depth, full_range", [(8, False), (8, True), (10, False)])
def test_plain_file_of_even_size_is_a_standard_mp4(bit_depth, full_range, tmp_path):
    pix_fmt = {(8, False): "yuv420p", (8, True): "yuvj420p", (10, False): "yuv420p10le"}[bit_depth, full_range]
    frames = synthetic_frames(64, 48, 3, seed=6, pix_fmt=pix_fmt)
    source = write_y4m(tmp_path / "even.y4m", frames)
    if full_range:
        _flag_full_range(source)
    out = tmp_path / "plain.mp4"
    # The settings say 8-bit limited range: the base layer codes the source's depth and range.
    report, video, decoded = _round_trip(source, out, PlainLayers(), qp=20)
    with av.open(str(out)) as inp:
        assert "dualcodec" not in inp.metadata and not inp.streams.data  # the codec's own file, nothing added
        cc = inp.streams.video[0].codec_context
        assert cc.pix_fmt in ({"yuv420p10le"} if bit_depth == 10 else {"yuv420p", "yuvj420p"})
        assert (cc.color_range, cc.colorspace) == (2 if full_range else 1, 6)  # flagged: BT.601 below HD
    assert not ContainerReader(out).has_header
    assert (video.header.mode, video.header.width, video.header.height) == ("plain", 64, 48)
    assert (video.header.bit_depth, video.header.full_range, video.header.matrix) == (bit_depth, full_range, 6)
    assert report.side_bytes == 0 and len(decoded) == 3
    # The decoded planes are the source's, in its depth and range: 41.7 dB or more at 8 bits,
    # 52 dB at 10.
    peak = 1023.0 if bit_depth == 10 else 255.0
    assert all(d.y.dtype == frames[0].y.dtype for d in decoded)
    assert min(psnr_yuv(a, b, peak) for a, b in zip(frames, decoded, strict=True)) > 40.0


def test_plain_beats_bicubic_at_the_same_qp(clip, tmp_path):
    _, _, plain = _round_trip(clip.path, tmp_path / "p.mp4", PlainLayers(), qp=27)
    _, _, bic = _round_trip(clip.path, tmp_path / "b.mp4", BicubicLayers(2), qp=27)
    assert _mean_psnr_yuv(clip.frames, plain) > _mean_psnr_yuv(clip.frames, bic)


@pytest.mark.parametrize("size", [(1, 1), (33, 21), (37, 29)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_folded_model_codes_and_decodes_any_size_with_either_runtime(size, folded_model, tmp_path):
    width, height = size
    source = write_png(tmp_path / "image.png", synthetic_rgb(width, height, 1, seed=5)[0])
    layers = new_latents_every_frame(load_model(str(folded_model.path)))  # the side stream on every block
    LayeredCodec(layers, BaseCodecSettings(qp=27)).encode(source, tmp_path / "o.mp4")
    decoded = [next(decode(tmp_path / "o.mp4", str(folded_model.path), runtime=r).frames) for r in ("torch", "openvino")]
    assert _shapes(decoded[0]) == ((height, width), ((height + 1) // 2, (width + 1) // 2), ((height + 1) // 2, (width + 1) // 2))
    torch_frame, openvino_frame = decoded
    for a, b in zip((torch_frame.y, torch_frame.u, torch_frame.v), (openvino_frame.y, openvino_frame.u, openvino_frame.v)):
        assert np.abs(a.astype(int) - b).max() <= 1
    assert psnr_yuv(image_planes(source), decoded[0]) > 27.0


def test_decoding_is_deterministic(dual_file, tiny_model):
    a = list(decode(dual_file.path, str(tiny_model.path)).frames)
    b = list(decode(dual_file.path, str(tiny_model.path)).frames)
    assert len(a) == len(b) == 3 and all(_same(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("mode", ["dual", "bicubic", "plain"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (33, 21), (7, 64)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_one_frame_image_of_odd_size_decodes_to_its_size(mode, size, tiny_model, tmp_path):
    width, height = size
    image = synthetic_rgb(width, height, 1, seed=5)[0]
    source = write_png(tmp_path / "image.png", image)
    model = str(tiny_model.path) if mode == "dual" else None
    report, video, frames = _round_trip(source, tmp_path / "o.mp4", _layers(mode, tiny_model.path), model, qp=27)
    assert report.frames == 1 and len(frames) == 1
    assert (video.header.width, video.header.height) == (width, height)
    chroma = ((height + 1) // 2, (width + 1) // 2)
    assert _shapes(frames[0]) == ((height, width), chroma, chroma)
    # The image, converted once by swscale's defaults (what PyAV's reformat gives), comes back.
    if mode == "plain":
        assert psnr_yuv(image_planes(source), frames[0]) > 38.0
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
    assert len(frames) == 3 and _shapes(frames[0]) == ((64, 66), (32, 33), (32, 33))
    assert min(psnr_yuv(a, b) for a, b in zip(source, frames, strict=True)) > 27.0  # about 29.5 dB


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
    assert min(psnr_yuv(a, b) for a, b in zip(frames, out, strict=True)) > 38.0  # about 41 dB


def test_crf_and_10bit_base_layer(tmp_path):
    ten = synthetic_frames(37, 29, 3, seed=0, pix_fmt="yuv420p10le")
    source = write_y4m(tmp_path / "ten.y4m", ten)
    out = tmp_path / "ten.mp4"
    # bit_depth=8 in the settings: the base layer codes the source's 10 bits all the same.
    _, video, frames = _round_trip(source, out, BicubicLayers(2), codec="h264", qp=None, crf=20.0, bit_depth=8)
    assert video.header.bit_depth == 10 and video.format.bit_depth == 10 and len(frames) == 3
    with av.open(str(out)) as inp:
        assert inp.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    assert all(f.y.dtype == f.u.dtype == np.uint16 and f.y.max() <= 1023 for f in frames)
    assert min(psnr_yuv(a, b, 1023.0) for a, b in zip(ten, frames, strict=True)) > 34.0  # about 37 dB


def test_an_8bit_source_gets_an_8bit_base_layer(clip, tmp_path):
    out = tmp_path / "eight.mp4"
    _, video, frames = _round_trip(clip.path, out, BicubicLayers(2), qp=27, bit_depth=10)
    assert video.header.bit_depth == 8 and frames[0].y.dtype == np.uint8
    with av.open(str(out)) as inp:
        assert inp.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_lower_qp_costs_more_and_looks_better(clip, tmp_path):
    fine, _, fine_frames = _round_trip(clip.path, tmp_path / "f.mp4", PlainLayers(), qp=20)
    coarse, _, coarse_frames = _round_trip(clip.path, tmp_path / "c.mp4", PlainLayers(), qp=44)
    assert fine.base_bytes > coarse.base_bytes
    assert _mean_psnr_yuv(clip.frames, fine_frames) > _mean_psnr_yuv(clip.frames, coarse_frames) + 3


def test_bicubic_baseline_on_real_content(tmp_path):
    cars = shared_file("video/cars_320x240_30f.y4m")
    reader = VideoReader(cars)
    frames = list(itertools.islice(reader.frames(), 5))
    source = write_y4m(tmp_path / "cars5.y4m", frames, reader.info.rate)
    report, video, out = _round_trip(source, tmp_path / "cars.mp4", BicubicLayers(2), codec="h264", qp=27)
    assert (report.base_width, report.base_height) == (160, 120)
    assert video.rate == Fraction(30)
    assert len(out) == 5
    assert 31.0 < _mean_psnr_yuv(frames, out) < 37.0  # 2x bicubic on traffic at QP 27: about 34 dB PSNR-YUV
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
    dual = make_codec(settings, None, str(tiny_model.path), 2).layers
    assert dual.mode == "dual" and dual.scale == 2
    with pytest.raises(DualcodecError, match="no model named"):
        make_codec(settings, None, "no-such-model", None)
    # Scale 1 is the model family's scale-1 model, the plain codec where it has none.
    assert make_codec(settings, None, str(tiny_model.path), 1).layers.mode == "plain"
    with pytest.raises(DualcodecError, match="needs a scale of 2 or 4"):
        make_codec(settings, "bicubic", "unused", 1)


def test_the_encoder_weighs_side_bits_against_mse_and_more_on_predicted_frames(tiny_model):
    from dualcodec.sidestream import SIDE_WEIGHT

    settings = BaseCodecSettings(qp=29)
    layers = make_codec(settings, None, str(tiny_model.path), 2).layers
    # 0.005 per bit per pixel at QP 32, doubling every 3 QPs: the base layer's price of a
    # bit, not the model's training weight (the tiny model trains at another)
    assert load_model(str(tiny_model.path)).lmbda != 0.025
    assert (layers.metric, layers.lmbda, layers.inter_weight) == ("mse", pytest.approx(0.0025), SIDE_WEIGHT)
    assert make_codec(settings, None, str(tiny_model.path), 2, side_weight=0.5).layers.inter_weight == 0.5
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(DualcodecError, match="side weight must be positive"):
            make_codec(settings, None, str(tiny_model.path), 2, side_weight=bad)


def test_make_codec_scale_auto_is_the_default(tiny_model):
    from dualcodec.auto import STEP, AutoCodec

    auto = make_codec(BaseCodecSettings(qp=30), None, str(tiny_model.path))
    assert isinstance(auto, AutoCodec)
    assert (auto.plain.layers.mode, auto.plain.settings.qp) == ("plain", 30)
    assert [(c.layers.mode, c.layers.scale, c.settings.qp) for c in auto.candidates] == [("dual", 2, 30)]
    assert (auto.coarser(STEP).layers.mode, auto.coarser(STEP).settings.qp) == ("plain", 30 + STEP)
    assert auto.model_path == tiny_model.path


def test_mp4_input_without_audio(tmp_path):
    source = make_av_clip(tmp_path / "in.mp4", width=48, height=32, frames=4)
    report, video, frames = _round_trip(source, tmp_path / "o.mp4", PlainLayers(), qp=25)
    assert report.frames == 4 and _shapes(frames[0]) == ((32, 48), (16, 24), (16, 24))
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
    assert len(a) == len(b) == 3 and all(_same(x, y) for x, y in zip(a, b))


def test_default_model_round_trip(default_model_path, clip, tmp_path):
    codec = make_codec(BaseCodecSettings(qp=30), None, "default", 2)
    out = tmp_path / "default.mp4"
    codec.encode(clip.path, out)
    video = decode(out)  # the built-in model is found by name
    frames = list(video.frames)
    assert video.header.model_name and len(frames) == 3
    assert _shapes(frames[0]) == ((29, 37), (15, 19), (15, 19))
    assert min(psnr_yuv(a, b) for a, b in zip(clip.frames, frames)) > 28.0


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


# -- the baselines against implementations that share no code with dualcodec ---------------
#
# PyAV, numpy and torch only (tests/helpers.py and ../shared/tools/anchors.py): the planes
# are read by PyAV, coded by libx264 through PyAV, scored in numpy.

CARS_FRAMES = 12
# (matrix, primaries, transfer, range) flagged in the base layer of an unflagged 320x240
# source: BT.601 (525 lines, below HD by players' size rule), limited range.
BT601_TV = (6, 6, 6, 1)


@pytest.fixture(scope="module")
def cars(tmp_path_factory) -> dict:
    """bit depth -> (planes, y4m, rate): the first 12 frames of cars (320x240, 30 fps) as
    PyAV reads them, and the same at 10 bits (each code value times 4)."""
    original = shared_file("video/cars_320x240_30f.y4m")
    with av.open(str(original)) as inp:
        rate = Fraction(inp.streams.video[0].average_rate)
    eight = read_yuv420(original, CARS_FRAMES)
    ten = [tuple(p.astype(np.uint16) * 4 for p in frame) for frame in eight]
    folder = tmp_path_factory.mktemp("cars")
    clips = {}
    for bits, frames in ((8, eight), (10, ten)):
        path = write_y4m(folder / f"cars{bits}.y4m", [SimpleNamespace(y=y, u=u, v=v) for y, u, v in frames], rate)
        clips[bits] = (frames, path, rate)
    return clips


def _yuv(frames) -> list[tuple]:
    return [(p.y, p.u, p.v) for p in frames]


def _read_y4m(path) -> tuple[list[str], list[tuple]]:
    """The header words and the (y, u, v) planes of a 4:2:0 y4m, parsed by hand."""
    data = path.read_bytes()
    end = data.index(b"\n")
    words = data[:end].decode().split()
    width = int(next(w[1:] for w in words if w.startswith("W")))
    height = int(next(w[1:] for w in words if w.startswith("H")))
    dtype = np.dtype("<u2") if "C420p10" in words else np.dtype(np.uint8)
    sizes = [(height, width)] + 2 * [((height + 1) // 2, (width + 1) // 2)]
    frames, pos = [], end + 1
    while pos < len(data):
        end = data.index(b"\n", pos)
        assert data[pos:end].split()[0] == b"FRAME"
        pos, planes = end + 1, []
        for h, w in sizes:
            count = h * w
            planes.append(np.frombuffer(data, dtype, count, pos).reshape(h, w).astype(dtype.newbyteorder("=")))
            pos += count * dtype.itemsize
        frames.append(tuple(planes))
    return words, frames


def _assert_same_frames(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for n, (x, y) in enumerate(zip(a, b)):
        for name, p, q in zip("yuv", x, y):
            assert p.dtype == q.dtype and np.array_equal(p, q), f"frame {n + 1}, plane {name}"


@pytest.mark.parametrize("qp", [12, 32])
@pytest.mark.parametrize("bits", [8, 10])
def test_baseline_none_is_x264_alone(capsys, cars, bits, qp, tmp_path):
    frames, source, rate = cars[bits]
    peak = (1 << bits) - 1
    ours = tmp_path / "ours.mp4"
    report = make_codec(BaseCodecSettings(qp=qp), "none", "unused").encode(source, ours)
    direct = x264_mp4(tmp_path / "direct.mp4", frames, qp, rate, BT601_TV, gop=32, preset="medium")
    assert report.frames == CARS_FRAMES and report.mode == "plain"
    # The same bitstream: parameter sets (depth, colour flags) and every packet's payload,
    # but for x264's version SEI, which dualcodec drops.
    ours_params, ours_packets = video_bitstream(ours)
    direct_params, direct_packets = video_bitstream(direct)
    assert ours_params == direct_params
    assert len(ours_packets) == CARS_FRAMES and ours_packets == [without_banner_units(p) for p in direct_packets]
    assert ours_packets[0] != direct_packets[0]
    banner = len(direct_packets[0]) - len(ours_packets[0])
    assert report.file_bytes == ours.stat().st_size == pytest.approx(direct.stat().st_size - banner, rel=0.02)
    decoded = _yuv(decode(ours).frames)
    _assert_same_frames(decoded, read_yuv420(direct))
    assert sequence_psnr_yuv(frames, decoded, peak) == pytest.approx(
        sequence_psnr_yuv(frames, read_yuv420(direct), peak), abs=0.05)
    # Decoded to y4m by the command line: the source's depth, the decoder's planes as they are.
    code, _, err = run(capsys, "decode", ours, "-o", tmp_path / "ours.y4m", "-q")
    assert code == 0, err
    words, written = _read_y4m(tmp_path / "ours.y4m")
    assert ("C420p10" if bits == 10 else "C420jpeg") in words
    assert words[1:3] == ["W320", "H240"] and "F30:1" in words
    _assert_same_frames(written, decoded)


def _anchors():
    """../shared/tools/anchors.py, the project's independent rate-distortion anchors."""
    path = SHARED_DATA.parent / "tools" / "anchors.py"
    if not path.is_file():
        pytest.skip(f"independent anchors not available: {path} (expected ../shared/tools beside the repo)")
    spec = importlib.util.spec_from_file_location("anchors", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        pytest.skip(f"{path} needs {exc.name}, which is not installed")
    return module


@pytest.mark.parametrize("qp", [22, 37])
def test_baseline_bicubic_matches_an_independent_per_plane_bicubic(cars, qp, tmp_path):
    anchors = _anchors()
    frames, source, _ = cars[8]
    # Each plane antialiased-bicubic down by 2 (torch), x264 (PyAV), each plane bicubic up.
    low = [tuple(anchors.resize(p, (p.shape[0] // 2, p.shape[1] // 2), True) for p in frame) for frame in frames]
    anchor_bytes, low_hat = anchors.encode(low, "h264", qp)
    anchor = [tuple(anchors.resize(p, q.shape, False) for p, q in zip(f, g)) for f, g in zip(low_hat, frames)]
    out = tmp_path / "bicubic.mp4"
    report = make_codec(BaseCodecSettings(qp=qp), "bicubic", "unused").encode(source, out)
    assert (report.mode, report.scale, report.base_width, report.base_height) == ("bicubic", 2, 160, 120)
    ours = _yuv(decode(out).frames)
    assert len(ours) == len(anchor) == CARS_FRAMES
    assert sequence_psnr_yuv(frames, ours, 255) == pytest.approx(sequence_psnr_yuv(frames, anchor, 255), abs=0.1)
    # The same rate too, give or take dualcodec's header (0.3 KB) and the colour flags.
    assert report.file_bytes == pytest.approx(anchor_bytes, rel=0.1)


@pytest.mark.parametrize("mode", ["dual", "bicubic", "plain"])
def test_compress_and_decompress_in_memory_are_encode_and_decode(mode, clip, tiny_model, tmp_path):
    from dualcodec.codec import decompress
    from dualcodec.yuv import YUVFormat

    layers = _layers(mode, tiny_model.path)
    codec = LayeredCodec(layers, BaseCodecSettings(qp=30))
    fmt = VideoReader(clip.path).info.format
    data = codec.compress(clip.frames, fmt, Fraction(25))
    out = tmp_path / "file.mp4"
    LayeredCodec(_layers(mode, tiny_model.path), BaseCodecSettings(qp=30)).encode(clip.path, out)
    assert data == out.read_bytes()
    model = str(tiny_model.path) if mode == "dual" else None
    from_memory, from_file = list(decompress(data, model).frames), list(decode(out, model).frames)
    assert len(from_memory) == len(clip.frames)
    for a, b in zip(from_memory, from_file):
        assert np.array_equal(a.y, b.y) and np.array_equal(a.u, b.u) and np.array_equal(a.v, b.v)
    assert fmt == YUVFormat(8, False, 6)


def test_decompress_refuses_bad_bytes_in_one_line(bicubic_file):
    from dualcodec.codec import decompress

    data = bicubic_file.path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10):  # in the samples or in the index at the end
        with pytest.raises(DualcodecError, match="^(cannot open the stream|the stream is truncated or damaged)"):
            decompress(data[:cut])
    with pytest.raises(DualcodecError, match="cannot open the stream"):
        decompress(b"not an mp4 at all")
    with pytest.raises(DualcodecError, match="no frame to compress"):
        LayeredCodec(PlainLayers(), BaseCodecSettings()).compress([], None)


def test_a_builtin_model_brings_its_siblings_of_other_scales(tmp_path, monkeypatch):
    """``--model default`` is the family default (2x), default_x1 and default_x4: --scale
    picks one, --scale auto tries them all; a model file is a family of one."""
    import dualcodec.model
    from dualcodec.auto import AutoCodec
    from dualcodec.codec import model_family
    from dualcodec.config import ModelConfig
    from dualcodec.model import DualLayerModel, save_model

    for name, scale, stride in (("mine", 2, 4), ("mine_x1", 1, 8), ("mine_x4", 4, 2)):
        config = ModelConfig(scale=scale, side_stride=stride, up_width=4, side_width=8, downsampler="bicubic")
        save_model(DualLayerModel(config), config, name, tmp_path / f"{name}.pt", lmbda=0.02)
    monkeypatch.setattr(dualcodec.model, "BUILTIN_DIR", tmp_path)
    assert sorted(model_family("mine")) == [1, 2, 4]
    assert sorted(model_family(str(tmp_path / "mine_x4.pt"))) == [4]  # a file: no siblings
    settings = BaseCodecSettings(qp=30)
    assert [make_codec(settings, None, "mine", s).layers.scale for s in (1, 2, 4)] == [1, 2, 4]
    assert make_codec(settings, None, "mine", 1).layers.mode == "dual"  # the scale-1 model, not plain
    auto = make_codec(settings, None, "mine")
    assert isinstance(auto, AutoCodec) and [c.layers.scale for c in auto.candidates] == [2, 4]  # no scale-1 trial
    assert auto.model_path is None  # several model files: a decoder finds the kept one by its header's name
    assert make_codec(settings, None, str(tmp_path / "mine_x4.pt")).model_path == tmp_path / "mine_x4.pt"
    with pytest.raises(DualcodecError, match=r"model 'mine_x4' is 4x, not 2x"):
        make_codec(settings, None, str(tmp_path / "mine_x4.pt"), 2)
    alone = make_codec(settings, None, str(tmp_path / "mine_x1.pt"))  # a scale-1 model alone is still tried
    assert [c.layers.scale for c in alone.candidates] == [1]


@pytest.mark.parametrize("qp, bit_depth, level", [(27, 8, 27), (41, 10, 29)])
def test_a_level_input_model_codes_the_quantiser_level_in_the_header(level_model, clip, tmp_path, qp, bit_depth, level):
    from dualcodec.codec import layers_for_header
    from dualcodec.yuv import YUVFormat

    loaded = load_model(str(level_model.path))
    fmt = YUVFormat(bit_depth=bit_depth)
    frames = clip.frames if bit_depth == 8 else [Planes(*(p.astype(np.uint16) * 4 for p in (f.y, f.u, f.v))) for f in clip.frames]
    data = LayeredCodec(ModelLayers(loaded), BaseCodecSettings(qp=qp)).compress(frames, fmt)
    plain = LayeredCodec(PlainLayers(), BaseCodecSettings(qp=qp)).compress(frames, fmt)
    path = _written(tmp_path / "level.mp4", data)
    header = ContainerReader(path).header
    assert header.level == level and header.scale == 1
    # a post-filter of the plain codec's own stream: the same base layer, bit for bit
    assert video_bitstream(path) == video_bitstream(_written(tmp_path / "plain.mp4", plain))
    decoded = [list(decode(path, str(level_model.path), runtime=r).frames) for r in ("torch", "openvino")]
    for a, b in zip(*decoded, strict=True):
        assert max(np.abs(p.astype(int) - q).max() for p, q in zip((a.y, a.u, a.v), (b.y, b.u, b.v))) <= 1
    # the level steers the filter: the same base at another level decodes to other frames
    base = next(ContainerReader(tmp_path / "plain.mp4").base_frames())
    at = {lv: ModelLayers(loaded, runtime="torch", up_level=lv).up(base, None, fmt) for lv in (level, level + 10)}
    assert not np.array_equal(at[level].y, at[level + 10].y)
    assert np.array_equal(at[level].y[:clip.height, :clip.width], decoded[0][0].y)  # the decoder's, uncropped
    # a header without the level is refused in one line
    with pytest.raises(DualcodecError, match="quantiser level, which the file's header does not carry"):
        layers_for_header(dataclasses.replace(header, level=None), str(level_model.path))


def _written(path, data: bytes):
    path.write_bytes(data)
    return path


# -- GOPs: a temporal model, and seeking ------------------------------------------------------


@pytest.fixture(scope="module")
def gops(tmp_path_factory):
    """8 frames of a moving 48x40 synthetic video as a y4m, and its frames."""
    frames = synthetic_frames(48, 40, count=8, seed=2)
    return SimpleNamespace(path=write_y4m(tmp_path_factory.mktemp("gops") / "gops.y4m", frames), frames=frames)


def _with_gop(layers, gops, destination, gop: int = 3, codec: str = "h264"):
    LayeredCodec(layers, BaseCodecSettings(codec=codec, qp=30, gop=gop)).encode(gops.path, destination)
    return destination


@pytest.mark.parametrize("mode, codec", [("temporal", "h264"), ("dual", "h264"), ("bicubic", "h264"),
                                         ("plain", "h264"), ("temporal", "hevc"), ("dual", "hevc")])
def test_seeking_to_any_frame_gives_the_frames_of_a_whole_decode(mode, codec, gops, temporal_model, tiny_model,
                                                                  tmp_path):
    model = temporal_model.path if mode == "temporal" else tiny_model.path
    layers = ModelLayers(load_model(str(model))) if mode == "temporal" else _layers(mode, model)
    path = _with_gop(layers, gops, tmp_path / f"{mode}.mp4", codec=codec)
    keys = [i for i, planes in enumerate(ContainerReader(path).base_frames()) if planes.key_frame]
    assert keys == [0, 3, 6]
    whole = list(decode(path, str(model)).frames)
    for start in range(len(whole)):
        reader = ContainerReader(path, start=start)
        assert reader.first == max(k for k in keys if k <= start)
        seeked = list(decode(path, str(model), start=start).frames)
        assert len(seeked) == len(whole) - start and all(_same(a, b) for a, b in zip(seeked, whole[start:]))


def test_a_temporal_model_carries_each_frame_to_the_next_within_its_gop_only(gops, temporal_model, tmp_path):
    loaded = load_model(str(temporal_model.path))
    path = _with_gop(ModelLayers(loaded), gops, tmp_path / "temporal.mp4")
    whole = list(decode(path, str(temporal_model.path)).frames)
    # every frame decoded on its own, as a GOP's first frame is: the key frames only are the same
    layers = ModelLayers(loaded)
    alone = []
    for planes in ContainerReader(path).base_frames():
        layers.reset()
        alone.append(layers.up(planes, None, ContainerReader(path).header.yuv_format))
    from dualcodec.video import crop_planes

    same = [_same(crop_planes(a, 48, 40), b) for a, b in zip(alone, whole)]
    assert same == [True, False, False, True, False, False, True, False]


def _shown_order(path) -> list[tuple[int, bool]]:
    """(display index, key frame) of each packet in decode order, as PyAV reads the file."""
    with av.open(str(path)) as inp:
        packets = [(p.pts, p.is_keyframe) for p in inp.demux(video=0) if p.size]
    ranks = {pts: rank for rank, pts in enumerate(sorted(pts for pts, _ in packets))}
    return [(ranks[pts], key) for pts, key in packets]


def _assert_every_seek_is_a_whole_decode_tail(path, keys: list[int]) -> None:
    whole = list(decode(path).frames)
    for start in range(len(whole)):
        assert ContainerReader(path, start=start).first == max(k for k in keys if k <= start)
        seeked = list(decode(path, start=start).frames)
        assert len(seeked) == len(whole) - start and all(_same(a, b) for a, b in zip(seeked, whole[start:]))


@pytest.mark.parametrize("codec", ["h264", "hevc", "av1"])
def test_every_base_codec_closes_its_gops(codec, tmp_path):
    # x265's default open GOP coded three frames shown before each later key frame after
    # it, needing both GOPs: a seek to frame 8 or on showed the wrong frames.
    source = write_y4m(tmp_path / "moving.y4m", synthetic_frames(64, 48, count=24, seed=1, noise=0.0))
    path = tmp_path / "plain.mp4"
    LayeredCodec(PlainLayers(), BaseCodecSettings(codec=codec, qp=30, gop=8)).encode(source, path)
    order = _shown_order(path)
    assert [shown for shown, key in order if key] == [0, 8, 16]
    assert all(max(shown for shown, _ in order[:index + 1]) == index for index, (_, key) in enumerate(order) if key)
    _assert_every_seek_is_a_whole_decode_tail(path, [0, 8, 16])


def test_seeking_in_an_open_gop_video_starts_at_a_clean_key_frame(tmp_path):
    # An HEVC video from elsewhere with x265's defaults: its later key frames have leading
    # frames that need the GOP before, so a seek to any frame starts at frame 0.
    path = tmp_path / "open.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx265", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.options = {"x265-params": "keyint=8:log-level=error"}
        for i, rgb in enumerate(synthetic_rgb(64, 48, 24, seed=1, noise=0.0)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    order = _shown_order(path)
    assert [index for index, (shown, key) in enumerate(order) if key and shown != index]  # open key frames
    _assert_every_seek_is_a_whole_decode_tail(path, [0])


def test_seeking_past_the_end_or_before_the_start_is_refused(gops, tmp_path):
    path = _with_gop(PlainLayers(), gops, tmp_path / "plain.mp4")
    assert [decode(path, start=s).length for s in (0, 5, 7)] == [8, 3, 1]  # what the progress bar counts
    with pytest.raises(DualcodecError, match="has 8 frames: --start 8 is past its end"):
        decode(path, start=8)
    with pytest.raises(DualcodecError, match="--start must be 0 or more"):
        decode(path, start=-1)


def test_the_encoder_keeps_the_latents_of_the_blocks_where_they_still_fit(clip, tiny_model):
    from dualcodec.codec import to_planes, to_unit
    from dualcodec.entropy import decompress_keep
    from dualcodec.nets.common import bicubic_down

    original, base, fmt = _side_inputs(clip)
    # The next frame: its left 16 columns (two block columns) changed, the rest as before.
    changed = Planes(original.y.copy(), original.u.copy(), original.v.copy())
    for plane, width in ((changed.y, 16), (changed.u, 8), (changed.v, 8)):
        plane[:, :width] = 255 - plane[:, :width]
    changed_base = to_planes(*(bicubic_down(p, 2) for p in to_unit(changed, fmt)), fmt)
    layers = _oracle_layers(tiny_model, original, lmbda=1e-3)
    first = layers.side(original, base, fmt)
    assert first.mode == SideMode.NEW
    side = layers.side(changed, changed_base, fmt)
    # The kept latents rebuild the unchanged blocks exactly and the changed ones wrongly:
    # neither REPEAT nor SKIP, KEEP of the unchanged blocks.
    assert side.mode == SideMode.KEEP
    decoder = _oracle_layers(tiny_model, original, lmbda=0.0)
    decoder.up(base, first, fmt)
    classes = decoder._change_classes(changed_base, fmt)
    decoder.up(changed_base, side, fmt)
    kept = (decoder._w_hat[0] != 0).any(dim=0)
    assert not kept[:, :2].any() and int(kept[:, 2:].sum()) >= 4 * 3 - 1  # the zero block may go either way
    assert torch.equal(decoder._w_hat, layers._w_hat)  # the decoder keeps what the encoder kept
    assert (classes[0, :, :2] > 0).all() and (classes[0, :, 3:] == 0).all()  # the base layer says where it changed
    flags = decompress_keep(side.entropy_bytes, classes)
    assert torch.equal(flags & (layers._w_hat[0] != 0).any(dim=0), kept) and not flags[:, :2].any()


def test_a_keep_without_latents_to_keep_is_damage(clip, tiny_model):
    from dualcodec.errors import DamagedData

    original, base, fmt = _side_inputs(clip)
    layers = _oracle_layers(tiny_model, original, lmbda=0.0)
    layers.up(base, SideFrame(SideMode.SKIP), fmt)
    with pytest.raises(DamagedData, match="keeps latents"):
        layers.up(base, SideFrame(SideMode.KEEP, bytes([128] * 4) + b"\x00"), fmt)


@pytest.mark.parametrize("after", ["", "next(video.frames)"], ids=["never read", "one frame read"])
def test_a_program_may_exit_while_a_decode_is_open(dual_file, tiny_model, after):
    # A decode's stages run ahead on threads; a program that leaves one unfinished (an
    # error after opening it, a script that takes a few frames) must still exit as it
    # says, not abort in OpenVINO ("terminate called without an active exception").
    import subprocess
    import sys

    script = (f"import sys\nfrom dualcodec.codec import decode\n"
              f"video = decode({str(dual_file.path)!r}, {str(tiny_model.path)!r}, runtime='openvino')\n"
              f"{after}\nsys.exit(3)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
