"""Plain helper functions shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_CONFIG = {"up_width": 8, "side_width": 16, "down_width": 16, "up_chroma": "own"}  # the shipped default's upsampler
TINY_LMBDA = 0.02  # the rate weight stored in the tiny model files


def shared_file(relative: str) -> Path:
    """A file of the shared data folder (../shared/data), or skip the test when it is absent."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"shared test data not available: {path} (expected ../shared/data beside the repo)")
    return path


def synthetic_rgb(width: int, height: int, count: int = 3, seed: int = 0, noise: float = 3.0) -> list[np.ndarray]:
    """Smooth moving gradients plus a little noise: RGB uint8 ``[H, W, 3]`` frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    frames = []
    for i in range(count):
        r = 128 + 80 * np.sin(2 * np.pi * (1.2 * u + 0.3 * v + 0.05 * i))
        g = 128 + 80 * np.cos(2 * np.pi * (0.9 * v - 0.2 * u - 0.04 * i))
        b = 40 + 170 * (0.6 * u + 0.4 * v) + 5 * i
        frame = np.stack([r, g, b], axis=-1) + rng.normal(0.0, noise, (height, width, 3))
        frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
    return frames


def to_planes(rgb: np.ndarray, pix_fmt: str = "yuv420p"):
    """An RGB frame as 4:2:0 :class:`~dualcodec.basecodec.Planes` (8 or 10 bit), converted
    by PyAV (swscale's defaults: BT.601, limited range), not by dualcodec."""
    import av

    from dualcodec.basecodec import Planes

    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
    dtype = np.dtype("<u2") if pix_fmt == "yuv420p10le" else np.dtype(np.uint8)
    planes = [np.frombuffer(p, dtype=dtype).reshape(-1, p.line_size // dtype.itemsize)[: p.height, : p.width].copy()
              for p in frame.planes]
    return Planes(*planes)


def image_planes(path: Path):
    """An image file as PyAV decodes and converts it by default (``reformat(format="yuv420p")``,
    swscale: BT.601, the decoder's range flag, full for PNG), as ../shared/tools/anchors.py reads it."""
    import av

    from dualcodec.basecodec import Planes

    with av.open(str(path)) as inp:
        frame = next(inp.decode(video=0)).reformat(format="yuv420p")
    return Planes(*(np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width].copy()
                    for p in frame.planes))


def pyav_rgb(planes, full_range: bool = False) -> np.ndarray:
    """8-bit 4:2:0 planes to R'G'B' by swscale's defaults (BT.601, limited range unless
    ``full_range``), PyAV alone."""
    import av

    frame = av.VideoFrame(planes.width, planes.height, "yuv420p")
    for plane, data in zip(frame.planes, (planes.y, planes.u, planes.v)):
        rows = np.zeros((data.shape[0], plane.line_size), np.uint8)
        rows[:, : data.shape[1]] = data
        plane.update(rows.tobytes())
    return frame.to_ndarray(format="rgb24", **({"src_color_range": "JPEG"} if full_range else {}))


def synthetic_frames(width: int, height: int, count: int = 3, seed: int = 0, noise: float = 3.0,
                     pix_fmt: str = "yuv420p") -> list:
    """:func:`synthetic_rgb` as 4:2:0 :class:`~dualcodec.basecodec.Planes` (see :func:`to_planes`)."""
    return [to_planes(rgb, pix_fmt) for rgb in synthetic_rgb(width, height, count, seed, noise)]


def write_y4m(path: Path, frames: list, rate: Fraction = Fraction(25)) -> Path:
    """Write 4:2:0 planes (8 or 10 bit, any size) as y4m, with PyAV alone: a y4m header
    and the raw planes, as the format defines it."""
    bits = 10 if frames[0].y.dtype == np.uint16 else 8
    height, width = frames[0].y.shape
    rate = Fraction(rate)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{rate.numerator}:{rate.denominator} Ip A1:1 "
                f"{'C420p10 XYSCSS=420P10' if bits == 10 else 'C420jpeg'}\n".encode())
        for planes in frames:
            f.write(b"FRAME\n")
            for plane in (planes.y, planes.u, planes.v):
                f.write(plane.astype("<u2" if bits == 10 else np.uint8).tobytes())
    return Path(path)


def psnr_yuv(a, b, peak: float = 255.0) -> float:
    """PSNR-YUV (6:1:1) of two :class:`~dualcodec.basecodec.Planes` frames, in numpy."""
    values = [psnr(p, q, peak) for p, q in ((a.y, b.y), (a.u, b.u), (a.v, b.v))]
    return (6 * values[0] + values[1] + values[2]) / 8


