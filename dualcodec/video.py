"""Frames in and out of files: any FFmpeg-readable video or image in, y4m / PNG / MP4 out.

Frames cross this module as :class:`~dualcodec.basecodec.Planes`: Y'CbCr 4:2:0 code
values at 8 or 10 bits, in the format of :attr:`VideoInfo.format` (bit depth, range,
matrix: :class:`~dualcodec.yuv.YUVFormat`).

Reading (:class:`VideoReader`, everything through PyAV):

* 4:2:0 video at 8 or 10 bits (``yuv420p``, ``yuvj420p``, ``yuv420p10le``) is taken as
  it is: its planes, range and matrix (an unflagged matrix follows players' size rule,
  :func:`dualcodec.yuv.matrix_for`);
* anything else (4:2:2, 4:4:4, RGB, grey, images) is converted once by FFmpeg's swscale
  as PyAV's ``reformat`` does by default (bilinear chroma filter), to 4:2:0 at 8 bits
  (10 bits for deeper sources): YUV keeps its matrix and range; RGB, grey and images
  become BT.601 in the range their decoder flags (full for PNG and JPEG, limited when
  unflagged), as ``ffmpeg -pix_fmt yuv420p`` converts them.

Writing (:func:`open_writer`):

* ``.y4m`` (and ``-``, standard output): the planes as they are, through FFmpeg's
  ``yuv4mpegpipe`` muxer: ``C420jpeg`` at 8 bits, ``C420p10`` at 10, with
  ``XCOLORRANGE``; no further loss. ``pix_fmt="yuv444p16le"`` asks for 16-bit 4:4:4
  instead (chroma upsampled by swscale);
* a folder of PNGs: R'G'B' 8 bits, converted with the format's matrix and range (lossy
  at the rounding to 8-bit RGB);
* ``.mp4``: H.264 at CRF 12 on the same planes, for viewing; lossy.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dualcodec.basecodec import Planes, VideoSignal, colour_of, frame_from_planes, planes_from_frame, square_or
from dualcodec.container import (Orientation, Tags, display_orientation, played_seconds, rate_varies,
                                 ticks_per_frame, video_stream)
from dualcodec.errors import DualcodecError, StartPastEnd
from dualcodec.header import METADATA_KEY
from dualcodec.outputs import STDIO
from dualcodec.yuv import BT601, YUVFormat, matrix_for

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
RAW_FORMATS = {".264": "h264", ".h264": "h264", ".avc": "h264", ".265": "hevc", ".h265": "hevc", ".hevc": "hevc"}
DEFAULT_RATE = Fraction(25)
NATIVE = {"yuv420p": 8, "yuvj420p": 8, "yuv420p10le": 10}  # taken as they are
PIX_FMTS = {8: "yuv420p", 10: "yuv420p10le"}
RANGE_PC = 2  # AVCOL_RANGE_JPEG
# swscale with PyAV's default (automatic) threading is not deterministic: now and then a
# slice of a yuv420p to yuv444p16le conversion comes out wrong (whole rows of luma at
# 128 << 8). Every conversion here runs on one thread.
SWS_THREADS = 1


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    rate: Fraction
    frames: int | None  # the stream's count, else estimated from the duration (None: neither known)
    has_audio: bool
    format: YUVFormat  # of the planes the reader yields
    source_pix_fmt: str  # the stream's own pixel format
    orientation: Orientation = Orientation()  # how players turn the frames to show them (they are as stored)
    # The stream's time base when its frames do not come at a constant rate (a phone's
    # video: its average rate is not its base rate); the frames then carry their times.
    time_base: Fraction | None = None
    tags: Tags = Tags()  # what an encode carries over: creation time, title, language
    signal: VideoSignal = VideoSignal()  # its colour primaries, transfer and sample aspect ratio (RGB: none)

    def span(self, start: int = 0, max_frames: int | None = None) -> int | None:
        """How many frames a coding from frame ``start`` (at most ``max_frames``) will read, as
        the source announces its length (``None``: neither says)."""
        known = [n for n in (self.frames and max(1, self.frames - start), max_frames) if n]
        return min(known) if known else None

    @property
    def converted(self) -> bool:
        """Whether the reader converts the source's pixels (not 4:2:0 at 8 or 10 bits, or read
        at another bit depth)."""
        return NATIVE.get(self.source_pix_fmt) != self.format.bit_depth


def is_yuv(pix_fmt: str) -> bool:
    """Whether FFmpeg's ``pix_fmt`` (a known one) holds YUV pictures, not RGB, palette or grey."""
    import av

    desc = av.VideoFormat(pix_fmt)
    return not (desc.is_rgb or len(desc.components) < 3 or pix_fmt.startswith(("pal", "gray", "ya")))


