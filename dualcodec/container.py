"""The dualcodec file: a standard MP4 that any player opens, written and read.

Layout (format version 4)
-------------------------
An ISO-BMFF (MP4) file written by FFmpeg's mov muxer through PyAV:

* Stream 0, **video**: the base layer, an ordinary H.264 / HEVC / AV1 track at the
  low resolution (``base_width`` x ``base_height``), 4:2:0 in the source's bit depth
  (H.264: without x264's version SEI; no FFmpeg version tag in the file),
  flagged with the source's matrix, primaries and transfer (a phone's HLG; those of the
  matrix's standard where the source names none, :data:`dualcodec.basecodec.COLOUR_TAGS`)
  and range (``tv`` or ``pc``). A legacy
  player shows it. A source flagged to be shown turned (a phone's portrait video, a
  photo's EXIF orientation) gives the track the same display matrix, a quarter turn
  and a mirror (:class:`Orientation`); the frames stay as stored. Frame ``i`` is
  stamped ``i`` in units of one over the rate, or, for a source whose rate varies (its
  average rate is not its base rate), with its own time in the source's time base.
* A **data** stream exactly when the model has a side stream (``mode`` ``"dual"``): the
  side stream, codec tag ``bin_data``, one packet per video frame with the same
  presentation time stamp, laid out as :mod:`dualcodec.sidestream` says; a ``dual``
  file without one (a model without a side stream) upsamples the base layer alone.
* Further **audio** streams, copied unchanged from the input (or transcoded to AAC,
  :mod:`dualcodec.audio`), timed from the first video frame coded as the video is, up
  to the end of the encoded video (``--start N`` and ``--frames N`` cut the audio too).
* File-level metadata key ``dualcodec``: the header (:mod:`dualcodec.header`), absent
  from a plain file of even size.

Version 3 files (all modes still read) are version 4 files without KEEP side packets
(:mod:`dualcodec.sidestream`): a KEEP packet in one is damage.

Version 2 files (plain and bicubic still read): the side stream's NEW packets held
factorised latents of the old side stream, and SKIP meant the latents' medians.

Version 1 files (plain and bicubic still read): the data stream was left out when the first 64 frames
were all SKIP, and REPEAT could refer across a key frame (decoded as written).

A reader refuses a file whose header or index is damaged. Damaged packets are
concealed as a player conceals them (see :class:`ContainerReader`), unless the reader
is ``strict``. Rate accounting is exact: the base layer's bytes are the sizes of the
video packets, the side stream's are the sizes of the data packets, and everything else
(headers, indexes, audio) is the rest.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

from dualcodec.basecodec import ENCODERS, BaseCodecSettings, BaseDecoder, Planes, VideoSignal, colour_of, square_or
from dualcodec.errors import DualcodecError, StartPastEnd
from dualcodec.header import METADATA_KEY, Header
from dualcodec.outputs import refuse_stdin
from dualcodec.sidestream import SideFrame, SideMode, frame_payload, parse_payload


MAX_REORDER = 16  # frames between a packet's decoding and presentation time at most (x265: bframes <= 16)
# EXIF orientation (TIFF tag 274) -> (degrees counter-clockwise, mirrored after), as FFmpeg's JPEG decoder reads it
EXIF_ORIENTATIONS = {1: (0, False), 2: (0, True), 3: (180, False), 4: (180, True), 5: (270, True), 6: (270, False),
                     7: (90, True), 8: (90, False)}


@dataclass(frozen=True)
class Orientation:
    """How players turn a video track's frames to show them: ``rotation`` degrees
    counter-clockwise, then a left-right mirror where ``mirrored`` (FFmpeg's display
    matrix, as PyAV's ``set_display_rotation(rotation, hflip=mirrored)`` writes it).
    These eight are the eight EXIF orientations, and every display matrix of whole
    quarter turns."""

    rotation: int = 0  # 0, 90, 180 or 270
    mirrored: bool = False

    def __bool__(self) -> bool:
        return bool(self.rotation or self.mirrored)

    @classmethod
    def from_matrix(cls, matrix) -> Orientation:
        """Of a display matrix: nine 32-bit integers, row-major; a mirror flips the sign of
        its determinant and, undone by negating the first column, leaves a rotation."""
        a, b, _, c, d, *_ = (float(v) for v in matrix)
        mirrored = a * d - b * c < 0
        if mirrored:
            a, c = -a, -c
        return cls(round(-math.degrees(math.atan2(b, a)) / 90) * 90 % 360, mirrored)

    @classmethod
    def from_exif(cls, tag: int | None) -> Orientation:
        """Of an EXIF orientation tag (1-8; anything else is as stored)."""
        rotation, mirrored = EXIF_ORIENTATIONS.get(tag, (0, False))
        return cls(rotation, mirrored)

    def flag(self, stream) -> None:
        """Give the PyAV video ``stream`` (to be written) this display matrix, or none."""
        if self:
            stream.set_display_rotation(self.rotation, hflip=self.mirrored)

    def __str__(self) -> str:
        turned = f"rotated by {self.rotation} degrees counter-clockwise" if self.rotation else ""
        mirrored = "mirrored left to right" if self.mirrored else ""
        return " and then ".join(filter(None, [turned, mirrored])) or "as stored"


# The container tags an output carries from its source: those FFmpeg's MP4 muxer writes by
# default (ffmpeg copies others, such as a phone's "com.android.version", only to be dropped)
CARRIED_TAGS = frozenset({"creation_time", "title", "artist", "album_artist", "album", "composer", "comment",
                          "description", "synopsis", "copyright", "date", "genre", "grouping", "lyrics",
                          "location"})


@dataclass(frozen=True)
class Tags:
    """What an output carries over from its source's container, as ffmpeg does by default
    (``-map_metadata 0``): the container's tags (creation_time, title, ...) that the MP4
    muxer writes, the video stream's language and each audio stream's (``None``: none,
    or "und"). ``Tags()`` carries nothing."""

    container: tuple[tuple[str, str], ...] = ()
    language: str | None = None
    audio_languages: tuple[str | None, ...] = ()

    @classmethod
    def of(cls, inp) -> Tags:
        """The tags of the open container ``inp``."""
        def language(stream) -> str | None:
            value = stream.metadata.get("language")
            return None if value in (None, "und") else value

        video = video_stream(inp)
        return cls(tuple((key, value) for key, value in inp.metadata.items() if key in CARRIED_TAGS),
                   language(video) if video is not None else None,
                   tuple(language(stream) for stream in inp.streams.audio))

    def put(self, output, video) -> None:
        """Give the container's and the video stream's to ``output``, a container being
        written, and its ``video`` stream (the audio streams' go with them, :mod:`dualcodec.audio`)."""
        output.metadata.update(dict(self.container))
        if self.language:
            video.metadata["language"] = self.language


class ContainerWriter:
    """Writes one dualcodec MP4. Use :attr:`video_codec_context` for the base encoder."""

    def __init__(self, path: Path | BinaryIO, header: Header, settings: BaseCodecSettings, rate: Fraction,
                 side_stream: bool = False, orientation: Orientation = Orientation(),
                 time_base: Fraction | None = None, tags: Tags = Tags()) -> None:
        """``path``: a file name or a seekable binary buffer. ``side_stream``: the file has a
        data track (exactly when the model has a side stream). ``orientation``: how the
        source is shown (:func:`display_orientation`), given to the base-layer track;
        ``tags``: the source's (its creation time, title, language).
        ``time_base``: for frames that do not come at a constant rate, the unit of
        :attr:`times`, each frame's time stamp, which its caller appends as frames come
        (and gives the base encoder); the side packets take the same stamps."""
        import av

        self.header = header
        self.rate = Fraction(rate)
        self.time_base = time_base or 1 / self.rate
        self.times: list[int] | None = [] if time_base else None
        self.ticks_per_frame = ticks_per_frame(self.rate, self.time_base)
        target = path if hasattr(path, "write") else str(path)
        # bitexact: without FFmpeg's version tag (52 bytes), so that a file depends on its input alone
        options = {"fflags": "+bitexact"}
        if header.is_written:
            self.output = av.open(target, "w", format="mp4", options={**options, "movflags": "use_metadata_tags"})
            self.output.metadata[METADATA_KEY] = header.to_json()
        else:
            self.output = av.open(target, "w", format="mp4", options=options)
        self.video = self.output.add_stream(ENCODERS[settings.codec], rate=self.rate)
        if settings.codec == "hevc":
            self.video.codec_tag = "hvc1"  # parameter sets in the sample entry: what Apple players require
        orientation.flag(self.video)
        tags.put(self.output, self.video)
        self.data = self.output.add_data_stream("bin_data") if side_stream else None
        self._side_index = 0
        self._last_dts: int | None = None  # of the last base-layer packet
        self._audio = None  # AudioTracks, once declared

    @property
    def video_codec_context(self):
        return self.video.codec_context

    def mux_base(self, packets: list) -> None:
        for packet in packets:
            packet.stream = self.video
            packet.dts = self._sane_dts(packet)
            self._last_dts = packet.dts
            self.output.mux(packet)

    def _sane_dts(self, packet) -> int:
        """The packet's decoding time stamp, or one that fits when it is not sane.

        FFmpeg 8's libx265 wrapper now and then leaves the dts of the only packet of a
        one-frame stream (an image) uninitialised (e.g. -219043332147 for pts 0), and the
        MP4 muxer then refuses the stream ("Not yet implemented"): measured, 7 of 30 such
        encodes. A sane dts is at most the pts, above the previous packet's, and within
        ``MAX_REORDER`` frames of the pts."""
        pts, dts = packet.pts, packet.dts
        floor = None if self._last_dts is None else self._last_dts + 1
        reorder = MAX_REORDER * self.ticks_per_frame
        if dts is not None and dts <= pts and pts - dts <= reorder and (floor is None or dts >= floor):
            return dts
        return pts if floor is None else floor

    def mux_side(self, side: SideFrame) -> None:
        """Side-stream packet of the next frame in display order."""
        import av

        payload = frame_payload(side.to_bytes())
        packet = av.Packet(payload)
        packet.stream = self.data
        packet.pts = packet.dts = self._side_index if self.times is None else self.times[self._side_index]
        packet.time_base = self.time_base
        packet.duration = self.ticks_per_frame
        self._side_index += 1
        self.output.mux(packet)

    def add_audio_streams(self, source: Path, policy: str = "auto", tags: Tags = Tags()) -> list[str]:
        """Declare the audio tracks of ``source`` (:mod:`dualcodec.audio`), with the
        languages of ``tags``; before any packet is muxed. Returns what becomes of each
        ("aac copied", "pcm_s16le transcoded to aac")."""
        from dualcodec.audio import AudioTracks

        self._audio = AudioTracks(self.output, source, policy, tags.audio_languages)
        return self._audio.described

    def copy_audio(self, seconds: float, offset: Fraction = Fraction(0)) -> None:
        """Mux the declared audio that plays with the encoded video: from the source's
        first video frame plus ``offset`` seconds (the first frame coded) for ``seconds``
        (the encoded video's duration)."""
        if self._audio is not None:
            self._audio.write(seconds, offset)

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


Source = Path | bytes  # a file, or a whole file in memory


def video_stream(inp):
    """The video stream of the open container ``inp`` that players show, as ffmpeg picks it
    (FFmpeg's best stream: a moving picture before a cover picture stored first); ``None``
    when there is none. A dualcodec file has one, its base layer."""
    return inp.streams.best("video")


def rate_varies(stream) -> bool:
    """Whether a video stream's frames do not come at a constant rate (a phone's video):
    its average rate is not its base rate."""
    return bool(stream.average_rate and stream.base_rate and stream.average_rate != stream.base_rate)


def ticks_per_frame(rate: Fraction, time_base: Fraction) -> int:
    """Units of ``time_base`` in one frame at ``rate`` (at least 1)."""
    return max(1, round(1 / (rate * time_base)))


def played_seconds(count: int, rate: Fraction, time_base: Fraction | None = None,
                   times: list[int] | None = None) -> Fraction:
    """How long the first ``count`` frames play: ``count / rate``, or with frame ``times``
    (in ``time_base`` units, the first frame at 0) the last one's time plus a frame at ``rate``."""
    if times is None:
        return Fraction(count) / Fraction(rate)
    return (times[count - 1] * Fraction(time_base) + 1 / Fraction(rate)) if count else Fraction(0)


def display_orientation(inp) -> Orientation:
    """How players show the video stream of the open container ``inp``: its display
    matrix, which FFmpeg hands on with the decoded frames only, so this decodes the first
    frame (as stored when it does not decode). Where the frame carries side data that
    PyAV does not know (FFmpeg 8's EXIF), only the rotation can be read."""
    import av

    try:
        frame = next(inp.decode(video_stream(inp)), None)
    except (av.FFmpegError, ValueError):
        return Orientation()
    if frame is None:
        return Orientation()
    try:
        matrices = [bytes(d) for d in frame.side_data if d.type.name == "DISPLAYMATRIX"]
    except ValueError:  # a side data type PyAV's enumeration lacks
        return Orientation(round(frame.rotation / 90) * 90 % 360)
    if not matrices or len(matrices[0]) != 36:
        return Orientation()
    return Orientation.from_matrix(struct.unpack("<9i", matrices[0]))


def _open(path: Source):
    import av

    if isinstance(path, bytes):
        try:
            return av.open(io.BytesIO(path), format="mp4")
        except av.FFmpegError as exc:
            raise DualcodecError(f"cannot open the stream: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise DualcodecError("cannot open the stream: its metadata is damaged (not UTF-8 text)") from None
    refuse_stdin([path], "an MP4 cannot be read from a pipe (its index may come last)")
    path = Path(path)
    if not path.exists():
        raise DualcodecError(f"input not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise DualcodecError(f"cannot open {path}: the file is empty")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise DualcodecError(f"cannot open {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:  # PyAV reads every metadata tag as UTF-8 when it opens a file
        raise DualcodecError(f"cannot open {path}: its metadata is damaged (not UTF-8 text)") from None


def _size(path: Source) -> int:
    return len(path) if isinstance(path, bytes) else Path(path).stat().st_size


def _check_boxes(path: Source, name: str) -> None:
    """Refuse an MP4 whose top-level boxes do not tile the file exactly. Without this, a
    truncated dualcodec file, whose header sits at the end of ``moov``, would lose the
    header and pass for a plain video."""
    size = _size(path)
    pos = 0
    with (io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb")) as f:
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
        raise DualcodecError(f"{name} is truncated or damaged (its MP4 boxes do not add up to its size)")


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

    def __init__(self, path: Source, strict: bool = False, start: int = 0) -> None:
        """``path``: a file, or the bytes of a whole file (:func:`dualcodec.codec.decompress`).
        ``start``: seek, as a player does: the base layer and the side stream are read
        from the last key frame at or before frame ``start`` (0-based), :attr:`first`;
        the frames before it are neither read nor decoded (their caller skips the frames
        from :attr:`first` to ``start`` once decoded)."""
        self.source = path if isinstance(path, bytes) else Path(path)
        self.path = "the stream" if isinstance(path, bytes) else self.source  # for messages
        self.strict = strict
        self.damaged: set[int] = set()
        self.start = start
        with _open(self.source) as inp:
            text = inp.metadata.get(METADATA_KEY)
            header = Header.from_json(text) if text is not None else None
            if header is None and "mp4" in inp.format.name.split(","):
                _check_boxes(self.source, str(self.path))
            if not inp.streams.video:
                what = "base-layer video stream" if header else "video stream (and no dualcodec header)"
                raise DualcodecError(f"{self.path} has no {what}")
            video = video_stream(inp)
            if video.codec_context is None:
                raise DualcodecError(f"{self.path}: its video stream names no codec FFmpeg knows (damaged?)")
            self.has_header = header is not None
            self.header = header or Header.from_video_stream(self.path, video)
            cc = video.codec_context
            self.signal = VideoSignal(colour_of(self.header.matrix, cc.color_primaries, cc.color_trc),
                                      square_or(video.sample_aspect_ratio))
            self.rate = Fraction(video.average_rate or video.guessed_rate or 25)
            self.extradata = video.codec_context.extradata
            # Only a dual file has a side stream; a plain video's data streams (e.g. time codes) are not one.
            self.has_side_stream = self.header.mode == "dual" and bool(inp.streams.data)
            self.first = self._key_frame_before(inp, start) if start else 0
            # frames from start on, as the container's index counts them (None: it does not)
            self.length = max(0, video.frames - start) if video.frames else None
            varies = rate_varies(video)
        with _open(self.source) as inp:
            self.orientation = display_orientation(inp)  # of the base-layer track: the source's
        # frame start's time from the first frame, in seconds (where the audio of a seek begins)
        self.time_base, self.times, self.start_time = (self._frame_times() if varies
                                                       else (None, None, start / self.rate))

    def _frame_times(self) -> tuple[Fraction | None, list[int] | None, Fraction]:
        """For a track whose frames do not come at a constant rate (:func:`rate_varies`), its
        time base, every frame's time stamp from frame :attr:`start` on, in display order,
        counted from that frame's (``None``s where the index is damaged), and that frame's
        time in seconds from the first frame's."""
        import av

        with _open(self.source) as inp:
            video = video_stream(inp)
            time_base = Fraction(video.time_base)
            try:
                stamps = sorted(p.pts for p in inp.demux(video) if p.size and p.pts is not None)
            except av.FFmpegError:  # a damaged index: as a constant rate
                return None, None, self.start / self.rate
        shown = stamps[self.start:]
        if not shown:
            return None, None, self.start / self.rate
        return time_base, [t - shown[0] for t in shown], (shown[0] - stamps[0]) * time_base

    def _key_frame_before(self, inp, start: int) -> int:
        """The index of the last clean key frame at or before frame ``start``: one whose
        packet is preceded in decode order by exactly the frames before it in display order,
        so that its packet index is its frame index and nothing decoded after it is shown
        before it. Every key frame of a closed GOP is clean (every base layer dualcodec
        writes); an open GOP's key frame (x265's default CRA, x264's --open-gop) has leading
        frames that need the GOP before it, so a seek starts at an earlier clean one."""
        if start < 0:
            raise DualcodecError(f"--start must be 0 or more (a frame number, from 0), got {start}")
        packets = [(packet.pts, packet.is_keyframe) for packet in inp.demux(video_stream(inp)) if packet.size]
        count = len(packets)
        if start >= count:
            raise StartPastEnd(self.path, count, start)
        if any(pts is None for pts, _ in packets):  # no display order to check: from the start
            return 0
        shown = [0] * count  # each packet's display index
        for rank, index in enumerate(sorted(range(count), key=lambda i: packets[i][0])):
            shown[index] = rank
        key, latest = 0, -1  # latest: the last display index among the packets so far
        for index, (_, is_key) in enumerate(packets[:start + 1]):
            if is_key and latest == index - 1 and shown[index] == index:
                key = index
            latest = max(latest, shown[index])
        return key

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
        index = sent = self.first
        with _open(self.source) as inp:
            packets = inp.demux(video_stream(inp))
            for _ in range(self.first):  # seeking: the packets before the key frame
                next(p for p in packets if p.size)
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
        """The side stream frame by frame from frame :attr:`first`, checksums verified
        (nothing when the file has none).

        A damaged packet is SKIP (:attr:`damaged`), unless ``strict``."""
        import av

        if not self.has_side_stream:
            return
        with _open(self.source) as inp:
            index, skipped = self.first, 0
            try:
                for packet in inp.demux(inp.streams.data[0]):
                    if packet.size == 0:
                        continue
                    if skipped < self.first:
                        skipped += 1
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
        with _open(self.source) as inp:
            base = side = frames = 0
            video = video_stream(inp)
            for packet in inp.demux():
                if packet.size == 0:
                    continue
                if packet.stream.index == video.index:
                    base += packet.size
                    frames += 1
                elif packet.stream.type == "data" and self.has_side_stream:
                    side += packet.size
        return StreamSizes(frames, base, side, _size(self.source))

    def header_dict(self) -> dict | None:
        """The header as stored in the file (``None``: a plain video without one)."""
        return json.loads(self.header.to_json()) if self.has_header else None

