"""The audio of a source, carried into an MP4 output: copied, or transcoded to AAC.

Policies (``dualcodec encode --audio``):

* ``auto`` (default): copy what MP4 players play (:data:`MP4_AUDIO`), transcode the rest
  (PCM, Vorbis, ...) to AAC;
* ``copy``: copy every audio stream as it is, whatever players make of it;
* ``aac``: transcode every audio stream to AAC;
* ``none``: no audio.

Declare the tracks (:class:`AudioTracks`) before the first packet of the output is muxed:
FFmpeg writes the file header with it, and a stream added later crashes it (SIGFPE).
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Sequence

POLICIES = ("auto", "copy", "aac", "none")
# What MP4 players (browsers, QuickTime, Android, VLC) play from an MP4.
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"})
AAC_BIT_RATE = 128_000


class AudioTracks:
    """One output track per audio stream of ``source``, declared in ``output`` at once,
    each with its language in ``languages`` (one per audio stream of ``source``, or none)."""

    def __init__(self, output, source: Path, policy: str = "auto",
                 languages: Sequence[str | None] = ()) -> None:
        import av

        if policy not in POLICIES:
            raise ValueError(f"audio policy must be one of {POLICIES}, got {policy!r}")
        self.output, self.source = output, Path(source)
        self._copied: dict[int, object] = {}  # input stream index -> output stream
        self._coded: dict[int, object] = {}
        self.described: list[str] = []  # e.g. "aac copied", "pcm_s16le transcoded to aac"
        if policy == "none":
            return
        with av.open(str(self.source)) as inp:
            for stream, language in itertools.zip_longest(inp.streams.audio, languages):
                name = stream.codec_context.name
                if policy == "copy" or (policy == "auto" and name in MP4_AUDIO):
                    self._copied[stream.index] = output.add_stream_from_template(stream)
                    self.described.append(f"{name} copied")
                else:
                    rate = stream.codec_context.sample_rate
                    aac = output.add_stream("aac", rate=rate)
                    # The default layout for the channel count: a source's may be unordered
                    # ("1 channels", PCM from MKV), which the AAC encoder refuses.
                    channels = stream.codec_context.layout.nb_channels
                    aac.layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
                    aac.format = "fltp"  # what FFmpeg's AAC encoder takes
                    aac.time_base = Fraction(1, rate)
                    aac.bit_rate = AAC_BIT_RATE
                    self._coded[stream.index] = aac
                    self.described.append(f"{name} transcoded to aac")
                if language:
                    (self._copied.get(stream.index) or self._coded[stream.index]).metadata["language"] = language

    def write(self, seconds: float | None = None, offset: Fraction = Fraction(0)) -> None:
        """Mux the audio as it played with the video: the output's video starts at time 0
        with the source's first video frame plus ``offset`` seconds (the first frame coded),
        so each audio packet keeps its time from there. What plays before it gets a negative
        time, which the MP4's edit list skips, as it skips an AAC encoder's priming; of
        that, a copied stream keeps one packet (its decoder's priming), a transcoded one
        none. Audio ``seconds`` or more after the start (None: no end) is left out."""
        import av

        from dualcodec.container import video_stream

        if not (self._copied or self._coded):
            return
        resamplers = {i: av.AudioResampler(format="fltp", layout=s.layout.name, rate=s.rate)
                      for i, s in self._coded.items()}
        with av.open(str(self.source)) as inp:
            video = video_stream(inp)
            start = offset + (Fraction(video.start_time * video.time_base) if video and video.start_time else 0)
            for packet in inp.demux(*inp.streams.audio):
                index = packet.stream.index
                at = packet.pts * packet.time_base - start if packet.pts is not None else None
                late = seconds is not None and at is not None and at >= seconds
                if index in self._copied and packet.dts is not None and not late:
                    if at is not None and packet.duration and at + 2 * packet.duration * packet.time_base <= 0:
                        continue  # ends before the packet that primes the first one heard
                    shift = round(start / packet.time_base)
                    packet.dts -= shift
                    if packet.pts is not None:
                        packet.pts -= shift
                    packet.stream = self._copied[index]
                    self.output.mux(packet)
                elif index in self._coded and not late:  # the empty packet at the end flushes the decoder
                    for frame in packet.decode():
                        self._encode(index, resamplers[index].resample(frame), start)
        for index, resampler in resamplers.items():
            self._encode(index, resampler.resample(None), start)
            self.output.mux(self._coded[index].encode(None))

    def _encode(self, index: int, frames: list, start: Fraction) -> None:
        stream = self._coded[index]
        first = round(start * stream.rate)
        for frame in frames:  # resampled: pts in samples of the source's timeline
            if frame.pts + frame.samples <= first:
                continue  # plays wholly before the first frame coded
            frame.pts -= first
            self.output.mux(stream.encode(frame))