def plane_format(pix_fmt: str, colorspace: int | None, color_range: int | None, width: int,
                 height: int) -> YUVFormat:
    """The 4:2:0 format that a source of ``pix_fmt`` is read into (see the module docstring)."""
    import av

    try:
        desc = av.VideoFormat(pix_fmt)
    except (ValueError, av.FFmpegError):
        raise DualcodecError(f"unknown pixel format {pix_fmt!r}") from None
    depth = NATIVE.get(pix_fmt) or (8 if max(c.bits for c in desc.components) <= 8 else 10)
    if not is_yuv(pix_fmt):
        # As PyAV's reformat (and ``ffmpeg -pix_fmt yuv420p``, and ../shared/tools/anchors.py)
        # converts them: BT.601 at any size, and the range FFmpeg's decoder flags (full for
        # PNG and other images; limited when unflagged).
        return YUVFormat(bit_depth=depth, full_range=color_range == RANGE_PC, matrix=BT601)
    full = color_range == RANGE_PC or pix_fmt.startswith("yuvj")
    return YUVFormat(bit_depth=depth, full_range=full, matrix=matrix_for(colorspace, width, height))


def frame_to_planes(frame, fmt: YUVFormat) -> Planes:
    """A decoded source frame as planes of ``fmt``: as they are for native 4:2:0, else
    converted once by swscale."""
    if frame.format.name not in NATIVE or NATIVE[frame.format.name] != fmt.bit_depth:
        # The range is named: PyAV's output frame otherwise inherits the source's flag.
        frame = frame.reformat(format=PIX_FMTS[fmt.bit_depth], dst_colorspace=fmt.matrix,
                               dst_color_range=_range(fmt), threads=SWS_THREADS)
    planes = planes_from_frame(frame)
    return Planes(planes.y, planes.u, planes.v)


def _av_error(path: Path, exc: Exception) -> DualcodecError:
    reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return DualcodecError(f"cannot read {path}: {reason}")


def _range(fmt: YUVFormat) -> int:
    return RANGE_PC if fmt.full_range else 1  # AVCOL_RANGE_JPEG or _MPEG


