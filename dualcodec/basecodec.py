"""The base layer: H.264 (libx264), HEVC (libx265) and AV1 (SVT-AV1 / dav1d) through PyAV.

Frames cross this module as :class:`Planes` (integer Y'CbCr 4:2:0 code values, 8 or
10 bit); colour conversion lives in :mod:`dualcodec.yuv`. The encoder wraps either a
stand-alone PyAV codec context (training) or the codec context of an output stream
(:mod:`dualcodec.container`), so training and files run the very same encoder
settings.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch

from dualcodec.errors import DualcodecError
from dualcodec.yuv import YUVFormat

ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
DECODERS = {"h264": "h264", "hevc": "hevc", "av1": "libdav1d"}
DEFAULT_PRESETS = {"h264": "medium", "hevc": "medium", "av1": "8"}
# x264's and x265's preset names (x264.h, x265.h); SVT-AV1 takes a number (its range
# depends on the library version, so the encoder itself is asked).
NAMED_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                 "placebo")
PRESET_HINTS = {
    "h264": f"libx264 presets are {', '.join(NAMED_PRESETS)}",
    "hevc": f"libx265 presets are {', '.join(NAMED_PRESETS)}",
    "av1": "SVT-AV1 presets are numbers, from slowest (-1 or 0) to fastest (13)",
}
MAX_QP = {"h264": 51, "hevc": 51, "av1": 63}  # the top quantiser for 8-bit frames (see max_qp)
# The smallest base-layer (width, height) each encoder handles. x265 refuses anything
# below 16x16; SVT-AV1 accepts 4x4 but reads out of bounds (heap corruption, then a
# crash later) below 26 pixels wide, so AV1 asks for 32.
MIN_SIZE = {"h264": (2, 2), "hevc": (16, 16), "av1": (32, 4)}

# ITU-T H.273 code points written into the stream: per matrix, the primaries and transfer
# characteristics that go with it (BT.709; BT.601 625 and 525 lines; BT.2020 10 bit).
BT709 = 1
COLOUR_TAGS = {1: (1, 1), 5: (5, 6), 6: (6, 6), 9: (9, 14)}
RANGE_TV, RANGE_PC = 1, 2
# The primaries and transfer characteristics FFmpeg names (H.273 values; 0, 2 and 3:
# reserved or unspecified): a source's flags within them are carried (HLG: 18, PQ: 16).
KNOWN_PRIMARIES = frozenset(range(1, 23)) - {2, 3}
KNOWN_TRANSFERS = frozenset(range(1, 19)) - {2, 3}


@dataclass(frozen=True)
class VideoSignal:
    """How a source's pictures are to be shown, flagged in the base layer as the source
    flags them: ``colour``, its (primaries, transfer characteristics) (:func:`colour_of`;
    ``None``: those of the matrix's standard), and ``aspect``, its sample aspect ratio
    (an anamorphic DVD's 32/27; ``None``: square samples)."""

    colour: tuple[int, int] | None = None
    aspect: Fraction | None = None

    def __post_init__(self) -> None:
        if self.colour is not None and (self.colour[0] not in KNOWN_PRIMARIES or self.colour[1] not in KNOWN_TRANSFERS):
            raise DualcodecError(f"colour primaries and transfer {self.colour} (ITU-T H.273) are not ones FFmpeg names")
        if self.aspect is not None and not self.aspect > 0:
            raise DualcodecError(f"sample aspect ratio must be positive, got {self.aspect}")

    def names(self, matrix: int) -> tuple[str, str]:
        """The primaries and transfer flagged for planes of ``matrix``, as ffprobe names them
        (``bt2020``, ``arib-std-b67``)."""
        from av.video.reformatter import ColorPrimaries, ColorTrc

        primaries, transfer = self.colour or COLOUR_TAGS[matrix]
        return tuple(enum(value).name.lower().replace("_", "-")
                     for enum, value in ((ColorPrimaries, primaries), (ColorTrc, transfer)))

    def flag(self, codec_context, matrix: int) -> None:
        """Set them on an encoder's ``codec_context`` for planes of ``matrix``."""
        codec_context.color_primaries, codec_context.color_trc = self.colour or COLOUR_TAGS[matrix]
        if self.aspect is not None:
            codec_context.sample_aspect_ratio = self.aspect


def square_or(aspect) -> Fraction | None:
    """A stream's sample aspect ratio as :class:`VideoSignal` keeps it: ``None`` for square
    samples or none flagged (0/1, which FFmpeg reads as unknown)."""
    return Fraction(aspect) if aspect and Fraction(aspect) != 1 else None


def colour_of(matrix: int, primaries: int | None, transfer: int | None) -> tuple[int, int]:
    """The (primaries, transfer characteristics) to flag for planes of ``matrix``: a
    source's own where it names them (a phone's HLG), else those of the matrix's standard."""
    standard = COLOUR_TAGS[matrix]
    return (primaries if primaries in KNOWN_PRIMARIES else standard[0],
            transfer if transfer in KNOWN_TRANSFERS else standard[1])

# x264 puts its version and option string in the first packet of every stream, as an
# H.264 SEI message user_data_unregistered with this UUID (x264's common/base.c): 0.6-0.7 KB
# of text that no decoder needs, 11% of a 2x Kodak file at QP 42. The encoder drops it.
X264_BANNER_UUID = bytes.fromhex("dc45e9bde6d948b7962cd820d923eeef")


def max_qp(codec: str, bit_depth: int = 8) -> int:
    """``codec``'s top quantiser for frames of ``bit_depth`` bits: x264's scale reaches 6
    higher per extra bit (63 at 10 bits, the same step as 51 at 8); x265's and SVT-AV1's
    do not move."""
    return MAX_QP[codec] + (6 * (bit_depth - 8) if codec == "h264" else 0)


@dataclass(frozen=True)
class BaseCodecSettings:
    """How the base layer is coded. Exactly one of ``qp`` (constant QP) and ``crf``.

    The quantiser is checked against the codec's top at any depth here (the coder sets
    :attr:`bit_depth` to the frames' once it reads them), and at the frames' own depth by
    :meth:`check_quantiser`."""

    codec: str = "h264"
    qp: int | None = 32
    crf: float | None = None
    preset: str | None = None
    gop: int = 32
    bit_depth: int = 8
    full_range: bool = False
    matrix: int = BT709  # ITU-T H.273 matrix_coefficients of the planes (dualcodec.yuv)
    signal: VideoSignal = VideoSignal()  # colour primaries, transfer and sample aspect ratio flagged

    @property
    def level(self) -> int:
        """The quantiser on H.264's 8-bit scale, which a level-input model reads (the file
        header's ``level``): the QP or the CRF, rounded, less 12 for 10-bit H.264, whose
        scale x264 shifts by 6 per extra bit (x265 and SVT-AV1 keep theirs)."""
        q = round(self.qp if self.qp is not None else self.crf)
        return max(0, q - 6 * (self.bit_depth - 8) if self.codec == "h264" else q)

    def __post_init__(self) -> None:
        if self.codec not in ENCODERS:
            raise DualcodecError(f"unknown base codec {self.codec!r} (choose from {', '.join(ENCODERS)})")
        if (self.qp is None) == (self.crf is None):
            raise DualcodecError("set exactly one of qp and crf for the base layer")
        if self.bit_depth not in (8, 10):
            raise DualcodecError(f"base layer bit depth must be 8 or 10, got {self.bit_depth}")
        self._check_quantiser(max_qp(self.codec, 10), "")
        if self.gop < 1:
            raise DualcodecError(f"gop must be at least 1, got {self.gop}")
        if self.matrix not in COLOUR_TAGS:
            raise DualcodecError(f"colour matrix {self.matrix} (ITU-T H.273) is not supported for the base layer "
                                 "(1 BT.709, 5 or 6 BT.601, 9 BT.2020)")

    def check_quantiser(self) -> None:
        """Refuse a quantiser past the codec's top at :attr:`bit_depth` (x264 would take it
        as its top without a word)."""
        self._check_quantiser(max_qp(self.codec, self.bit_depth), f"{self.bit_depth}-bit ")

    def _check_quantiser(self, top: int, depth: str) -> None:
        name, value = ("qp", self.qp) if self.qp is not None else ("crf", self.crf)
        if not 0 <= value <= top:
            raise DualcodecError(f"{name} {value} is out of range for {depth}{self.codec} (0..{top})")

    @property
    def yuv_format(self) -> YUVFormat:
        return YUVFormat(bit_depth=self.bit_depth, full_range=self.full_range, matrix=self.matrix)

    @property
    def pix_fmt(self) -> str:
        return "yuv420p" if self.bit_depth == 8 else "yuv420p10le"

    @property
    def encoder_options(self) -> dict[str, str]:
        preset = self.preset or DEFAULT_PRESETS[self.codec]
        rc = {"qp": str(self.qp)} if self.qp is not None else {"crf": str(self.crf)}
        if self.codec == "h264":
            return {"preset": preset, **rc}
        if self.codec == "hevc":
            key, value = next(iter(rc.items()))
            # info=0: no SEI with x265's 2.3 KB option string in every file. open-gop=0: each
            # GOP decodes on its own (x265's default CRA key frames have leading frames that
            # need the GOP before), as seeking and the temporal model's GOPs assume.
            return {"preset": preset,
                    "x265-params": f"{key}={value}:keyint={self.gop}:open-gop=0:log-level=error:info=0"}
        return {"preset": preset, **rc, "svtav1-params": f"keyint={self.gop}"}


def preset_problem(codec: str, preset: str | None) -> str | None:
    """Why ``preset`` is not one of ``codec``'s presets, or None (``None`` is the default)."""
    if preset is None:
        return None
    if codec == "av1":
        try:
            int(preset)
        except ValueError:
            return f"unknown av1 preset {preset!r}: {PRESET_HINTS['av1']}"
        return None
    if preset not in NAMED_PRESETS:
        return f"unknown {codec} preset {preset!r}: {PRESET_HINTS[codec]}"
    return None


def check_encoder(settings: BaseCodecSettings) -> None:
    """Open the settings' encoder once on a small frame, so that a bad option (an unknown
    preset, say) is a one-line error before any frame is read, not a failure mid-encode."""
    import av

    preset = settings.preset or DEFAULT_PRESETS[settings.codec]
    # x264 prints its own complaint about an unknown name to stderr: check names first.
    problem = preset_problem(settings.codec, preset)
    if problem:
        raise DualcodecError(problem)
    width, height = (max(64, n) for n in MIN_SIZE[settings.codec])
    try:
        BaseEncoder(settings, width, height).codec_context.open()
    except (av.FFmpegError, OverflowError) as exc:
        raise DualcodecError(f"{ENCODERS[settings.codec]} refuses preset {preset!r} with these settings "
                             f"({exc.__class__.__name__}); {PRESET_HINTS[settings.codec]}") from None


@dataclass
class Planes:
    """One 4:2:0 frame: ``y`` is ``[H, W]``, ``u`` and ``v`` are ``[H/2, W/2]``; uint8 or uint16.

    ``corrupt``: the decoder flagged the frame as damaged and concealed; ``key_frame``: it
    starts a GOP (decoded frames only); ``time``: when it is shown, in seconds from the
    source's first frame, as the source stamps it (``None``: not stamped; coded at its
    index over the rate unless the source's rate varies)."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    corrupt: bool = False
    key_frame: bool = False
    time: Fraction | None = None

    @property
    def width(self) -> int:
        return self.y.shape[1]

    @property
    def height(self) -> int:
        return self.y.shape[0]


def planes_from_tensors(y: torch.Tensor, uv: torch.Tensor, fmt: YUVFormat) -> list[Planes]:
    """Rounded code-value tensors ``[B,1,H,W]``, ``[B,2,H/2,W/2]`` to one :class:`Planes` per frame."""
    dtype = np.uint8 if fmt.bit_depth == 8 else np.uint16
    y_np = y.detach().round().clamp(0, fmt.max_code).cpu().numpy().astype(dtype)
    uv_np = uv.detach().round().clamp(0, fmt.max_code).cpu().numpy().astype(dtype)
    return [Planes(y_np[i, 0], uv_np[i, 0], uv_np[i, 1]) for i in range(y_np.shape[0])]


def planes_to_tensors(planes: Sequence[Planes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`planes_from_tensors`: float code values."""
    y = torch.from_numpy(np.stack([p.y for p in planes]).astype(np.float32)).unsqueeze(1)
    uv = torch.from_numpy(np.stack([np.stack([p.u, p.v]) for p in planes]).astype(np.float32))
    return y, uv


def frame_from_planes(planes: Planes, pix_fmt: str):
    """A PyAV frame of ``pix_fmt`` (4:2:0 at 8 or 10 bits) holding ``planes`` (any size;
    chroma of ``ceil(size / 2)``)."""
    import av

    frame = av.VideoFrame(planes.width, planes.height, pix_fmt)
    for plane, data in zip(frame.planes, (planes.y, planes.u, planes.v)):
        # written in place, each row's padding zeroed: one copy (10-bit 1080p: 0.7 ms, not 7)
        dtype = data.dtype.newbyteorder("<")
        rows = np.frombuffer(memoryview(plane), dtype=dtype).reshape(-1, plane.line_size // dtype.itemsize)
        rows[: data.shape[0], : data.shape[1]] = data
        rows[: data.shape[0], data.shape[1]:] = 0
    return frame


def planes_from_frame(frame) -> Planes:
    """The planes of a 4:2:0 PyAV frame (``yuv420p``, ``yuvj420p`` or ``yuv420p10le``) as they are."""
    dtype = np.dtype("<u2") if frame.format.name == "yuv420p10le" else np.dtype(np.uint8)
    arrays = []
    for plane in frame.planes[:3]:
        rows = np.frombuffer(plane, dtype=dtype).reshape(-1, plane.line_size // dtype.itemsize)
        arrays.append(rows[: plane.height, : plane.width].astype(dtype.newbyteorder("=")))
    return Planes(*arrays, corrupt=frame.is_corrupt, key_frame=bool(frame.key_frame))


def _planes_from_frame(frame, bit_depth: int) -> Planes:
    pix_fmt = "yuv420p" if bit_depth == 8 else "yuv420p10le"
    if frame.format.name not in (pix_fmt, "yuvj420p"):
        frame = frame.reformat(format=pix_fmt)
    return planes_from_frame(frame)


class BaseEncoder:
    """Encodes :class:`Planes` into packets with the settings' codec, QP/CRF, preset and GOP.

    ``codec_context`` is an output stream's context when writing a file; otherwise a
    stand-alone encoder is opened (training and tests). Frame ``i`` is stamped ``i`` in
    units of ``1 / rate``, or, for a video whose frames do not come at a constant rate,
    ``times[i]`` in units of ``time_base`` (a list its caller fills as frames come).
    """

    def __init__(
        self,
        settings: BaseCodecSettings,
        width: int,
        height: int,
        rate: Fraction = Fraction(25),
        codec_context=None,
        time_base: Fraction | None = None,
        times: list[int] | None = None,
    ) -> None:
        import av

        if width % 2 or height % 2:
            raise DualcodecError(f"base layer needs even width and height, got {width}x{height}")
        min_width, min_height = MIN_SIZE[settings.codec]
        if width < min_width or height < min_height:
            raise DualcodecError(
                f"{settings.codec} needs a base layer of at least {min_width}x{min_height} pixels, got "
                f"{width}x{height}; use a larger input, a smaller scale or another base codec"
            )
        if settings.codec == "av1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner unless told
        self.settings = settings
        cc = codec_context or av.CodecContext.create(ENCODERS[settings.codec], "w")
        cc.width, cc.height = width, height
        cc.pix_fmt = settings.pix_fmt
        cc.time_base = time_base or 1 / Fraction(rate)
        cc.framerate = Fraction(rate)
        cc.gop_size = settings.gop
        cc.colorspace = settings.matrix
        settings.signal.flag(cc, settings.matrix)
        cc.color_range = RANGE_PC if settings.full_range else RANGE_TV
        cc.options = settings.encoder_options
        self.codec_context = cc
        self._pts = 0
        self.times = times

    def encode(self, planes: Planes | None) -> list:
        """Queue one frame (``None`` flushes); returns the packets the encoder released
        (H.264: without x264's banner, :data:`X264_BANNER_UUID`)."""
        if planes is None:
            packets = self.codec_context.encode(None)
        else:
            frame = frame_from_planes(planes, self.settings.pix_fmt)
            frame.pts = self._pts if self.times is None else self.times[self._pts]
            frame.time_base = self.codec_context.time_base
            self._pts += 1
            packets = self.codec_context.encode(frame)
        if self.settings.codec != "h264":
            return list(packets)
        return [_without_banner(packet) for packet in packets]


def _without_banner(packet):
    """``packet``, or a copy of it without x264's banner SEI when it holds one."""
    import av

    data = bytes(packet)
    kept = without_x264_banner(data)
    if len(kept) == len(data):
        return packet
    copy = av.Packet(kept)
    copy.pts, copy.dts, copy.duration, copy.time_base = packet.pts, packet.dts, packet.duration, packet.time_base
    copy.is_keyframe = packet.is_keyframe
    return copy


def without_x264_banner(data: bytes) -> bytes:
    """An H.264 access unit (Annex B byte stream) without the SEI NAL unit that holds
    x264's banner, and nothing else: a NAL unit of type 6 whose only message is
    user_data_unregistered (payload type 5) with :data:`X264_BANNER_UUID`. Anything else
    comes back unchanged."""
    uuid_at = data.find(X264_BANNER_UUID)
    if uuid_at < 0:
        return data
    start = data.rfind(b"\x00\x00\x01", 0, uuid_at)  # the start code of its NAL unit
    if start < 0:
        return data
    pos = start + 3
    if data[pos] & 0x1F != 6 or data[pos + 1] != 5:  # an SEI NAL unit, user_data_unregistered first
        return data
    pos, size = pos + 2, 0
    while pos < uuid_at and data[pos] == 0xFF:
        size, pos = size + 255, pos + 1
    size += data[pos]
    message_end = uuid_at + size
    end = data.find(b"\x00\x00\x01", uuid_at)
    end = len(data) if end < 0 else end
    while end > message_end + 1 and data[end - 1] == 0:  # trailing zeros, or the next start code's zero byte
        end -= 1
    # the message fills the NAL unit: then only the RBSP stop bit (0x80) follows it
    if pos + 1 != uuid_at or message_end + 1 != end or data[message_end] != 0x80:
        return data
    if start > 0 and data[start - 1] == 0:  # a four-byte start code
        start -= 1
    return data[:start] + data[end:]


class BaseDecoder:
    """Decodes base-layer packets back to :class:`Planes`, in display order."""

    def __init__(self, codec: str, bit_depth: int, extradata: bytes | None = None) -> None:
        import av

        self.bit_depth = bit_depth
        cc = av.CodecContext.create(DECODERS[codec], "r")
        if extradata:
            cc.extradata = extradata
        cc.thread_type = "AUTO"
        self.codec_context = cc

    def decode(self, packet) -> list[Planes]:
        """Decode one packet (``None`` flushes)."""
        return [_planes_from_frame(f, self.bit_depth) for f in self.codec_context.decode(packet)]


def roundtrip(settings: BaseCodecSettings, frames: Sequence[Planes],
              intra: bool = True) -> tuple[list[Planes], list[int]]:
    """Code each frame as its own intra picture (``intra``) or the frames as one sequence
    with the settings' GOP and the encoder's P- and B-frames; returns the decoded frames
    and their sizes in bytes, in display order.

    Used in training: the real codec with exact packet sizes.
    """
    first = frames[0]
    encoder = BaseEncoder(dataclasses.replace(settings, gop=1) if intra else settings, first.width, first.height)
    if intra and settings.codec == "h264":
        encoder.codec_context.max_b_frames = 0
    packets = []
    for planes in frames:
        packets += encoder.encode(planes)
    packets += encoder.encode(None)
    if len(packets) != len(frames):
        raise DualcodecError(f"base encoder returned {len(packets)} packets for {len(frames)} frames")
    decoder = BaseDecoder(settings.codec, settings.bit_depth)
    decoded: list[Planes] = []
    for packet in packets:
        decoded += decoder.decode(packet)
    decoded += decoder.decode(None)
    order = np.argsort([p.pts for p in packets])
    sizes = [packets[i].size for i in order]
    return decoded, sizes
