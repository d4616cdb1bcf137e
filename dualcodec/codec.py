"""The closed loop from a video file to a dualcodec MP4 and back.

Every codec, learned or not, is a :class:`LayeredCodec` with a different
:class:`Layers` (the one seam):

============  ==================  ======================  =======================
mode          down (encoder)      side stream (encoder)   up (decoder)
============  ==================  ======================  =======================
``dual``      learned downsampler ``g_a`` + entropy coder spatially varying, learned
``bicubic``   bicubic             none                    bicubic
``plain``     identity (scale 1)  none                    identity
============  ==================  ======================  =======================

The encoder runs the decoder's loop: each base-layer packet is decoded as soon as
the encoder releases it, and the side stream of a frame is computed from the original
frame *and* the decoded base frame, exactly what the decoder will have.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from dualcodec.basecodec import (
    BaseCodecSettings,
    BaseDecoder,
    BaseEncoder,
    Planes,
    check_encoder,
    planes_from_tensors,
    planes_to_tensors,
)
from dualcodec.container import ContainerReader, ContainerWriter
from dualcodec.errors import DualcodecError
from dualcodec.header import Header
from dualcodec.model import LoadedModel, lmbda_at, load_model, resolve_model_path
from dualcodec.nets.common import bicubic_down, bicubic_up
from dualcodec.outputs import atomic_path
from dualcodec.sidestream import SideFrame, SideMode
from dualcodec.video import VideoReader
from dualcodec.yuv import rgb_to_yuv420, yuv420_to_rgb


class Layers(Protocol):
    """What turns full-resolution frames into a base frame and side bytes, and back."""

    mode: str
    scale: int
    side_stream: bool  # the file carries a side stream (a data track)

    def down(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``[1,3,H,W]`` to ``x_lr`` float ``[1,3,H/scale,W/scale]``."""

    def reset(self) -> None:
        """Forget the previous frame's side data: a stream or a GOP starts."""

    def side(self, x: torch.Tensor, x_lr_hat: torch.Tensor) -> SideFrame | None:
        """The side stream of one frame (``None``: this mode has no side stream)."""

    def up(self, x_lr_hat: torch.Tensor, side: SideFrame | None) -> torch.Tensor:
        """Decoded base frame (and side stream) to ``x_hat`` float ``[1,3,H,W]``."""


class ModelLayers:
    """The learned layers. ``lmbda`` weighs side-stream bits (per pixel) against L1
    distortion when the encoder chooses between new latents and repeating the last ones."""

    mode = "dual"

    def __init__(self, loaded: LoadedModel, lmbda: float = 0.0) -> None:
        self.loaded = loaded
        self.model = loaded.model.to(memory_format=torch.channels_last)
        self.scale = loaded.config.scale
        self.side_stream = self.model.has_side_stream
        self.lmbda = lmbda
        self.reset()

    def reset(self) -> None:
        self._y_hat: torch.Tensor | None = None

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.downsample(x)

    def side(self, x: torch.Tensor, x_lr_hat: torch.Tensor) -> SideFrame | None:
        """Pick NEW, REPEAT or SKIP for this frame by ``L1 + lmbda * bits / pixel``."""
        if not self.side_stream:
            return None
        h, w = x_lr_hat.shape[-2:]
        strings = self.model.compress_side(x, x_lr_hat)
        x_f = x.float() / 255.0
        bits_per_pixel = 8 * len(strings[0]) / (x.shape[-1] * x.shape[-2])
        options = [(SideMode.NEW, self.model.decompress_side(strings, h, w), self.lmbda * bits_per_pixel)]
        options.append((SideMode.SKIP, self.model.skip_latents(h, w), 0.0))
        if self._y_hat is not None:  # None at the first frame and at every key frame
            options.append((SideMode.REPEAT, self._y_hat, 0.0))
        costs = [self._distortion(x_f, x_lr_hat, y_hat) + rate for _, y_hat, rate in options]
        mode, y_hat, _ = options[min(range(len(options)), key=costs.__getitem__)]
        self._y_hat = y_hat
        return SideFrame(mode, strings[0] if mode == SideMode.NEW else b"")

    def _distortion(self, x_f: torch.Tensor, x_lr_hat: torch.Tensor, y_hat: torch.Tensor) -> float:
        x_hat = self.model.upsample(x_lr_hat, y_hat).clamp(0, 1)
        return float((x_hat - x_f).abs().mean())

    def up(self, x_lr_hat: torch.Tensor, side: SideFrame | None) -> torch.Tensor:
        x_lr_hat = x_lr_hat.contiguous(memory_format=torch.channels_last)
        if not self.side_stream:
            return self.model.upsample(x_lr_hat, None)
        h, w = x_lr_hat.shape[-2:]
        mode = side.mode if side is not None else SideMode.SKIP  # None: a version 1 file without a data track
        if mode == SideMode.NEW:
            self._y_hat = self.model.decompress_side([side.entropy_bytes], h, w)
        elif mode == SideMode.SKIP:
            self._y_hat = self.model.skip_latents(h, w)
        return self.model.upsample(x_lr_hat, self._y_hat)