class VideoReader:
    """Iterate the frames of a video or image file as :class:`Planes` (see the module docstring).

    ``-`` reads a y4m stream from standard input (``ffmpeg ... -f yuv4mpegpipe -``); its
    frames can be iterated once.
    """

    def __init__(self, path: Path, rate: Fraction | None = None, bit_depth: int | None = None) -> None:
        """``rate``: the frame rate of a folder of frames (default 25, as FFmpeg reads an
        image sequence); a video keeps its own. ``bit_depth``: read the frames at 8 or 10
        bits whatever the source's (:func:`at_depth`; ``None``: the source's)."""
        self._open_source(path, rate)
        self.source_format = self.info.format  # what the frames are read as, before ``bit_depth``
        if bit_depth is not None and bit_depth != self.info.format.bit_depth:
            if bit_depth not in (8, 10):
                raise DualcodecError(f"frames are coded at 8 or 10 bits, not {bit_depth}")
            self.info = replace(self.info, format=replace(self.info.format, bit_depth=bit_depth))

    def _open_source(self, path: Path, rate: Fraction | None) -> None:
        import av

        self.files: list[Path] | None = None  # a folder's frames, in order
        self.from_stdin = str(path) == STDIO
        self._stdin = None  # standard input's open container, until frames() takes it
        if self.from_stdin:
            self.path = Path(STDIO)
            try:
                self._stdin = av.open(sys.stdin.buffer, format="yuv4mpegpipe")
            except av.FFmpegError as exc:
                raise DualcodecError(f"standard input is not y4m ({exc.strerror or exc}): pipe y4m in, as "
                                     "ffmpeg -i IN -f yuv4mpegpipe - | dualcodec encode - -o OUT.mp4 does") from None
            self.info = self._info(self._stdin, frames=None)
            return
        self.path = Path(path)
        if not self.path.exists() and is_pattern(str(self.path)):
            self._open_frames(numbered_files(str(self.path)), Fraction(rate or DEFAULT_RATE))
            return
        if not self.path.exists():
            raise DualcodecError(f"input not found: {self.path}")
        if self.path.is_dir():
            files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_order)
            if not files:
                raise DualcodecError(f"{self.path} is a folder without frames (PNG, JPEG, BMP, TIFF or WebP files)")
            self._open_frames(files, Fraction(rate or DEFAULT_RATE))
            return
        if self.path.stat().st_size == 0:
            raise DualcodecError(f"cannot read {self.path}: the file is empty")
        self.is_image = self.path.suffix.lower() in IMAGE_SUFFIXES
        try:
            with self._open() as inp:
                if not inp.streams.video:
                    raise DualcodecError(f"{self.path} has no video stream")
                if METADATA_KEY in inp.metadata:
                    raise DualcodecError(f"{self.path} is a dualcodec file, whose video track is only its "
                                         f"low-resolution base layer: decode it first (dualcodec decode "
                                         f"{self.path} -o frames.y4m)")
                self.info = replace(self._info(inp, frames=1 if self.is_image else None),
                                    orientation=self._exif_orientation() if self.is_image else display_orientation(inp))
        except av.FFmpegError as exc:
            raise _av_error(self.path, exc) from None
        except UnicodeDecodeError:  # PyAV reads every metadata tag as UTF-8
            raise DualcodecError(f"cannot read {self.path}: its metadata is damaged (not UTF-8 text)") from None

    def _open_frames(self, files: list[Path], rate: Fraction) -> None:
        """Images as frames: a folder's (what ``decode -o FOLDER/`` writes) in natural order
        (``f2`` before ``f10``), or a numbered sequence's (:func:`numbered_files`), each read
        as the first one is, at ``rate``."""
        self.files = files
        first = VideoReader(self.files[0])
        self.is_image = False
        self.info = replace(first.info, frames=len(self.files), rate=rate, has_audio=False)

    def _folder_frames(self, start: int) -> Iterator[Planes]:
        if start >= len(self.files):
            raise StartPastEnd(self.path, len(self.files), start)
        for file in self.files[start:]:
            image = VideoReader(file)
            if image.info.format != self.source_format:
                raise DualcodecError(f"{file} is not stored as {self.files[0].name} is ({image.info.source_pix_fmt} "
                                     f"against {self.info.source_pix_fmt}): a sequence's frames must be alike")
            yield next(image.frames())

    def _exif_orientation(self) -> Orientation:
        """An image's EXIF orientation, read by PIL: FFmpeg 8 hands it on with side data
        that PyAV cannot enumerate, which leaves a mirror unread."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.path) as image:
                return Orientation.from_exif(image.getexif().get(0x0112))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return Orientation()  # an image PIL does not read: as stored

    def _open(self):
        import av

        suffix = self.path.suffix.lower()
        fmt = "image2" if self.is_image else RAW_FORMATS.get(suffix)
        return av.open(str(self.path), format=fmt)

    def _info(self, inp, frames: int | None) -> VideoInfo:
        stream = video_stream(inp)
        cc = stream.codec_context
        width, height = cc.width, cc.height
        if width <= 0 or height <= 0:
            raise DualcodecError(f"cannot read {self.path}: no frame size")
        rate = DEFAULT_RATE if self.is_image else Fraction(stream.average_rate or stream.guessed_rate or DEFAULT_RATE)
        if frames is None and not self.from_stdin:
            frames = stream.frames or _estimated_frames(inp, rate)
        pix_fmt = cc.pix_fmt or "yuv420p"  # unknown until decoded (a damaged stream): the frames will tell
        fmt = plane_format(pix_fmt, cc.colorspace, cc.color_range, width, height)
        timed = (not self.is_image and self.path.suffix.lower() not in RAW_FORMATS  # raw streams have no times
                 and rate_varies(stream))
        yuv = not self.is_image and is_yuv(pix_fmt)
        return VideoInfo(width, height, rate, frames, bool(inp.streams.audio), fmt, pix_fmt,
                         time_base=Fraction(stream.time_base) if timed else None, tags=Tags.of(inp),
                         signal=VideoSignal(colour_of(fmt.matrix, cc.color_primaries, cc.color_trc) if yuv else None,
                                            square_or(stream.sample_aspect_ratio)))

    is_image = False

    def frames(self, start: int = 0) -> Iterator[Planes]:
        """The frames from frame ``start`` on (0-based; the ones before it are decoded and
        dropped, which is exact in every container), each with its :attr:`Planes.time`
        from the source's first frame where the source stamps it, at the reader's bit depth."""
        depth = self.info.format.bit_depth
        for planes in self._source_frames(start):
            yield at_depth(planes, self.source_format.bit_depth, depth)

    def _source_frames(self, start: int) -> Iterator[Planes]:
        import av

        if self.files is not None:
            yield from self._folder_frames(start)
            return
        if self.from_stdin and self._stdin is None:
            raise DualcodecError("standard input can be read only once")
        count = 0
        try:
            if self.from_stdin:
                opened, self._stdin = self._stdin, None
            else:
                opened = self._open()
            with opened as inp:
                first = None  # the first frame's time stamp
                for frame in inp.decode(video_stream(inp)):
                    count += 1
                    if frame.pts is not None and frame.time_base is not None:
                        first = frame.pts if first is None else first
                    if count <= start:
                        continue
                    planes = frame_to_planes(frame, self.source_format)
                    if first is not None and frame.pts is not None:
                        planes.time = (frame.pts - first) * frame.time_base
                    yield planes
                    if self.is_image:
                        break
        except av.FFmpegError as exc:
            raise _av_error(self.path, exc) from None
        if count == 0:
            raise DualcodecError(f"cannot read {self.path}: no decodable video frame")
        if count <= start:
            raise StartPastEnd(self.path, count, start)


def at_depth(planes: Planes, depth: int, target: int) -> Planes:
    """``planes`` of ``depth`` bits at ``target`` bits: 8 to 10 exactly (code ``c`` is ``4 c``,
    the same level in either range), 10 to 8 rounded (``(c + 2) >> 2``, at most 255; no
    dither, which would cost PSNR); the same planes when the depths agree."""
    if depth == target:
        return planes
    if target > depth:
        moved = [p.astype(np.uint16) << (target - depth) for p in (planes.y, planes.u, planes.v)]
    else:
        shift = depth - target
        top = (1 << target) - 1
        moved = [np.minimum((p.astype(np.uint32) + (1 << (shift - 1))) >> shift, top).astype(np.uint8)
                 for p in (planes.y, planes.u, planes.v)]
    return replace(planes, y=moved[0], u=moved[1], v=moved[2])


# printf's %d, %4d or %04d, which FFmpeg's image2 numbers images by, or a literal %%
NUMBERING = re.compile(r"%%|%(0?[1-9][0-9]*)?d")


def is_pattern(name: str) -> bool:
    """Whether ``name`` numbers a sequence of images as FFmpeg's image2 does (``frame_%04d.png``)."""
    return sum(m.group(0) != "%%" for m in NUMBERING.finditer(name)) == 1


