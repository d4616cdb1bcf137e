"""Frames in and out of files: any FFmpeg-readable video or an image in, y4m / PNG / MP4 out.

Frames cross this module as RGB ``uint8`` arrays ``[H, W, 3]``.

Output formats and their loss:

* a folder of PNGs: lossless RGB;
* ``.y4m``: 4:4:4, 16 bit, full range, BT.709 (``C444p16 XCOLORRANGE=FULL``); 16-bit
  code values carry 8-bit RGB exactly, so reading the file back with
  :class:`VideoReader` returns the very same RGB: no further loss;
* ``.mp4``: H.264 at CRF 12 for viewing; lossy.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from dualcodec.header import METADATA_KEY
from dualcodec.errors import DualcodecError
from dualcodec.outputs import STDIO
from dualcodec.yuv import YUVFormat, rgb_to_ycbcr, ycbcr_to_rgb

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
RAW_FORMATS = {".264": "h264", ".h264": "h264", ".avc": "h264", ".265": "hevc", ".h265": "hevc", ".hevc": "hevc"}
Y4M_FORMAT = YUVFormat(bit_depth=16, full_range=True)
DEFAULT_RATE = Fraction(25)


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    rate: Fraction
    frames: int | None  # the stream's count, else estimated from the duration (None: neither known)
    has_audio: bool


def _av_error(path: Path, exc: Exception) -> DualcodecError:
    reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return DualcodecError(f"cannot read {path}: {reason}")


class VideoReader:
    """Iterate the frames of a video or image file as RGB uint8 ``[H, W, 3]``.

    ``-`` reads a y4m stream from standard input (``ffmpeg ... -f yuv4mpegpipe -``); its
    frames can be iterated once.
    """

    def __init__(self, path: Path) -> None:
        import av

        self.from_stdin = str(path) == STDIO
        self._stdin = None  # standard input's open container, until frames() takes it
        if self.from_stdin:
            self._open_stdin()
            return
        self.path = Path(path)
        if not self.path.exists():
            raise DualcodecError(f"input not found: {self.path}")
        if self.path.is_dir():
            raise DualcodecError(f"input is a folder, not a file: {self.path}")
        self.is_image = self.path.suffix.lower() in IMAGE_SUFFIXES
        if self.is_image:
            first = self._read_image()
            self.info = VideoInfo(first.shape[1], first.shape[0], DEFAULT_RATE, 1, False)
            return
        try:
            with av.open(str(self.path), format=RAW_FORMATS.get(self.path.suffix.lower())) as inp:
                if not inp.streams.video:
                    raise DualcodecError(f"{self.path} has no video stream")
                if METADATA_KEY in inp.metadata:
                    raise DualcodecError(f"{self.path} is a dualcodec file, whose video track is only its "
                                         f"low-resolution base layer: decode it first (dualcodec decode "
                                         f"{self.path} -o frames.y4m)")
                stream = inp.streams.video[0]
                rate = Fraction(stream.average_rate or stream.guessed_rate or DEFAULT_RATE)
                width, height = stream.codec_context.width, stream.codec_context.height
                self.info = VideoInfo(width, height, rate, stream.frames or _estimated_frames(inp, rate),
                                      bool(inp.streams.audio))
        except av.FFmpegError as exc:
            raise _av_error(self.path, exc) from None
        except UnicodeDecodeError:  # PyAV reads every metadata tag as UTF-8
            raise DualcodecError(f"cannot read {self.path}: its metadata is damaged (not UTF-8 text)") from None
        if self.info.width <= 0 or self.info.height <= 0:
            raise DualcodecError(f"cannot read {self.path}: no frame size")

    def _open_stdin(self) -> None:
        import av

        self.path, self.is_image = Path(STDIO), False
        try:
            self._stdin = av.open(sys.stdin.buffer, format="yuv4mpegpipe")
        except av.FFmpegError as exc:
            raise DualcodecError(f"cannot read standard input as y4m: {exc.strerror or exc}") from None
        stream = self._stdin.streams.video[0]
        rate = Fraction(stream.average_rate or stream.guessed_rate or DEFAULT_RATE)
        self.info = VideoInfo(stream.codec_context.width, stream.codec_context.height, rate, None, False)

    def _read_image(self) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.path) as im:
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: convert("RGB") would clip it
                    grey = np.asarray(im, dtype=np.float64)
                    top = 65535.0 if im.mode.startswith("I;16") or grey.max() > 255 else 255.0
                    grey = np.clip(np.round(grey * 255.0 / top), 0, 255).astype(np.uint8)
                    return np.repeat(grey[..., None], 3, axis=-1)
                return np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise DualcodecError(f"cannot read image {self.path}: {exc.__class__.__name__}") from None

    def frames(self) -> Iterator[np.ndarray]:
        import av

        if self.is_image:
            yield self._read_image()
            return
        if self.from_stdin and self._stdin is None:
            raise DualcodecError("standard input can be read only once")
        count = 0
        try:
            if self.from_stdin:
                opened, self._stdin = self._stdin, None
            else:
                opened = av.open(str(self.path), format=RAW_FORMATS.get(self.path.suffix.lower()))
            with opened as inp:
                for frame in inp.decode(inp.streams.video[0]):
                    count += 1
                    yield _frame_to_rgb(frame)
        except av.FFmpegError as exc:
            raise _av_error(self.path, exc) from None
        if count == 0:
            raise DualcodecError(f"cannot read {self.path}: no decodable video frame")


def _estimated_frames(inp, rate: Fraction) -> int | None:
    """Frames from the container's duration, for inputs whose stream has no count (y4m,
    mkv, webm, avi, raw): a progress bar's total, not a promise."""
    if not inp.duration:
        return None
    return max(1, round(inp.duration / 1_000_000 * rate))  # duration in AV_TIME_BASE units