class BicubicLayers:
    mode = "bicubic"
    side_stream = False

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_down(x.float() / 255.0, self.scale)

    def reset(self) -> None:
        pass

    def side(self, x: torch.Tensor, x_lr_hat: torch.Tensor) -> SideFrame | None:
        return None

    def up(self, x_lr_hat: torch.Tensor, side: SideFrame | None) -> torch.Tensor:
        return bicubic_up(x_lr_hat, self.scale)


class PlainLayers:
    mode = "plain"
    scale = 1
    side_stream = False

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0

    def reset(self) -> None:
        pass

    def side(self, x: torch.Tensor, x_lr_hat: torch.Tensor) -> SideFrame | None:
        return None

    def up(self, x_lr_hat: torch.Tensor, side: SideFrame | None) -> torch.Tensor:
        return x_lr_hat


@dataclass(frozen=True)
class EncodeReport:
    frames: int
    width: int
    height: int
    base_width: int
    base_height: int
    base_bytes: int
    side_bytes: int
    file_bytes: int
    seconds: float
    audio: tuple[str, ...] = ()  # what became of each audio stream ("aac copied", ...)


def _padded_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """Pad to a multiple of 2*scale so the base layer has even (4:2:0) dimensions."""
    m = 2 * scale
    return width + (-width) % m, height + (-height) % m


def _to_tensor(rgb: np.ndarray, width: int, height: int) -> torch.Tensor:
    h, w = rgb.shape[:2]
    rgb = np.pad(rgb, ((0, height - h), (0, width - w), (0, 0)), mode="edge")
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def _to_rgb(x_hat: torch.Tensor, width: int, height: int) -> np.ndarray:
    x = (x_hat[0, :, :height, :width].clamp(0, 1) * 255.0).round().to(torch.uint8)
    return x.permute(1, 2, 0).contiguous().numpy()


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, leave=False, dynamic_ncols=True)