def numbered_files(pattern: str) -> list[Path]:
    """The images a pattern such as ``frame_%04d.png`` names, as ``ffmpeg -i`` reads it: from
    the first number of 0 to 4 that exists, up to the first number missing after it."""
    def name(number: int) -> Path:
        return Path(NUMBERING.sub(lambda m: "%" if m.group(0) == "%%" else f"%{m.group(1) or ''}d" % number,
                                  pattern))

    first = next((n for n in range(5) if name(n).is_file()), None)
    if first is None:
        raise DualcodecError(f"input not found: no file numbered 0 to 4 matches {pattern}")
    files = []
    while name(first + len(files)).is_file():
        files.append(name(first + len(files)))
    return files


def _natural_order(path: Path) -> list:
    """A file name's sort key with its runs of digits as numbers: ``f2`` before ``f10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _estimated_frames(inp, rate: Fraction) -> int | None:
    """Frames from the container's duration, for inputs whose stream has no count (y4m,
    mkv, webm, avi, raw): a progress bar's total, not a promise."""
    if not inp.duration:
        return None
    return max(1, round(inp.duration / 1_000_000 * rate))  # duration in AV_TIME_BASE units


def check_inputs(paths: Sequence[Path]) -> set[int]:
    """Open every input (its container header, or the image) before the first is decoded,
    so that a command over many inputs fails at once, naming the bad one; the bit depths
    they read at."""
    return {VideoReader(Path(path)).info.format.bit_depth for path in paths}