def check_inputs(paths: Sequence[Path]) -> None:
    """Open every input (its container header, or the image) before the first is decoded,
    so that a command over many inputs fails at once, naming the bad one."""
    for path in paths:
        VideoReader(Path(path))


def _frame_to_rgb(frame) -> np.ndarray:
    if frame.format.name == "yuv444p16le" and frame.color_range == 2:
        # Our own lossless y4m: invert it with the conversion that wrote it.
        # Read the planes directly: the array layout of to_ndarray() for this format
        # depends on the PyAV version (PyAV 18 returns [H, W, 3]).
        w, h = frame.width, frame.height
        planes = np.stack([
            np.frombuffer(p, dtype="<u2").reshape(h, p.line_size // 2)[:, :w] for p in frame.planes[:3]
        ]).astype(np.float32)  # [3, H, W]
        rgb = ycbcr_to_rgb(torch.from_numpy(planes).unsqueeze(0), Y4M_FORMAT)[0]
        return (rgb * 255.0).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return frame.to_ndarray(format="rgb24")


class Y4MWriter:
    """4:4:4 16-bit full-range BT.709 y4m (lossless for 8-bit RGB), to a file or, for
    ``-``, to standard output (left open)."""

    def __init__(self, path: Path | str, width: int, height: int, rate: Fraction) -> None:
        rate = Fraction(rate)
        self._owned = str(path) != STDIO
        self.file = open(path, "wb") if self._owned else sys.stdout.buffer
        self.file.write(
            f"YUV4MPEG2 W{width} H{height} F{rate.numerator}:{rate.denominator} Ip A1:1 C444p16 XCOLORRANGE=FULL\n".encode()
        )

    def write(self, rgb: np.ndarray) -> None:
        x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        planes = rgb_to_ycbcr(x, Y4M_FORMAT)[0].round().clamp(0, Y4M_FORMAT.max_code)
        self.file.write(b"FRAME\n")
        self.file.write(planes.numpy().astype("<u2").tobytes())

    def close(self) -> None:
        if self._owned:
            self.file.close()
        else:
            self.file.flush()


class PngDirWriter:
    """``frame_000001.png``, ``frame_000002.png``, ... in a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.index = 0

    def write(self, rgb: np.ndarray) -> None:
        from PIL import Image

        self.index += 1
        Image.fromarray(rgb).save(self.folder / f"frame_{self.index:06d}.png", compress_level=1)

    def close(self) -> None:
        pass


class Mp4Writer:
    """H.264 CRF 12 MP4 for viewing a decoded video (lossy), with the audio of ``audio_from``
    (the decoded file) copied."""

    def __init__(self, path: Path, width: int, height: int, rate: Fraction, audio_from: Path | None = None) -> None:
        import av

        from dualcodec.audio import AudioTracks
        from dualcodec.basecodec import BaseCodecSettings, BaseEncoder

        self.settings = BaseCodecSettings(codec="h264", qp=None, crf=12, gop=250)
        self.output = av.open(str(path), "w", format="mp4")
        self.stream = self.output.add_stream("libx264", rate=Fraction(rate))
        self.audio = AudioTracks(self.output, audio_from, "copy") if audio_from is not None else None
        self.pad_w, self.pad_h = width + width % 2, height + height % 2
        self.encoder = BaseEncoder(self.settings, self.pad_w, self.pad_h, rate, self.stream.codec_context)

    def write(self, rgb: np.ndarray | None) -> None:
        from dualcodec.basecodec import planes_from_tensors
        from dualcodec.yuv import rgb_to_yuv420

        if rgb is None:
            packets = self.encoder.encode(None)
        else:
            h, w = rgb.shape[:2]
            rgb = np.pad(rgb, ((0, self.pad_h - h), (0, self.pad_w - w), (0, 0)), mode="edge")
            x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() / 255.0
            fmt = self.settings.yuv_format
            packets = self.encoder.encode(planes_from_tensors(*rgb_to_yuv420(x, fmt), fmt)[0])
        for packet in packets:
            packet.stream = self.stream
            self.output.mux(packet)

    def close(self) -> None:
        self.write(None)
        if self.audio is not None:
            self.audio.write()
        self.output.close()


def open_writer(kind: str, path: Path, width: int, height: int, rate: Fraction, audio_from: Path | None = None):
    """The writer for an :func:`output_kind`: ``"y4m"``, ``"mp4"`` (with the audio of
    ``audio_from``) or ``"dir"`` (PNG frames)."""
    if kind == "y4m":
        return Y4MWriter(path, width, height, rate)
    if kind == "mp4":
        return Mp4Writer(path, width, height, rate, audio_from)
    return PngDirWriter(path)


def output_kind(path: str) -> str:
    """``"y4m"``, ``"mp4"`` or ``"dir"`` (PNG frames) for a decode output name; ``-`` is
    y4m on standard output."""
    if path == STDIO:
        return "y4m"
    suffix = Path(path).suffix.lower()
    if suffix in (".y4m", ".mp4"):
        return suffix[1:]
    if path.endswith(("/", os.sep)) or Path(path).is_dir() or suffix == "":
        return "dir"
    raise DualcodecError(f"unsupported output {path!r}: use .y4m, .mp4 or a folder ending in /")