def write_png(path: Path, frame: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(frame).save(path)
    return Path(path)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def build_tiny_model(seed: int = 0, perturb: bool = True, up_form: str = "mixture", **config):
    """A tiny DualLayerModel and its config (``up_form``: the upsampler's form; ``config``:
    other model settings).

    ``perturb`` scales up the last layer of the side analysis (its latents quantise to
    non-zero symbols at the side levels the tests code at, so the entropy decoder has work)
    and gives the zero-initialised enhancement residual of the side synthesis and the
    upsampler's kernel predictor small random weights, so the decoded frames depend on the
    latents and the upsampler is not plain bicubic (an untrained model would exercise
    neither); a level-input upsampler's biases get random weights too, so the output
    depends on the level, and a temporal upsampler's memory part, so it depends on the
    previous frame.
    """
    import torch

    from dualcodec.config import ModelConfig
    from dualcodec.model import DualLayerModel

    torch.manual_seed(seed)
    config = ModelConfig(**{**TINY_CONFIG, **config}, up_form=up_form)
    model = DualLayerModel(config)
    if perturb:
        with torch.no_grad():
            if model.has_side_stream:
                model.g_a.body[-1].weight.normal_(0.0, 0.5)
                last = model.g_s.body[-1]
                last.weight[model.g_s.out_channels:].normal_(0.0, 0.002)
            model.upsampler.head.weight.normal_(0.0, 0.01)
            if model.upsampler.own_chroma:
                model.upsampler.chroma_head.weight.normal_(0.0, 0.002)  # chroma is flat: small steps
            if model.takes_level:
                model.upsampler.level_bias.out.weight.normal_(0.0, 0.05)
            if model.temporal:  # the previous frame matters: its change in, a blend towards it out
                model.upsampler.memory_in.weight.normal_(0.0, 0.05)
                model.upsampler.memory_gate.weight.normal_(0.0, 0.05)
                model.upsampler.memory_gate.bias.fill_(0.3)
                model.upsampler.memory_motion[-1].weight.normal_(0.0, 0.05)
    return model, config


def new_latents_every_frame(loaded, level: int = 30, keep: bool = False):
    """The model's layers (:class:`~dualcodec.codec.ModelLayers`), but sending a NEW side
    packet with every block enhanced in every frame, at side level ``level``; with
    ``keep``, a KEEP packet on every frame the base codec predicts, keeping every other
    block (a checkerboard).

    The encoder's rate-distortion choice would often skip blocks, or whole frames, with an
    untrained model; files made with these layers exercise the entropy decoder on every
    block of every frame.
    """
    import torch

    from dualcodec.codec import ModelLayers
    from dualcodec.entropy import compress_keep, keep_probabilities
    from dualcodec.sidestream import SideFrame, SideMode

    class NewEveryFrame(ModelLayers):
        def side(self, original, base, fmt):
            side = self._side(original, base, fmt)
            self._previous_y = base.y
            return side

        def _side(self, original, base, fmt):
            from dualcodec.codec import to_unit

            if keep and not base.key_frame and self._previous_y is not None:
                classes = self._change_classes(base, fmt)
                rows, cols = torch.meshgrid(*(torch.arange(n) for n in classes.shape[-2:]), indexing="ij")
                kept = (rows + cols) % 2 == 0
                return SideFrame(SideMode.KEEP, compress_keep(kept, classes, keep_probabilities(kept, classes)))
            model, coder = self.model, self.model.latent_coder
            y_lr_hat, uv_lr_hat = to_unit(base, fmt)
            q = coder.quantize(model.analyse(*to_unit(original, fmt), y_lr_hat, uv_lr_hat), self.level)
            classes = model.side_classes(y_lr_hat, fmt)
            enhanced = torch.ones(q.shape[-2:], dtype=torch.bool)
            return SideFrame(SideMode.NEW, coder.compress(q, classes, self.level, enhanced))

        def sides(self, frames, fmt):  # frame by frame (no choice to pipeline)
            return (self.side(original, base, fmt) for original, base in frames)

    return NewEveryFrame(loaded, level=level)


def make_av_clip(path: Path, width: int = 64, height: int = 48, frames: int = 5, rate: int = 25,
                 audio: bool = False, faststart: bool = False, matrix: int | None = None,
                 rotation: int = 0, mirrored: bool = False, times: list[float] | None = None,
                 tags: dict[str, str] | None = None, language: str | None = None,
                 colour: tuple[int, int] | None = None, aspect: Fraction | None = None) -> Path:
    """A small H.264 MP4 (optionally with a mono AAC track) written with PyAV; ``matrix``:
    the H.273 colour matrix flagged in the stream (default: none, "unspecified");
    ``rotation``: the display rotation flagged, degrees counter-clockwise (a phone's portrait video),
    ``mirrored``: then mirrored left to right (a display matrix of negative determinant);
    ``times``: each frame's time in seconds, for frames that do not come at a constant rate;
    ``tags``: the container's (as a phone writes creation_time); ``language``: every stream's;
    ``colour``: the (primaries, transfer) flagged (H.273: HLG is (9, 18)); ``aspect``: the
    sample aspect ratio (an anamorphic DVD's 32/27)."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if matrix is not None:
            video.codec_context.colorspace = matrix
        if colour is not None:
            video.codec_context.color_primaries, video.codec_context.color_trc = colour
        if aspect is not None:
            video.codec_context.sample_aspect_ratio = aspect
        if rotation or mirrored:
            video.set_display_rotation(rotation, hflip=mirrored)
        out.metadata.update(tags or {})
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for stream in filter(None, [video, sound] if language else []):
            stream.metadata["language"] = language
        if times is not None:
            video.codec_context.time_base = Fraction(1, 90000)
        for i, rgb in enumerate(synthetic_rgb(width, height, frames, seed=1)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if times is None:
                frame.pts, frame.time_base = i, Fraction(1, rate)
            else:
                frame.pts, frame.time_base = round(times[i] * 90000), Fraction(1, 90000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            t = np.arange(16000 * frames // rate) / 16000.0
            samples = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
            for start in range(0, len(samples), 1024):
                chunk = samples[start : start + 1024]
                af = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
                af.sample_rate, af.pts = 16000, start
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
    return Path(path)


def packet_spans(path: Path, kind: str) -> list[tuple[int, int]]:
    """(file offset, size) of every non-empty packet of the first stream of ``kind``."""
    import av

    with av.open(str(path)) as inp:
        stream = getattr(inp.streams, kind)[0]
        return [(p.pos, p.size) for p in inp.demux(stream) if p.size]


def run(capsys, *argv) -> tuple[int, str, str]:
    """``dualcodec ARGV`` in-process: exit status, stdout, stderr."""
    from dualcodec.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected_code: int = 1) -> str:
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dualcodec: error: ")
    assert "Traceback" not in err
    return lines[0]


# -- independent references: PyAV and numpy only, no dualcodec code ------------------------

def read_yuv420(path: Path, count: int | None = None) -> list[tuple]:
    """The (y, u, v) planes of the first ``count`` frames of a 4:2:0 file (``yuv420p``, ``yuvj420p``
    or ``yuv420p10le``) as PyAV decodes them, unconverted."""
    import av

    frames = []
    with av.open(str(path)) as inp:
        for frame in inp.decode(inp.streams.video[0]):
            assert frame.format.name in ("yuv420p", "yuvj420p", "yuv420p10le"), frame.format.name
            dtype = np.dtype("<u2") if frame.format.name == "yuv420p10le" else np.dtype(np.uint8)
            frames.append(tuple(
                np.frombuffer(p, dtype=dtype).reshape(-1, p.line_size // dtype.itemsize)[: p.height, : p.width]
                .astype(dtype.newbyteorder("="))
                for p in frame.planes[:3]))
            if count is not None and len(frames) == count:
                break
    return frames


def x264_mp4(path: Path, frames: list[tuple], qp: int, rate: Fraction, colour: tuple[int, int, int, int],
             gop: int = 32, preset: str = "medium") -> Path:
    """``frames`` coded by libx264 at constant ``qp`` into an MP4, with PyAV alone.
    ``colour``: the (matrix, primaries, transfer, range) code points flagged in the stream."""
    import av

    ten_bit = frames[0][0].dtype == np.uint16
    pix_fmt = "yuv420p10le" if ten_bit else "yuv420p"
    height, width = frames[0][0].shape
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(rate))
        cc = stream.codec_context
        cc.width, cc.height, cc.pix_fmt, cc.gop_size = width, height, pix_fmt, gop
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = colour
        cc.options = {"preset": preset, "qp": str(qp)}
        for i, planes in enumerate(frames):
            frame = av.VideoFrame(width, height, pix_fmt)
            for plane, data in zip(frame.planes, planes):
                row = plane.line_size // data.dtype.itemsize
                padded = np.zeros((data.shape[0], row), dtype="<u2" if ten_bit else np.uint8)
                padded[:, : data.shape[1]] = data
                plane.update(padded.tobytes())
            frame.pts, frame.time_base = i, 1 / Fraction(rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return Path(path)


# x264's version SEI (user_data_unregistered): x264's own UUID, written here as x264's
# common/base.c has it, not taken from dualcodec.
X264_UUID = bytes.fromhex("dc45e9bde6d948b7962cd820d923eeef")


def without_banner_units(data: bytes) -> bytes:
    """An MP4 H.264 sample (NAL units after 4-byte lengths) without the units that hold
    x264's version SEI (:data:`X264_UUID`)."""
    units, pos = [], 0
    while pos < len(data):
        end = pos + 4 + int.from_bytes(data[pos:pos + 4], "big")
        units.append(data[pos:end])
        pos = end
    return b"".join(unit for unit in units if X264_UUID not in unit)


def video_bitstream(path: Path) -> tuple[bytes, list[bytes]]:
    """The first video stream's parameter sets (its extradata: for H.264 the SPS, with the
    colour flags, and the PPS) and the payload of each non-empty packet, in file order."""
    import av

    with av.open(str(path)) as inp:
        stream = inp.streams.video[0]
        return bytes(stream.codec_context.extradata or b""), [bytes(p) for p in inp.demux(stream) if p.size]


def sequence_psnr_yuv(ref: list[tuple], rec: list[tuple], peak: float) -> float:
    """PSNR-YUV (6:1:1) of two sequences, each plane's PSNR from its MSE over the whole sequence."""
    assert len(ref) == len(rec) > 0
    values = [psnr(np.stack([f[i] for f in ref]), np.stack([f[i] for f in rec]), peak) for i in range(3)]
    return (6 * values[0] + values[1] + values[2]) / 8


def display_matrix(path: Path) -> list[int] | None:
    """The display matrix (nine 32-bit integers) of a file's first video frame, as PyAV
    hands it on (no dualcodec code); None when it has none."""
    import av

    with av.open(str(path)) as inp:
        frame = next(inp.decode(video=0))
        found = [bytes(d) for d in frame.side_data if d.type.name == "DISPLAYMATRIX"]
    return np.frombuffer(found[0], dtype="<i4").tolist() if found else None


def clip_with_a_flash_and_a_click(path, video_start: float, audio_start: float, audio_codec: str,
                                   flash: int = 10, rate: int = 25, frames: int = 20):
    """Video that starts ``video_start`` s into the file and shows frame ``flash`` white,
    the rest black; audio that starts at ``audio_start`` s, silent but for a click as that
    frame is shown. Written with PyAV (AAC in MP4, or PCM in MKV)."""
    import av

    sample_rate = 16000
    container = "matroska" if audio_codec.startswith("pcm") else "mp4"
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream(audio_codec, rate=sample_rate)
        sound.layout = "mono"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 255 if i == flash else 0, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i + round(video_start * rate), Fraction(1, rate)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = np.zeros(round((video_start - audio_start + frames / rate) * sample_rate) + 2048, np.float32)
        click = round((video_start + flash / rate - audio_start) * sample_rate)
        samples[click : click + 32] = 0.8
        planar = samples if container == "mp4" else (samples * 32767).astype(np.int16)
        for start in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(planar[None, start : start + 1024], format="fltp" if container == "mp4"
                                               else "s16", layout="mono")
            chunk.sample_rate, chunk.pts = sample_rate, start + round(audio_start * sample_rate)
            chunk.time_base = Fraction(1, sample_rate)
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    return path


def flash_and_click_seconds(path) -> tuple[float, float]:
    """When the white frame shows and when the click sounds, as PyAV presents the file."""
    import av

    with av.open(str(path)) as inp:
        frames = [f for f in inp.decode(video=0)]
        bright = max(frames, key=lambda f: f.to_ndarray(format="gray").mean())
        flash = float(bright.pts * bright.time_base)
    with av.open(str(path)) as inp:
        loudest, when = 0.0, None
        for f in inp.decode(audio=0):
            a = np.abs(f.to_ndarray().astype(np.float64).reshape(-1))
            if a.size and a.max() > loudest:
                loudest, when = a.max(), float(f.pts * f.time_base) + int(a.argmax()) / f.sample_rate
    return flash, when