class Y4MWriter:
    """y4m through FFmpeg's ``yuv4mpegpipe`` muxer, to a file or, for ``-``, to standard
    output (left open): the planes in ``fmt``, or converted to ``pix_fmt``."""

    def __init__(self, path: Path | str, width: int, height: int, rate: Fraction, fmt: YUVFormat,
                 pix_fmt: str | None = None) -> None:
        import av

        self._owned = str(path) != STDIO
        self.file = open(path, "wb") if self._owned else sys.stdout.buffer
        self.fmt, self.pix_fmt = fmt, pix_fmt or PIX_FMTS[fmt.bit_depth]
        # strict -1: FFmpeg calls the 10- and 16-bit layouts non-standard y4m; ffmpeg and VMAF read them.
        self.output = av.open(self.file, "w", format="yuv4mpegpipe", options={"strict": "-1"})
        self.stream = self.output.add_stream("rawvideo", rate=Fraction(rate))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, self.pix_fmt
        self.stream.codec_context.color_range = _range(fmt)
        self.stream.codec_context.colorspace = fmt.matrix
        self.index = 0

    def write(self, planes: Planes) -> None:
        frame = _frame_of(planes, self.fmt, self.pix_fmt)
        frame.pts = self.index
        self.index += 1
        for packet in self.stream.encode(frame):
            self.output.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.output.mux(packet)
        self.output.close()
        if self._owned:
            self.file.close()
        else:
            self.file.flush()


def _frame_of(planes: Planes, fmt: YUVFormat, pix_fmt: str):
    """A PyAV frame of the planes in ``pix_fmt``: 4:2:0 at either depth by :func:`at_depth`
    (swscale dithers 10 bits down to 8, which would cost a measurement on the file PSNR),
    anything else by swscale."""
    if pix_fmt in PIX_FMTS.values():  # yuv420p, yuv420p10le
        return frame_from_planes(at_depth(planes, fmt.bit_depth, NATIVE[pix_fmt]), pix_fmt)
    return frame_from_planes(planes, PIX_FMTS[fmt.bit_depth]).reformat(
        format=pix_fmt, src_colorspace=fmt.matrix, dst_colorspace=fmt.matrix, src_color_range=_range(fmt),
        dst_color_range=_range(fmt), threads=SWS_THREADS)