class LayeredCodec:
    """Encode files with a :class:`Layers` and a base codec; the one interface the CLI uses.
    ``audio``: what to do with the source's audio (:data:`dualcodec.audio.POLICIES`)."""

    def __init__(self, layers: Layers, settings: BaseCodecSettings, audio: str = "auto") -> None:
        self.layers = layers
        self.settings = settings
        self.audio = audio

    def _header(self, width: int, height: int) -> Header:
        scale = self.layers.scale
        pw, ph = _padded_size(width, height, scale)
        loaded = getattr(self.layers, "loaded", None)
        return Header(
            mode=self.layers.mode,
            scale=scale,
            width=width,
            height=height,
            base_width=pw // scale,
            base_height=ph // scale,
            codec=self.settings.codec,
            bit_depth=self.settings.bit_depth,
            full_range=self.settings.full_range,
            model_name=loaded.name if loaded else None,
            model_fingerprint=loaded.fingerprint if loaded else None,
        )

    @torch.inference_mode()
    def encode(
        self, source: Path, destination: Path, progress: bool = False, max_frames: int | None = None
    ) -> EncodeReport:
        """Encode ``source`` (at most ``max_frames`` frames) into the MP4 ``destination``."""
        import av

        start = time.time()
        reader = VideoReader(source)
        info = reader.info
        header = self._header(info.width, info.height)
        pw, ph = _padded_size(info.width, info.height, header.scale)
        fmt = self.settings.yuv_format
        self.layers.reset()
        frames = 0
        try:
            with atomic_path(Path(destination)) as tmp:
                writer = ContainerWriter(tmp, header, self.settings, info.rate, side_stream=self.layers.side_stream)
                try:
                    audio = writer.add_audio_streams(Path(source), self.audio) if info.has_audio else []
                    encoder = BaseEncoder(self.settings, header.base_width, header.base_height, info.rate,
                                          writer.video_codec_context)
                    loop = _ClosedLoop(self.layers, writer, encoder, fmt)
                    known = [n for n in (info.frames, max_frames) if n]
                    total = min(known) if known else None
                    with _progress(total, "encode", progress) as bar:
                        for rgb in reader.frames():
                            if max_frames is not None and frames >= max_frames:
                                break
                            if rgb.shape[:2] != (info.height, info.width):
                                raise DualcodecError(
                                    f"{source}: frame {frames + 1} is {rgb.shape[1]}x{rgb.shape[0]}, "
                                    f"the first was {info.width}x{info.height}"
                                )
                            loop.push(_to_tensor(rgb, pw, ph))
                            frames += 1
                            bar.update()
                        loop.finish()
                    writer.copy_audio(frames / info.rate)
                finally:
                    writer.close()
                # Count the bytes as stored: the MP4 muxer rewrites H.264/HEVC start codes as
                # length prefixes, so the encoder's packet sizes are not the file's.
                sizes = ContainerReader(tmp).sizes()
        except av.FFmpegError as exc:  # the base encoder or the muxer
            raise DualcodecError(f"{source}: encoding failed ({exc.__class__.__name__}: {exc})") from None
        return EncodeReport(frames, info.width, info.height, header.base_width, header.base_height,
                            sizes.base_bytes, sizes.side_bytes, sizes.file_bytes, time.time() - start,
                            tuple(audio))


class _ClosedLoop:
    """Feeds frames to the base encoder, decodes its packets, writes side payloads."""

    def __init__(self, layers: Layers, writer: ContainerWriter, encoder: BaseEncoder, fmt) -> None:
        self.layers, self.writer, self.encoder, self.fmt = layers, writer, encoder, fmt
        self.decoder: BaseDecoder | None = None
        self.pending: deque[torch.Tensor] = deque()

    def push(self, x: torch.Tensor) -> None:
        x_lr = self.layers.down(x).clamp(0, 1)
        planes = planes_from_tensors(*rgb_to_yuv420(x_lr, self.fmt), self.fmt)[0]
        self.pending.append(x)
        self._packets(self.encoder.encode(planes))

    def finish(self) -> None:
        self._packets(self.encoder.encode(None))
        if self.decoder is not None:
            self._decoded(self.decoder.decode(None))
        if self.pending:
            raise DualcodecError(f"base layer lost {len(self.pending)} frames in the encoder")

    def _packets(self, packets: list) -> None:
        for packet in packets:
            if self.decoder is None:
                s = self.encoder.settings
                self.decoder = BaseDecoder(s.codec, s.bit_depth, self.encoder.codec_context.extradata)
            self._decoded(self.decoder.decode(packet))  # decode before muxing: muxing consumes the packet
            self.writer.mux_base([packet])

    def _decoded(self, decoded: list[Planes]) -> None:
        for planes in decoded:
            x = self.pending.popleft()
            if planes.key_frame:  # nothing refers across a key frame: each GOP decodes on its own
                self.layers.reset()
            side = self.layers.side(x, planes_to_rgb(planes, self.fmt))
            if side is not None:
                self.writer.mux_side(side)


