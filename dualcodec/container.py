"""The dualcodec file: a standard MP4 that any player opens.

Layout (format version 2)
-------------------------
An ISO-BMFF (MP4) file written by FFmpeg's mov muxer through PyAV:

* Stream 0, **video**: the base layer, an ordinary H.264 / HEVC / AV1 track at the
  low resolution (``base_width`` x ``base_height``), 4:2:0, BT.709 primaries, transfer
  and matrix, with the range flag set (``tv`` or ``pc``). A legacy player shows it.
* A **data** stream exactly when the model has a side stream (``mode`` ``"dual"``): the
  side stream, codec tag ``bin_data``, one packet per video frame with the same
  presentation time stamp; a ``dual`` file without one (a model without a side stream)
  upsamples the base layer alone. Each packet is::

      offset  size  field
      0       4     CRC-32 (IEEE, big-endian) of bytes 4..end
      4       1     side mode: 0 = NEW, latents follow;
                               1 = REPEAT, reuse the previous frame's latents (no more bytes);
                               2 = SKIP, every latent at its most probable value (the
                                   entropy model's per-channel median; no more bytes)
      5       n     (NEW only) entropy-coded latents: CompressAI EntropyBottleneck
                    range-coder string for one frame, latent shape
                    [M, ceil(bh/8), ceil(bw/8)] (M and the coding tables come from
                    the model file)

  The encoder picks the mode per frame by rate-distortion cost, so a static scene,
  or a frame the side stream cannot improve, pays 5 bytes for its side stream. A frame
  that the base layer codes as a key frame never has mode REPEAT, and the decoder
  forgets the previous latents there: every GOP decodes on its own.

Version 1 files (still read): the data stream was left out when the first 64 frames
were all SKIP, and REPEAT could refer across a key frame (decoded as written).

* Further **audio** streams, copied unchanged from the input, up to the end of the
  encoded video (``--frames N`` cuts the audio too).
* File-level metadata key ``dualcodec`` (an ``mdta`` tag; absent from a plain file of
  even size, see *Plain files* below): the header, compact JSON with sorted keys::

      format       "dualcodec"
      version      2 (1 is still read)
      mode         "dual" | "bicubic" | "plain"
      scale        1 (plain), 2 or 4
      width/height       size of the original frames (the decoder returns exactly this)
      base_width/height  size of the base-layer frames (even; the padded original / scale)
      codec        "h264" | "hevc" | "av1";  bit_depth 8 | 10
      color        {"matrix","primaries","transfer": "bt709", "range": "tv"|"pc",
                    "chroma": "420", "siting": "center"}
      model        {"name", "fingerprint"} for mode "dual", else null

A reader refuses a file whose ``format`` is not ``dualcodec`` or whose ``version`` it
does not know, or whose header or index is damaged. Damaged packets are concealed as a
player conceals them (see :class:`ContainerReader`), unless the reader is ``strict``. Rate accounting is exact: the base layer's bytes are the sizes of the
video packets, the side stream's are the sizes of the data packets, and everything else
(headers, indexes, audio) is the rest.

Plain files: no header
----------------------
A ``plain`` file (the base codec alone at full resolution) whose frames needed no
padding is written *without* the header (and so without ``use_metadata_tags``): the video
stream and any audio copied from the input, exactly what the codec alone gives. A reader takes any file without the header that
has a video stream for mode ``plain``, scale 1, reading from the video stream the size
(even), frame rate, codec (H.264, HEVC or AV1), bit depth (4:2:0 at 8 or 10 bit) and
range flag (``pc`` when flagged full range, else ``tv``). The matrix flag must be BT.709
or unspecified: such a file decodes with the BT.709 conversion of :mod:`dualcodec.yuv`,
the one the encoder used. A plain file of odd width or height keeps the header: it
alone records the size to crop back to (4:2:0 needs even frame sizes).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from dualcodec.basecodec import BT709, DECODERS, ENCODERS, RANGE_PC, BaseCodecSettings, BaseDecoder, Planes
from dualcodec.errors import DualcodecError
from dualcodec.outputs import refuse_stdin

FORMAT_NAME = "dualcodec"
FORMAT_VERSION = 2  # what the writer writes
READ_VERSIONS = (1, 2)  # what the reader reads
METADATA_KEY = "dualcodec"
MODES = ("dual", "bicubic", "plain")
UNSPECIFIED_MATRIX = 2  # ITU-T H.273 matrix_coefficients "unspecified"
BIT_DEPTHS = {"yuv420p": 8, "yuvj420p": 8, "yuv420p10le": 10}  # the 4:2:0 formats a plain file may have


@dataclass(frozen=True)
class Header:
    mode: str
    scale: int
    width: int
    height: int
    base_width: int
    base_height: int
    codec: str
    bit_depth: int
    full_range: bool
    model_name: str | None = None
    model_fingerprint: str | None = None
    version: int = FORMAT_VERSION  # a header read from a file: that file's version

    def to_json(self) -> str:
        tree = {
            "format": FORMAT_NAME,
            "version": self.version,
            "mode": self.mode,
            "scale": self.scale,
            "width": self.width,
            "height": self.height,
            "base_width": self.base_width,
            "base_height": self.base_height,
            "codec": self.codec,
            "bit_depth": self.bit_depth,
            "color": {
                "matrix": "bt709",
                "primaries": "bt709",
                "transfer": "bt709",
                "range": "pc" if self.full_range else "tv",
                "chroma": "420",
                "siting": "center",
            },
            "model": (
                {"name": self.model_name, "fingerprint": self.model_fingerprint}
                if self.mode == "dual"
                else None
            ),
        }
        return json.dumps(tree, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Header":
        try:
            tree = json.loads(text)
            if tree.get("format") != FORMAT_NAME:
                raise DualcodecError("the header does not name the dualcodec format")
            if tree.get("version") not in READ_VERSIONS:
                raise DualcodecError(
                    f"file format version {tree.get('version')} is not supported (this dualcodec reads "
                    f"{' and '.join(map(str, READ_VERSIONS))}): a newer dualcodec wrote it"
                )
            model = tree["model"] or {}
            header = cls(
                mode=tree["mode"],
                scale=int(tree["scale"]),
                width=int(tree["width"]),
                height=int(tree["height"]),
                base_width=int(tree["base_width"]),
                base_height=int(tree["base_height"]),
                codec=tree["codec"],
                bit_depth=int(tree["bit_depth"]),
                full_range=tree["color"]["range"] == "pc",
                model_name=model.get("name"),
                model_fingerprint=model.get("fingerprint"),
                version=int(tree["version"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DualcodecError("the dualcodec header is malformed") from None
        if header.mode not in MODES:
            raise DualcodecError(f"unknown mode {header.mode!r} in the header")
        return header

    @property
    def is_written(self) -> bool:
        """Whether the file carries this header: all but a plain file of even size, which
        is a standard MP4 whose video stream says everything the decoder needs."""
        return self.mode != "plain" or (self.width, self.height) != (self.base_width, self.base_height)

    @classmethod
    def from_video_stream(cls, path: Path, video) -> "Header":
        """The header of a file that has none: the plain codec, described by its video stream."""
        cc = video.codec_context
        codec = cc.codec.canonical_name
        if codec not in DECODERS:
            raise DualcodecError(f"{path}: {codec} video is not supported (dualcodec decodes {', '.join(DECODERS)})")
        if cc.pix_fmt not in BIT_DEPTHS:
            raise DualcodecError(f"{path}: {cc.pix_fmt} video is not supported (4:2:0 at 8 or 10 bits only)")
        if cc.colorspace not in (BT709, UNSPECIFIED_MATRIX):
            raise DualcodecError(f"{path}: the video is flagged with colour matrix {cc.colorspace} "
                                 "(ITU-T H.273); dualcodec decodes BT.709 only")
        width, height = cc.width, cc.height
        if width % 2 or height % 2:
            raise DualcodecError(f"{path}: the video is {width}x{height}; 4:2:0 needs an even width and height")
        return cls(mode="plain", scale=1, width=width, height=height, base_width=width, base_height=height,
                   codec=codec, bit_depth=BIT_DEPTHS[cc.pix_fmt],
                   full_range=cc.color_range == RANGE_PC or cc.pix_fmt == "yuvj420p")


class SideMode(IntEnum):
    """The first byte of a side-stream packet (after the CRC)."""

    NEW = 0  # entropy-coded latents follow
    REPEAT = 1  # the previous frame's latents; never at a base-layer key frame (version 2)
    SKIP = 2  # every latent at its most probable value


@dataclass(frozen=True)
class SideFrame:
    """The side stream of one frame: a mode and, for ``SideMode.NEW``, the entropy-coded latents."""

    mode: SideMode
    entropy_bytes: bytes = b""

    def to_bytes(self) -> bytes:
        return bytes([self.mode]) + self.entropy_bytes

    @classmethod
    def from_bytes(cls, body: bytes, index: int) -> "SideFrame":
        if not body or body[0] not in set(SideMode):
            raise DualcodecError(f"side stream of frame {index + 1} has an unknown mode")
        if body[0] != SideMode.NEW and len(body) != 1:
            raise DualcodecError(f"side stream of frame {index + 1} is malformed")
        if body[0] == SideMode.REPEAT and index == 0:
            raise DualcodecError("side stream of frame 1 repeats a frame that does not exist")
        return cls(SideMode(body[0]), body[1:])


def frame_payload(body: bytes) -> bytes:
    """One side-stream packet: CRC-32 then the body."""
    return zlib.crc32(body).to_bytes(4, "big") + body


def parse_payload(payload: bytes, index: int) -> bytes:
    """The entropy-coded bytes of one side-stream packet; ``index`` counts frames from 0."""
    if len(payload) < 4 or zlib.crc32(payload[4:]).to_bytes(4, "big") != payload[:4]:
        raise DualcodecError(f"side stream of frame {index + 1} is corrupted (checksum mismatch)")
    return payload[4:]


class ContainerWriter:
    """Writes one dualcodec MP4. Use :attr:`video_codec_context` for the base encoder."""

    def __init__(self, path: Path, header: Header, settings: BaseCodecSettings, rate: Fraction,
                 side_stream: bool = False) -> None:
        """``side_stream``: the file has a data track (exactly when the model has a side stream)."""
        import av

        self.header = header
        self.rate = Fraction(rate)
        self.time_base = 1 / self.rate
        if header.is_written:
            self.output = av.open(str(path), "w", format="mp4", options={"movflags": "use_metadata_tags"})
            self.output.metadata[METADATA_KEY] = header.to_json()
        else:
            self.output = av.open(str(path), "w", format="mp4")
        self.video = self.output.add_stream(ENCODERS[settings.codec], rate=self.rate)
        if settings.codec == "hevc":
            self.video.codec_tag = "hvc1"  # parameter sets in the sample entry: what Apple players require
        self.data = self.output.add_data_stream("bin_data") if side_stream else None
        self._side_index = 0
        self._audio: dict = {}

    @property
    def video_codec_context(self):
        return self.video.codec_context

    def mux_base(self, packets: list) -> None:
        for packet in packets:
            packet.stream = self.video
            self.output.mux(packet)

    def mux_side(self, side: SideFrame) -> None:
        """Side-stream packet of the next frame in display order."""
        import av

        payload = frame_payload(side.to_bytes())
        packet = av.Packet(payload)
        packet.stream = self.data
        packet.pts = packet.dts = self._side_index
        packet.time_base = self.time_base
        packet.duration = 1
        self._side_index += 1
        self.output.mux(packet)

    def add_audio_streams(self, source: Path) -> None:
        """Declare an output stream for every audio stream of ``source``.

        Call this before muxing any packet: the muxer writes the file header with the
        first packet, and a stream added after that crashes FFmpeg (SIGFPE).
        """
        import av

        with av.open(str(source)) as inp:
            self._audio = {s.index: self.output.add_stream_from_template(s) for s in inp.streams.audio}

    def copy_audio(self, source: Path, seconds: float) -> None:
        """Copy every audio stream of ``source`` unchanged (streams from :meth:`add_audio_streams`),
        up to the packet that starts at ``seconds`` from the stream's start: the duration
        of the encoded video."""
        import av

        if not self._audio:
            return
        with av.open(str(source)) as inp:
            for packet in inp.demux(*inp.streams.audio):
                if packet.dts is None:
                    continue
                start = packet.stream.start_time or 0
                if packet.pts is not None and (packet.pts - start) * packet.time_base >= seconds:
                    continue
                packet.stream = self._audio[packet.stream.index]
                self.output.mux(packet)

    def close(self) -> None:
        self.output.close()


@dataclass(frozen=True)
class StreamSizes:
    frames: int
    base_bytes: int
    side_bytes: int
    file_bytes: int

    @property
    def other_bytes(self) -> int:
        return self.file_bytes - self.base_bytes - self.side_bytes


def _open(path: Path):
    import av

    refuse_stdin([path], "an MP4 cannot be read from a pipe (its index may come last)")
    path = Path(path)
    if not path.exists():
        raise DualcodecError(f"input not found: {path}")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise DualcodecError(f"cannot open {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:  # PyAV reads every metadata tag as UTF-8 when it opens a file
        raise DualcodecError(f"cannot open {path}: its metadata is damaged (not UTF-8 text)") from None


def _check_boxes(path: Path) -> None:
    """Refuse an MP4 whose top-level boxes do not tile the file exactly. Without this, a
    truncated dualcodec file, whose header sits at the end of ``moov``, would lose the
    header and pass for a plain video."""
    size = path.stat().st_size
    pos = 0
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            box = int.from_bytes(head[:4], "big") if len(head) >= 8 else -1
            if box == 1:  # a 64-bit size follows the type
                box = int.from_bytes(head[8:16], "big") if len(head) == 16 else -1
            elif box == 0:  # the box runs to the end of the file
                box = size - pos
            if box < 8:
                break
            pos += box
    if pos != size:
        raise DualcodecError(f"{path} is truncated or damaged (its MP4 boxes do not add up to its size)")


def _repeat(last: Planes | None, size: tuple[int, int], bit_depth: int) -> Planes:
    """What stands in for a frame that did not decode: the previous one, or mid-grey."""
    import numpy as np

    if last is not None:
        return Planes(last.y, last.u, last.v, corrupt=True)
    dtype, mid = (np.uint8, 128) if bit_depth == 8 else (np.uint16, 512)
    h, w = size
    return Planes(np.full((h, w), mid, dtype), np.full((h // 2, w // 2), mid, dtype),
                  np.full((h // 2, w // 2), mid, dtype), corrupt=True)


class ContainerReader:
    """Reads a dualcodec MP4, or a plain video without the header: header, base frames and
    side payloads, each in display order.

    Damage: ``strict`` refuses a file at the first damaged base packet or side packet.
    Otherwise the reader decodes everything it can, as a player does: the base decoder
    conceals what it can and a frame it cannot decode repeats the previous one; a side
    packet that fails its checksum decodes as SKIP; the 0-based indices of such frames
    collect in :attr:`damaged` as the frames are read.
    """

    def __init__(self, path: Path, strict: bool = False) -> None:
        self.path = Path(path)
        self.strict = strict
        self.damaged: set[int] = set()
        with _open(self.path) as inp:
            text = inp.metadata.get(METADATA_KEY)
            header = Header.from_json(text) if text is not None else None
            if header is None and "mp4" in inp.format.name.split(","):
                _check_boxes(self.path)
            if not inp.streams.video:
                what = "base-layer video stream" if header else "video stream (and no dualcodec header)"
                raise DualcodecError(f"{self.path} has no {what}")
            video = inp.streams.video[0]
            if video.codec_context is None:
                raise DualcodecError(f"{self.path}: its video stream names no codec FFmpeg knows (damaged?)")
            self.has_header = header is not None
            self.header = header or Header.from_video_stream(self.path, video)
            self.rate = Fraction(video.average_rate or video.guessed_rate or 25)
            self.extradata = video.codec_context.extradata
            # Only a dual file has a side stream; a plain video's data streams (e.g. time codes) are not one.
            self.has_side_stream = self.header.mode == "dual" and bool(inp.streams.data)

    def record_damage(self, index: int, what: str) -> None:
        """Frame ``index`` is damaged (``what``): refused when ``strict``, else recorded."""
        if self.strict:
            raise DualcodecError(f"{self.path}: {what}")
        self.damaged.add(index)

    def base_frames(self) -> Iterator[Planes]:
        """Decoded base-layer frames in display order, of the header's base size."""
        import av

        decoder = BaseDecoder(self.header.codec, self.header.bit_depth, self.extradata)
        # strict: stop at the first error; else, as ffmpeg -flags2 +showall, output the
        # frames that follow a lost key frame too, concealed.
        decoder.codec_context.options = {"err_detect": "explode"} if self.strict else {"flags2": "+showall"}
        size = (self.header.base_height, self.header.base_width)
        last: Planes | None = None
        index = sent = 0
        with _open(self.path) as inp:
            packets = inp.demux(inp.streams.video[0])
            ended = False
            while not ended:
                try:
                    packet = next(packets, None)
                except av.FFmpegError as exc:  # the index points past the data
                    self.record_damage(index, f"base layer is truncated or damaged ({exc.strerror or exc})")
                    packet = None
                ended = packet is None or not packet.size  # an empty packet, or none: flush
                sent += not ended
                try:
                    decoded = decoder.decode(None if ended else packet)
                except av.FFmpegError as exc:
                    self.record_damage(index, f"base layer is corrupted ({exc.strerror or exc})")
                    decoded = [] if ended else [_repeat(last, size, self.header.bit_depth)]
                for planes in decoded:
                    if planes.y.shape != size:
                        self.record_damage(index, f"base frame {index + 1} has the wrong size")
                        planes = _repeat(last, size, self.header.bit_depth)
                    elif planes.corrupt:
                        self.record_damage(index, f"base frame {index + 1} is damaged")
                    yield planes
                    last, index = planes, index + 1
        while index < sent:  # packets that gave no frame: keep the file's frame count and timing
            self.record_damage(index, f"base frame {index + 1} did not decode")
            yield _repeat(last, size, self.header.bit_depth)
            index += 1

    def side_frames(self) -> Iterator[SideFrame]:
        """The side stream frame by frame, checksums verified (nothing when the file has none).

        A damaged packet is SKIP (:attr:`damaged`), unless ``strict``."""
        import av

        if not self.has_side_stream:
            return
        with _open(self.path) as inp:
            index = 0
            try:
                for packet in inp.demux(inp.streams.data[0]):
                    if packet.size == 0:
                        continue
                    try:
                        side = SideFrame.from_bytes(parse_payload(bytes(packet), index), index)
                    except DualcodecError as exc:
                        self.record_damage(index, str(exc))
                        side = SideFrame(SideMode.SKIP)
                    yield side
                    index += 1
            except av.FFmpegError as exc:  # the index points past the data: the side stream ends here
                self.record_damage(index, f"side stream is damaged ({exc.strerror or exc})")

    def sizes(self) -> StreamSizes:
        with _open(self.path) as inp:
            base = side = frames = 0
            for packet in inp.demux():
                if packet.size == 0:
                    continue
                if packet.stream.type == "video":
                    base += packet.size
                    frames += 1
                elif packet.stream.type == "data" and self.has_side_stream:
                    side += packet.size
        return StreamSizes(frames, base, side, self.path.stat().st_size)

    def header_dict(self) -> dict | None:
        """The header as stored in the file (``None``: a plain video without one)."""
        return json.loads(self.header.to_json()) if self.has_header else None