def planes_to_rgb(planes: Planes, fmt: YUVFormat) -> np.ndarray:
    """8-bit R'G'B' ``[H, W, 3]`` of a frame, with its format's matrix and range (swscale)."""
    return _frame_of(planes, fmt, PIX_FMTS[fmt.bit_depth]).to_ndarray(
        format="rgb24", src_colorspace=fmt.matrix, src_color_range=_range(fmt), threads=SWS_THREADS)


class PngDirWriter:
    """``frame_000001.png``, ``frame_000002.png``, ... in a folder (8-bit R'G'B')."""

    def __init__(self, folder: Path, fmt: YUVFormat) -> None:
        self.folder = Path(folder)
        self.fmt = fmt
        self.index = 0

    def write(self, planes: Planes) -> None:
        self.index += 1
        save_png(planes, self.fmt, self.folder / f"frame_{self.index:06d}.png")

    def close(self) -> None:
        pass


class PngWriter:
    """One picture, ``path`` (8-bit R'G'B', as :class:`PngDirWriter`'s frames): the
    decode of an encoded image, or one frame of a video."""

    def __init__(self, path: Path, fmt: YUVFormat) -> None:
        self.path, self.fmt, self.written = Path(path), fmt, False

    def write(self, planes: Planes) -> None:
        if self.written:
            raise DualcodecError("a PNG output holds one picture: decode one frame (--frames 1) or into a folder")
        save_png(planes, self.fmt, self.path)
        self.written = True

    def close(self) -> None:
        pass


def save_png(planes: Planes, fmt: YUVFormat, path: Path) -> None:
    """The planes of ``fmt`` as an 8-bit R'G'B' PNG at ``path`` (whatever its name says)."""
    from PIL import Image

    Image.fromarray(planes_to_rgb(planes, fmt)).save(path, format="PNG", compress_level=1)


class Mp4Writer:
    """H.264 CRF 12 MP4 of the planes for viewing a decoded video (lossy), with the tags of
    ``audio_from`` (the decoded file) and its audio copied from ``audio_start`` seconds
    after its first frame (a seek's first frame) to its end, or with ``cut_audio`` to the end
    of the last frame written (a decode stopped early), the display ``orientation`` and the
    ``signal`` (colour, aspect) flagged; frame ``i`` shown
    at ``times[i]`` in units of ``time_base`` when given (frames that do not come at a
    constant rate), else at ``i / rate``."""

    def __init__(self, path: Path, width: int, height: int, rate: Fraction, fmt: YUVFormat,
                 audio_from: Path | None = None, orientation: Orientation = Orientation(),
                 time_base: Fraction | None = None, times: list[int] | None = None,
                 audio_start: Fraction = Fraction(0), signal: VideoSignal = VideoSignal(),
                 cut_audio: bool = False) -> None:
        import av

        from dualcodec.audio import AudioTracks
        from dualcodec.basecodec import BaseCodecSettings, BaseEncoder

        self.settings = BaseCodecSettings(codec="h264", qp=None, crf=12, gop=250, bit_depth=fmt.bit_depth,
                                          full_range=fmt.full_range, matrix=fmt.matrix, signal=signal)
        self.output = av.open(str(path), "w", format="mp4")
        self.stream = self.output.add_stream("libx264", rate=Fraction(rate))
        orientation.flag(self.stream)
        self.audio = None
        if audio_from is not None:
            with av.open(str(audio_from)) as inp:
                tags = Tags.of(inp)
            tags.put(self.output, self.stream)
            self.audio = AudioTracks(self.output, audio_from, "copy", tags.audio_languages)
        self.audio_start = audio_start
        self.rate, self.time_base, self.cut_audio = rate, time_base, cut_audio
        self.pad_w, self.pad_h = width + width % 2, height + height % 2
        self.times = list(times) if times else None  # the encoder's stamps, a frame's more where they run out
        self.ticks_per_frame = ticks_per_frame(rate, time_base) if times else 1
        self.frames = 0
        self.encoder = BaseEncoder(self.settings, self.pad_w, self.pad_h, rate, self.stream.codec_context,
                                   time_base if times else None, self.times)

    def write(self, planes: Planes | None) -> None:
        if planes is None:
            packets = self.encoder.encode(None)
        else:
            if self.times is not None and len(self.times) <= self.frames:  # more frames than stamps
                self.times.append(self.times[-1] + self.ticks_per_frame)
            packets = self.encoder.encode(pad_planes(planes, self.pad_w, self.pad_h))
            self.frames += 1
        for packet in packets:
            packet.stream = self.stream
            self.output.mux(packet)

    def close(self) -> None:
        self.write(None)
        if self.audio is not None:
            end = float(played_seconds(self.frames, self.rate, self.time_base, self.times)) if self.cut_audio else None
            self.audio.write(end, self.audio_start)
        self.output.close()