def planes_to_rgb(planes: Planes, fmt) -> torch.Tensor:
    """A decoded base frame as R'G'B' ``[1,3,h,w]`` in [0, 1]."""
    y, uv = planes_to_tensors([planes])
    return yuv420_to_rgb(y, uv, fmt).clamp(0, 1)


def layers_for_header(header: Header, model: str | None) -> Layers:
    """The layers that decode a file, checking that the model matches the one it was made with."""
    if header.mode == "bicubic":
        return BicubicLayers(header.scale)
    if header.mode == "plain":
        return PlainLayers()
    if model is None:
        try:
            model_path = resolve_model_path(header.model_name)
        except DualcodecError:
            raise DualcodecError(
                f"the file was encoded with model {header.model_name!r}, which is not built in; pass it with --model PATH"
            ) from None
        loaded = load_model(str(model_path))
    else:
        loaded = load_model(model)
    if loaded.fingerprint != header.model_fingerprint:
        raise DualcodecError(
            f"model mismatch: the file was encoded with model {header.model_name!r} "
            f"(fingerprint {header.model_fingerprint}), but {loaded.name!r} has fingerprint "
            f"{loaded.fingerprint}; pass the right one with --model"
        )
    if loaded.config.scale != header.scale:
        raise DualcodecError(f"model {loaded.name!r} is {loaded.config.scale}x, the file is {header.scale}x")
    return ModelLayers(loaded)


@dataclass
class DecodedVideo:
    header: Header
    rate: object
    frames: Iterator[np.ndarray]
    damaged: set[int]  # 0-based indices of the frames concealed so far (see ContainerReader)


def decode(source: Path, model: str | None = None, strict: bool = False) -> DecodedVideo:
    """Open a dualcodec file (or a plain video without the header: mode plain); frames are
    RGB uint8 ``[H, W, 3]`` at the original size. Damage is concealed unless ``strict``."""
    reader = ContainerReader(source, strict=strict)
    header = reader.header
    layers = layers_for_header(header, model)
    return DecodedVideo(header, reader.rate, _decode_frames(reader, layers), reader.damaged)


@torch.inference_mode()
def _decode_frames(reader: ContainerReader, layers: Layers) -> Iterator[np.ndarray]:
    header = reader.header
    fmt = BaseCodecSettings(codec=header.codec, bit_depth=header.bit_depth, full_range=header.full_range).yuv_format
    payloads = reader.side_frames() if header.mode == "dual" and reader.has_side_stream else None
    gops = header.version >= 2  # version 1 files could repeat latents across a key frame
    for index, planes in enumerate(reader.base_frames()):
        if gops and planes.key_frame:
            layers.reset()
        side = None
        if payloads is not None:
            side = next(payloads, None)
            if side is None:
                reader.record_damage(index, f"side stream ends before frame {index + 1}")
                side, payloads = SideFrame(SideMode.SKIP), None
            elif gops and planes.key_frame and side.mode == SideMode.REPEAT:
                reader.record_damage(index, f"side stream of frame {index + 1} repeats across a key frame")
                side = SideFrame(SideMode.SKIP)
        x_hat = layers.up(planes_to_rgb(planes, fmt), side)
        yield _to_rgb(x_hat, header.width, header.height)


def make_codec(settings: BaseCodecSettings, baseline: str | None, model: str, scale: int | None,
               audio: str = "auto") -> LayeredCodec:
    """The codec the command line asks for: a learned model, or a baseline; its settings
    are checked against the real encoder first."""
    check_encoder(settings)
    if baseline == "none":
        return LayeredCodec(PlainLayers(), settings, audio)
    if baseline == "bicubic":
        return LayeredCodec(BicubicLayers(scale or 2), settings, audio)
    loaded = load_model(model)
    if scale is not None and scale != loaded.config.scale:
        raise DualcodecError(f"model {loaded.name!r} is {loaded.config.scale}x, not {scale}x (pick a {scale}x model)")
    qp = settings.qp if settings.qp is not None else settings.crf
    return LayeredCodec(ModelLayers(loaded, lmbda_at(loaded.lmbda, qp)), settings, audio)