def pad_planes(planes: Planes, width: int, height: int) -> Planes:
    """Edge-pad a frame to ``width x height`` (even), chroma to half of each."""
    def pad(a: np.ndarray, h: int, w: int) -> np.ndarray:
        return np.pad(a, ((0, h - a.shape[0]), (0, w - a.shape[1])), mode="edge")

    return Planes(pad(planes.y, height, width), pad(planes.u, height // 2, width // 2),
                  pad(planes.v, height // 2, width // 2))


def crop_planes(planes: Planes, width: int, height: int) -> Planes:
    """The top-left ``width x height`` of a frame, chroma ``ceil`` of half of each."""
    cw, ch = -(-width // 2), -(-height // 2)
    return Planes(planes.y[:height, :width], planes.u[:ch, :cw], planes.v[:ch, :cw],
                  corrupt=planes.corrupt, key_frame=planes.key_frame)


def open_writer(kind: str, path: Path, width: int, height: int, rate: Fraction, fmt: YUVFormat,
                audio_from: Path | None = None, pix_fmt: str | None = None,
                orientation: Orientation = Orientation(), time_base: Fraction | None = None,
                times: list[int] | None = None, audio_start: Fraction = Fraction(0),
                signal: VideoSignal = VideoSignal(), cut_audio: bool = False):
    """The writer for an :func:`output_kind`: ``"y4m"`` (in ``pix_fmt``, default the
    frames' own), ``"mp4"`` (with the audio of ``audio_from`` from ``audio_start``, the
    display ``orientation``, the ``signal`` flags and the frames' ``times``; ``cut_audio``:
    see :class:`Mp4Writer`) or ``"dir"``
    (PNG frames) or ``"png"`` (one picture). Only MP4 can flag an orientation, a transfer
    or vary the rate: the others get the frames as stored, one after another."""
    if kind == "png":
        return PngWriter(path, fmt)
    if kind == "y4m":
        return Y4MWriter(path, width, height, rate, fmt, pix_fmt)
    if kind == "mp4":
        return Mp4Writer(path, width, height, rate, fmt, audio_from, orientation, time_base, times, audio_start,
                         signal, cut_audio)
    return PngDirWriter(path, fmt)


def output_kind(path: str) -> str:
    """``"y4m"``, ``"mp4"``, ``"png"`` (one picture) or ``"dir"`` (PNG frames) for a decode
    output name; ``-`` is y4m on standard output."""
    if path == STDIO:
        return "y4m"
    suffix = Path(path).suffix.lower()
    if suffix in (".y4m", ".mp4", ".png") and not path.endswith(("/", os.sep)):
        return suffix[1:]
    if path.endswith(("/", os.sep)) or Path(path).is_dir() or suffix == "":
        return "dir"
    raise DualcodecError(f"unsupported output {path!r}: use .y4m, .mp4, .png (one picture) or a folder ending in /")
