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

Frames are the source's own 4:2:0 planes from end to end (:mod:`dualcodec.video`); the
layers see them on the unit scale of :func:`dualcodec.yuv.planes_to_unit`, and every
plane the base codec or the output receives is rounded and clamped to code values.
The base layer is coded in the source's bit depth, range and matrix, so ``plain`` is
exactly the base codec on the source's planes.

The encoder runs the decoder's loop: each base-layer packet is decoded as soon as
the encoder releases it, and the side stream of a frame is computed from the original
frame *and* the decoded base frame, exactly what the decoder will have.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import queue
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Protocol

import numpy as np
import torch

from dualcodec.basecodec import (
    BaseCodecSettings,
    BaseDecoder,
    BaseEncoder,
    Planes,
    VideoSignal,
    check_encoder,
    planes_from_tensors,
    planes_to_tensors,
)
from dualcodec.container import ContainerReader, ContainerWriter, Orientation, Tags, played_seconds
from dualcodec.errors import DamagedData, DualcodecError
from dualcodec.header import Header
from dualcodec.model import UV_WEIGHT, Y_WEIGHT, LoadedModel, lmbda_at, load_model, resolve_model_path
from dualcodec.nets.common import bicubic_down, bicubic_up
from dualcodec.outputs import atomic_path
from dualcodec.pipeline import threaded
from dualcodec.sidestream import MSE_LMBDA, MSE_WEIGHT, SIDE_NEW, SIDE_WEIGHT, SideFrame, SideMode
from dualcodec.video import VideoReader, crop_planes, pad_planes
from dualcodec.yuv import YUVFormat, planes_to_unit, unit_scale, unit_to_planes

Pair = tuple[torch.Tensor, torch.Tensor]  # (y [1,1,H,W], uv [1,2,H/2,W/2]) on the unit scale


class Layers(Protocol):
    """What turns full-resolution planes into base planes and side bytes, and back.
    Planes are float tensors on the unit scale (:data:`Pair`)."""

    mode: str
    scale: int
    side_stream: bool  # the file carries a side stream (a data track)

    def down(self, y: torch.Tensor, uv: torch.Tensor) -> Pair:
        """Planes to the base layer's planes, ``1/scale`` of the size (unrounded)."""

    def reset(self) -> None:
        """Forget the previous frame's side data: a stream or a GOP starts."""

    def sides(self, frames: Iterable[tuple[Planes, Planes]], fmt: YUVFormat) -> Iterator[SideFrame | None]:
        """The side stream of each frame (``None``: this mode has no side stream), in
        order, from its padded planes and its decoded base planes (code values of
        ``fmt``); nothing refers across a key frame. It may work on several frames at
        once: ``frames`` is read ahead."""

    def up(self, base: Planes, side: SideFrame | None, fmt: YUVFormat) -> Planes:
        """Decoded base planes (and side stream) to full-size planes: code values in and
        out, so a compiled runtime can do the conversions inside its graph."""


SIDE_METRICS = ("l1", "mse")  # what the encoder's side-stream choices weigh bits against


def code_block_distortion(out: Planes, ref: Planes, block: int, fmt: YUVFormat, metric: str = "l1") -> np.ndarray:
    """:func:`dualcodec.model.block_distortion` (L1, 6:1:1, each ``block x block`` luma
    block's share of the frame's) of two frames' code values, ``[hb, wb]``: integer
    differences, scaled by each plane's range. ``metric="mse"``: each block's share of the
    frame's mean squared error instead (6:1:1, unit scale: what PSNR-YUV reads)."""
    _, y_range, _, c_range, _ = unit_scale(fmt)
    power = SIDE_METRICS.index(metric) + 1

    def sums(a: np.ndarray, b: np.ndarray, size: int) -> np.ndarray:
        # int32 per pixel (code values of up to 15 bits, squared, fit), in place; int64
        # block sums, each block's rows first (a reduction across rows, over whole
        # contiguous rows: vectorised), then the row's blocks (the encoder's hot loop)
        error = np.subtract(a, b, dtype=np.int32)
        error = np.multiply(error, error, out=error) if power == 2 else np.abs(error, out=error)
        h, w = error.shape
        if h % size or w % size:
            error = np.pad(error, ((0, (-h) % size), (0, (-w) % size)))
            h, w = error.shape
        return error.reshape(h // size, size, w).sum(axis=1, dtype=np.int64).reshape(h // size, w // size, size).sum(axis=2)

    ey = sums(out.y, ref.y, block) / (y_range**power * ref.y.size)
    euv = (sums(out.u, ref.u, block // 2) + sums(out.v, ref.v, block // 2)) / (c_range**power * 2 * ref.u.size)
    return (Y_WEIGHT * ey + UV_WEIGHT * euv) / 8.0


def _cores() -> int:
    """The cores this process may run on (all of the machine's where the OS cannot say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def side_lmbda(qp: float) -> float:
    """The encoder's weight of a side-stream bit per pixel against MSE (6:1:1, unit scale)
    on key frames at ``qp``, whatever the model (:data:`~dualcodec.sidestream.MSE_WEIGHT`)."""
    return MSE_WEIGHT * lmbda_at(MSE_LMBDA, qp) ** 2


class _Option(NamedTuple):
    """A candidate of a frame's side choice: its latents (``None``: all zero) and their
    features (``None``: made if chosen), rate cost and distortion (the metric, 6:1:1)."""

    mode: SideMode
    w_hat: torch.Tensor | None
    features: object
    rate: float
    distortion: float
    payload: bytes = b""
    blocks: torch.Tensor | None = None  # SKIP's: each block's share of the distortion


class ModelLayers:
    """The learned layers. ``lmbda`` weighs side-stream bits (per pixel) against the
    distortion ``metric`` (MSE by default, :func:`side_lmbda`; or L1) in the encoder's
    choices on the base layer's key frames, ``inter_weight`` times it on the frames the
    base codec predicts from others; ``level`` is the side level the encoder signals (the
    QP, see :mod:`dualcodec.entropy`)."""

    mode = "dual"

    def __init__(self, loaded: LoadedModel, lmbda: float = 0.0, level: int = 32, runtime="auto",
                 threads: int | None = None, inter_weight: float = 1.0, metric: str = "mse",
                 new: str = "all", up_level: int | None = None) -> None:
        """``runtime``: a name of :data:`dualcodec.runtime.RUNTIMES` or a
        :class:`~dualcodec.runtime.Runtime`; it and ``threads`` run the decoder's networks.
        ``metric``: the distortion ``lmbda`` is weighed against (:data:`SIDE_METRICS`).
        ``new``: the frames that may send NEW latents (:data:`~dualcodec.sidestream.SIDE_NEW`):
        ``"all"``, or ``"key"`` (the base layer's key frames; the others choose between
        REPEAT and SKIP, and their latents are never computed). ``up_level``: the
        quantiser level the upsampler reads, if the model takes one (the file header's; the
        encoder sets it per file, from the base layer's settings)."""
        from dualcodec.entropy import LEVELS
        from dualcodec.model import undecodable
        from dualcodec.runtime import RUNTIMES

        if problem := undecodable(loaded):
            raise DualcodecError(problem)
        if not 0 <= level < LEVELS:
            raise DualcodecError(f"side level {level} is outside 0..{LEVELS - 1} (the QP or CRF sets it)")
        if isinstance(runtime, str) and runtime not in RUNTIMES:
            raise DualcodecError(f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
        if metric not in SIDE_METRICS:
            raise DualcodecError(f"unknown side metric {metric!r} (one of {', '.join(SIDE_METRICS)})")
        if new not in SIDE_NEW:
            raise DualcodecError(f"unknown choice of NEW frames {new!r} (one of {', '.join(SIDE_NEW)})")
        self.loaded, self.metric, self.new = loaded, metric, new
        self.runtime_name, self.threads = runtime, threads
        self._runtime = None  # made at first use (the encoder's choices and the decoder run it)
        self._workers = None  # the pipelined encoder's runtimes (:meth:`sides`), made at first use
        self.model = loaded.model.to(memory_format=torch.channels_last)
        self.scale = loaded.config.scale
        self.side_stream = self.model.has_side_stream
        self.lmbda, self.inter_weight = lmbda, inter_weight
        self.level, self.up_level = level, up_level
        self.reset()

    def reset(self) -> None:
        self._w_hat: torch.Tensor | None = None
        self._features = None  # the decoder's side features of _w_hat
        self._memory = None  # a temporal model's previous frame of the GOP (runtime.FrameMemory)
        self._previous_y: np.ndarray | None = None  # the previous base frame's luma codes (KEEP's classes)

    @property
    def runtime(self):
        """The decoder's :class:`~dualcodec.runtime.Runtime`."""
        if self._runtime is None:
            from dualcodec.runtime import make_runtime

            self._runtime = make_runtime(self.runtime_name, self.loaded, self.threads)
        return self._runtime

    def down(self, y: torch.Tensor, uv: torch.Tensor) -> Pair:
        return self.model.downsample(y, uv)

    def _classes(self, base: Planes, fmt: YUVFormat) -> torch.Tensor:
        """The activity classes of the decoded base luma's code values (encoder and decoder alike)."""
        from dualcodec.entropy import activity_classes

        return activity_classes(torch.from_numpy(base.y.astype("int64"))[None, None], self.model.side_stride, fmt.bit_depth)

    def _change_classes(self, base: Planes, fmt: YUVFormat) -> torch.Tensor:
        """The change classes of the decoded base luma against the previous frame's (KEEP's flags)."""
        from dualcodec.entropy import change_classes

        y, previous = (torch.from_numpy(p.astype("int64"))[None, None] for p in (base.y, self._previous_y))
        return change_classes(y, previous, self.model.side_stride, fmt.bit_depth)

    def side(self, original: Planes, base: Planes, fmt: YUVFormat) -> SideFrame | None:
        """The enhancement layer of one frame: each block enhanced where its latents' bits
        buy more than ``lmbda`` times their cost in the metric (6:1:1), then NEW, REPEAT,
        KEEP or SKIP for the frame by ``D + lmbda * bits / pixel`` (``lmbda`` times
        ``inter_weight`` unless the base frame is a key frame); KEEP keeps the previous
        latents in each block where that costs less than clearing them, flag bits
        included. The candidates are judged on what the decoder will show (the
        runtime's output code values): SKIP, every block enhanced, and REPEAT of the
        kept latents are run; a NEW frame that enhances some blocks only, or a KEEP
        frame, takes each block's distortion from those runs. The latents come from the
        runtime's analysis graph (compiled fp32 with OpenVINO)."""
        if not self.side_stream:
            return None
        return self._choose(self.runtime, self._candidates(self.runtime, original, base, fmt), original, base, fmt)

    def sides(self, frames: Iterable[tuple[Planes, Planes]], fmt: YUVFormat) -> Iterator[SideFrame | None]:
        """:meth:`side` of each (original, decoded base) pair, in order, a key frame
        starting afresh. With OpenVINO the candidates of several frames (all of
        :meth:`side` but REPEAT and the choice, which follow the previous frame's) are
        computed at once on ``threads`` worker threads (default: one per core), each
        running 1-thread graphs of its own, while the caller goes on with the next
        frames' base layer: the choices are those of a 1-thread encoder, whatever the
        thread count. Other runtimes run :meth:`side` frame by frame."""
        runtimes = self._worker_runtimes()
        if runtimes is None:
            for original, base in frames:
                if base.key_frame:
                    self.reset()
                yield self.side(original, base, fmt)
            return
        # One runtime per stream of the graphs, lent to one user at a time (a worker, or
        # the choice where it runs a network): no two runs share a stream.
        free: queue.SimpleQueue = queue.SimpleQueue()
        for runtime in runtimes:
            free.put(runtime)

        def lent(work):
            runtime = free.get()
            try:
                return work(runtime)
            finally:
                free.put(runtime)

        def candidates(original: Planes, base: Planes) -> list[_Option]:
            with torch.inference_mode():
                return lent(lambda runtime: self._candidates(runtime, original, base, fmt))

        def choose(job) -> SideFrame:
            future, original, base = job
            options = future.result()
            if base.key_frame:
                self.reset()
            if self._w_hat is None and all(option.features is not None for option in options):
                return self._choose(None, options, original, base, fmt)  # no network to run
            return lent(lambda runtime: self._choose(runtime, options, original, base, fmt))

        pending: deque = deque()
        with ThreadPoolExecutor(len(runtimes), thread_name_prefix="dualcodec-side") as pool:
            try:
                for original, base in frames:
                    pending.append((pool.submit(candidates, original, base), original, base))
                    while len(pending) > len(runtimes):  # the workers' frames, and the caller's next
                        yield choose(pending.popleft())
                while pending:
                    yield choose(pending.popleft())
            finally:  # a failure or an early stop: what is queued is not run
                for future, *_ in pending:
                    future.cancel()

    def _worker_runtimes(self) -> list | None:
        """For :meth:`sides`: one runtime per worker (OpenVINO graphs of one stream per
        worker, one thread each; made once, kept for the next file); ``None`` for any
        other runtime."""
        from dualcodec.runtime import OpenVINORuntime

        runtime = self.runtime
        if not self.side_stream or not isinstance(runtime, OpenVINORuntime):
            return None
        if self._workers is None:
            workers = self.threads or _cores()
            int8 = runtime.name == "openvino-int8"
            self._workers = [OpenVINORuntime(self.loaded, int8=int8, threads=1, streams=workers) for _ in range(workers)]
        return self._workers

    def _distortion(self, runtime, features, original: Planes, base: Planes, fmt: YUVFormat) -> torch.Tensor:
        """Each block's share of the frame's distortion (the metric, 6:1:1) as the decoder reconstructs it."""
        out = Planes(*runtime.upsample(base.y, base.u, base.v, features, fmt, self.up_level))
        block = self.model.side_stride * self.scale
        return torch.from_numpy(code_block_distortion(out, original, block, fmt, self.metric))

    def _candidates(self, runtime, original: Planes, base: Planes, fmt: YUVFormat) -> list[_Option]:
        """SKIP, and NEW where some block is worth its bits: what a frame's choice needs
        besides the previous frame's latents (it keeps no state)."""
        h, w = base.y.shape
        skip_features = runtime.side_features(None, h, w)
        skipped = self._distortion(runtime, skip_features, original, base, fmt)
        # a frame's blocks add up to its distortion
        options = [_Option(SideMode.SKIP, None, skip_features, 0.0, float(skipped.sum()), blocks=skipped)]
        if self.new == "key" and not base.key_frame:
            return options
        coder = self.model.latent_coder
        pixels = original.y.size
        classes = self._classes(base, fmt)
        q = coder.quantize(runtime.analyse((original.y, original.u, original.v), (base.y, base.u, base.v), fmt),
                           self.level)
        lmbda = self.lmbda * (1.0 if base.key_frame else self.inter_weight)
        if bool(q.any()):  # all-zero latents are SKIP's
            full_w = coder.dequantize(q, self.level)
            full_features = runtime.side_features(full_w, h, w)
            full = self._distortion(runtime, full_features, original, base, fmt)
            enhanced = skipped - full > lmbda * coder.block_bits(q, classes, self.level)[0] / pixels
            if bool(enhanced.any()):
                payload = coder.compress(q, classes, self.level, enhanced)
                # Each block as the full or the skipped reconstruction has it (as in
                # training); the latents' features are made only if NEW is chosen.
                w_hat, features = (full_w, full_features) if bool(enhanced.all()) else (coder.dequantize(q * enhanced, self.level), None)
                options.append(_Option(SideMode.NEW, w_hat, features, lmbda * 8 * len(payload) / pixels,
                                       float(torch.where(enhanced, full, skipped).sum()), payload))
        return options

    def _choose(self, runtime, options: list[_Option], original: Planes, base: Planes, fmt: YUVFormat) -> SideFrame:
        """The frame's mode among ``options``, REPEAT of the kept latents and KEEP of some
        of them; keeps the choice's. ``runtime`` runs REPEAT and the chosen latents'
        features (unused, and may be ``None``, when nothing is kept and every option has
        its features)."""
        if self._w_hat is not None:  # None at the first frame and at every key frame
            repeated = self._distortion(runtime, self._features, original, base, fmt)
            options = [*options, _Option(SideMode.REPEAT, self._w_hat, self._features, 0.0, float(repeated.sum()))]
            keep = self._keep(options[0].blocks, repeated, original, base, fmt)
            if keep is not None:
                options.append(keep)
        choice = min(options, key=lambda option: option.distortion + option.rate)
        self._w_hat, self._features = choice.w_hat, choice.features
        if self._features is None:
            self._features = runtime.side_features(self._w_hat, *base.y.shape)
        self._previous_y = base.y
        return SideFrame(choice.mode, choice.payload)

    def _keep(self, skipped: torch.Tensor, repeated: torch.Tensor, original: Planes, base: Planes,
              fmt: YUVFormat) -> _Option | None:
        """KEEP: each block keeps the previous latents where its distortion plus its flag's
        cost is less than clearing them (the flags' probabilities, per change class, refined
        from the choices twice); ``None`` where every block or none would keep (REPEAT's and
        SKIP's, cheaper)."""
        from dualcodec.entropy import CHANGE_CLASSES, compress_keep, keep_flag_bits, keep_probabilities

        classes = self._change_classes(base, fmt)
        price = self.lmbda * self.inter_weight / original.y.size  # per bit, as _candidates' NEW on these frames
        probabilities = [128] * CHANGE_CLASSES
        for _ in range(3):
            bits = keep_flag_bits(probabilities)[classes[0]]  # [hb, wb, (cleared, kept)]
            kept = repeated + price * bits[..., 1] < skipped + price * bits[..., 0]
            probabilities = keep_probabilities(kept, classes)
        if bool(kept.all()) or not bool(kept.any()):
            return None
        payload = compress_keep(kept, classes, probabilities)
        return _Option(SideMode.KEEP, self._w_hat * kept, None, price * 8 * len(payload),
                       float(torch.where(kept, repeated, skipped).sum()), payload)

    def up(self, base: Planes, side: SideFrame | None, fmt: YUVFormat) -> Planes:
        """Raises :class:`~dualcodec.errors.DamagedData` for a NEW payload that does not
        parse (the decoder then conceals the frame with SKIP). The latents are decoded
        with classes from the base luma's code values, before any network runs."""
        runtime = self.runtime
        h, w = base.y.shape
        mode = side.mode if side is not None and self.side_stream else SideMode.SKIP
        if mode == SideMode.NEW:
            self._w_hat = self.model.latent_coder.decompress(side.entropy_bytes, self._classes(base, fmt)).w_hat
            self._features = runtime.side_features(self._w_hat, h, w)
        elif mode == SideMode.KEEP:
            from dualcodec.entropy import decompress_keep

            if self._w_hat is None:
                raise DamagedData("it keeps latents that the previous frame did not have")
            self._w_hat = self._w_hat * decompress_keep(side.entropy_bytes, self._change_classes(base, fmt))
            self._features = runtime.side_features(self._w_hat, h, w)
        elif mode == SideMode.SKIP or self._features is None:
            self._w_hat, self._features = None, runtime.side_features(None, h, w)
        out = Planes(*runtime.upsample(base.y, base.u, base.v, self._features, fmt, self.up_level, self._memory))
        self._previous_y = base.y
        if self.model.temporal:
            from dualcodec.runtime import FrameMemory

            self._memory = FrameMemory((base.y, base.u, base.v), (out.y, out.u, out.v))
        return out


class BicubicLayers:
    """Bicubic per plane: antialiased down, the same codec, up."""

    mode = "bicubic"
    side_stream = False

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def down(self, y, uv) -> Pair:
        return bicubic_down(y, self.scale), bicubic_down(uv, self.scale)

    def reset(self) -> None:
        pass

    def sides(self, frames, fmt) -> Iterator[SideFrame | None]:
        return (None for _ in frames)

    def up(self, base: Planes, side: SideFrame | None, fmt) -> Planes:
        y, uv = to_unit(base, fmt)
        return to_planes(bicubic_up(y, self.scale), bicubic_up(uv, self.scale), fmt)


class PlainLayers:
    """The base codec alone on the source's planes."""

    mode = "plain"
    scale = 1
    side_stream = False

    def down(self, y, uv) -> Pair:
        return y, uv

    def reset(self) -> None:
        pass

    def sides(self, frames, fmt) -> Iterator[SideFrame | None]:
        return (None for _ in frames)

    def up(self, base: Planes, side: SideFrame | None, fmt) -> Planes:
        return base


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
    mode: str = "plain"  # the file's: "dual", "bicubic" or "plain"
    scale: int = 1
    choice: str | None = None  # why --scale auto chose this mode and scale
    # The frames the source's container announced for what was asked (its count or its
    # duration, from the start frame on, at most the frames asked for; None: unknown)
    announced: int | None = None
    # The source's pixel format where the reader converted it to the coded planes (4:2:2,
    # 4:4:4, 12 bits, RGB, grey: "yuv444p"), and their bit depth; None: coded as it came
    converted_from: str | None = None
    bit_depth: int = 8

    @property
    def cut_short(self) -> bool:
        """Whether the source ended before the frames it announced (more than one short:
        a duration's rounding is not a truncated file)."""
        return self.announced is not None and self.frames < self.announced - 1


def _padded_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """Pad to a multiple of 2*scale so the base layer has even (4:2:0) dimensions."""
    m = 2 * scale
    return width + (-width) % m, height + (-height) % m


def to_unit(planes: Planes, fmt: YUVFormat) -> Pair:
    """A frame's planes as float tensors on the unit scale."""
    return planes_to_unit(*planes_to_tensors([planes]), fmt)


def to_planes(y: torch.Tensor, uv: torch.Tensor, fmt: YUVFormat) -> Planes:
    """Unit-scale tensors back to code values, rounded and clamped to the format's range."""
    return planes_from_tensors(*unit_to_planes(y, uv, fmt), fmt)[0]


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

    @property
    def model_path(self) -> Path | None:
        """The model file of the learned layers (``None`` for a baseline)."""
        loaded = getattr(self.layers, "loaded", None)
        return loaded.path if loaded else None

    def _header(self, width: int, height: int, settings: BaseCodecSettings) -> Header:
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
            codec=settings.codec,
            bit_depth=settings.bit_depth,
            full_range=settings.full_range,
            matrix=settings.matrix,
            model_name=loaded.name if loaded else None,
            model_fingerprint=loaded.fingerprint if loaded else None,
            level=settings.level if loaded and loaded.model.takes_level else None,
        )

    def encode(
        self, source: Path, destination: Path, progress: bool = False, max_frames: int | None = None,
        desc: str = "encode", start: int = 0, tags: bool = True, rate: Fraction | None = None,
        bit_depth: int | None = None,
    ) -> EncodeReport:
        """Encode the file ``source`` from frame ``start`` on (at most ``max_frames`` frames,
        with its audio from that frame's time) into the MP4 ``destination``:
        :meth:`compress`'s coding, read from and written to files. ``tags``: carry the
        source's creation time, title and languages (:class:`~dualcodec.container.Tags`).
        ``rate``: a folder of frames'; ``bit_depth``: code at 8 or 10 bits whatever the
        source's (``None``: the source's; :class:`~dualcodec.video.VideoReader`)."""
        began = time.time()
        reader = VideoReader(source, rate, bit_depth)
        info = reader.info
        span = info.span(start, max_frames)
        with atomic_path(Path(destination)) as tmp:
            frames, audio = self._write(reader.frames(start), info.width, info.height, info.format, info.rate, tmp,
                                        str(source), max_frames, progress, desc, total=span,
                                        audio_from=Path(source) if info.has_audio else None,
                                        orientation=info.orientation, time_base=info.time_base,
                                        tags=info.tags if tags else Tags(), signal=info.signal)
            # Count the bytes as stored: the MP4 muxer rewrites H.264/HEVC start codes as
            # length prefixes, so the encoder's packet sizes are not the file's.
            sizes = ContainerReader(tmp).sizes()
        return dataclasses.replace(self._report(frames, info.width, info.height, sizes, time.time() - began, audio),
                                   announced=span, converted_from=info.source_pix_fmt if info.converted else None,
                                   bit_depth=info.format.bit_depth)

    def compress(self, frames: Iterable[Planes], fmt: YUVFormat, rate: Fraction = Fraction(25)) -> bytes:
        """In memory, as CompressAI's ``compress``: 4:2:0 frames of ``fmt`` (all of one size)
        to the bytes of a dualcodec MP4, which :func:`decompress` turns back into frames."""
        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            raise DualcodecError("no frame to compress")
        buffer = io.BytesIO()
        self._write(itertools.chain([first], frames), first.width, first.height, fmt, Fraction(rate), buffer,
                    "the frames")
        return buffer.getvalue()

    def _report(self, frames: int, width: int, height: int, sizes, seconds: float, audio) -> EncodeReport:
        scale = self.layers.scale
        pw, ph = _padded_size(width, height, scale)
        return EncodeReport(frames, width, height, pw // scale, ph // scale, sizes.base_bytes, sizes.side_bytes,
                            sizes.file_bytes, seconds, tuple(audio), self.layers.mode, scale)

    @torch.inference_mode()
    def _write(self, frames: Iterator[Planes], width: int, height: int, fmt: YUVFormat, rate: Fraction, target,
               name: str, max_frames: int | None = None, progress: bool = False, desc: str = "encode",
               total: int | None = None, audio_from: Path | None = None, orientation: Orientation = Orientation(),
               time_base: Fraction | None = None, tags: Tags = Tags(),
               signal: VideoSignal = VideoSignal()) -> tuple[int, list[str]]:
        """Code ``frames`` into the MP4 ``target`` (a path or a writable binary buffer), its
        base-layer track flagged with the source's display ``orientation`` and ``signal``
        (colour, sample aspect ratio), the file carrying its ``tags``; the frame count and
        what became of each audio stream of ``audio_from``. ``time_base``: stamp each frame
        with its own :attr:`~dualcodec.basecodec.Planes.time` in these units (a source whose
        frames do not come at a constant rate), else with its index over ``rate``."""
        import av

        settings = dataclasses.replace(self.settings, bit_depth=fmt.bit_depth, full_range=fmt.full_range,
                                       matrix=fmt.matrix, signal=signal)
        settings.check_quantiser()
        header = self._header(width, height, settings)
        pw, ph = _padded_size(width, height, header.scale)
        if isinstance(self.layers, ModelLayers):
            self.layers.up_level = header.level  # what the decoder will read
        self.layers.reset()
        count, audio = 0, []
        try:
            writer = ContainerWriter(target, header, settings, rate, side_stream=self.layers.side_stream,
                                     orientation=orientation, time_base=time_base, tags=tags)
            try:
                audio = writer.add_audio_streams(audio_from, self.audio, tags) if audio_from is not None else []
                encoder = BaseEncoder(settings, header.base_width, header.base_height, rate, writer.video_codec_context,
                                      time_base, writer.times)
                loop = _ClosedLoop(self.layers, writer, encoder, fmt)
                origin = Fraction(0)  # the source's time of the first frame coded, where the output's 0 is
                with _progress(total, desc, progress) as bar:
                    def padded() -> Iterator[Planes]:
                        nonlocal count, origin
                        for planes in frames:
                            if max_frames is not None and count >= max_frames:
                                break
                            if (planes.width, planes.height) != (width, height):
                                raise DualcodecError(f"{name}: frame {count + 1} is {planes.width}x{planes.height}, "
                                                     f"the first was {width}x{height}")
                            if count == 0 and planes.time is not None:
                                origin = planes.time
                            if writer.times is not None:  # the frame's own time, after the one before
                                after = writer.times[-1] + 1 if writer.times else 0
                                own = (round((planes.time - origin) / time_base) if planes.time is not None
                                       else after - 1 + writer.ticks_per_frame if writer.times else 0)
                                writer.times.append(max(own, after))
                            yield pad_planes(planes, pw, ph)
                            count += 1
                            bar.update()

                    # the side stream of each frame once its base is decoded (several frames at once)
                    for side in self.layers.sides(loop.pairs(padded()), fmt):
                        if side is not None:
                            writer.mux_side(side)
                writer.copy_audio(float(played_seconds(count, rate, time_base, writer.times)), origin)
            finally:
                writer.close()
        except av.FFmpegError as exc:  # the base encoder or the muxer
            raise DualcodecError(f"{name}: encoding failed ({exc.__class__.__name__}: {exc})") from None
        return count, audio


class _ClosedLoop:
    """Feeds frames to the base encoder and decodes its packets as it releases them,
    muxing them: :meth:`pairs` yields each frame with its decoded base, in order."""

    def __init__(self, layers: Layers, writer: ContainerWriter, encoder: BaseEncoder, fmt: YUVFormat) -> None:
        self.layers, self.writer, self.encoder, self.fmt = layers, writer, encoder, fmt
        self.decoder: BaseDecoder | None = None
        self.pending: deque[Planes] = deque()  # sent to the base encoder, not yet decoded

    def pairs(self, frames: Iterable[Planes]) -> Iterator[tuple[Planes, Planes]]:
        """(padded original, decoded base) of each of ``frames``, once the base encoder has released it."""
        for planes in frames:
            self.pending.append(planes)
            yield from self._packets(self.encoder.encode(to_planes(*self.layers.down(*to_unit(planes, self.fmt)), self.fmt)))
        yield from self._packets(self.encoder.encode(None))
        if self.decoder is not None:
            yield from self._decoded(self.decoder.decode(None))
        if self.pending:
            raise DualcodecError(f"base layer lost {len(self.pending)} frames in the encoder")

    def _packets(self, packets: list) -> Iterator[tuple[Planes, Planes]]:
        for packet in packets:
            if self.decoder is None:
                s = self.encoder.settings
                self.decoder = BaseDecoder(s.codec, s.bit_depth, self.encoder.codec_context.extradata)
            decoded = self.decoder.decode(packet)  # decode before muxing: muxing consumes the packet
            self.writer.mux_base([packet])
            yield from self._decoded(decoded)

    def _decoded(self, decoded: list[Planes]) -> Iterator[tuple[Planes, Planes]]:
        for planes in decoded:
            yield self.pending.popleft(), planes


def layers_for_header(header: Header, model: str | None, runtime: str = "auto", threads: int | None = None) -> Layers:
    """The layers that decode a file, checking that the model matches the one it was made
    with; ``runtime`` and ``threads`` run its networks (:mod:`dualcodec.runtime`)."""
    if header.mode == "bicubic":
        return BicubicLayers(header.scale)
    if header.mode == "plain":
        return PlainLayers()
    if header.version == 1:
        raise DualcodecError("this is a format version 1 dual-layer file, whose learned layers worked in R'G'B'; "
                             "this dualcodec's models code 4:2:0 planes and cannot decode it (dualcodec 0.1 can)")
    if header.version == 2:
        raise DualcodecError("this is a format version 2 dual-layer file, whose side stream was a factorised latent; "
                             "this dualcodec's side stream is an enhancement layer and cannot decode it "
                             "(dualcodec 0.2 can)")
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
    if loaded.model.takes_level and header.level is None:
        raise DualcodecError(f"model {loaded.name!r} reads the base layer's quantiser level, which the file's "
                             "header does not carry")
    layers = ModelLayers(loaded, runtime=runtime, threads=threads, up_level=header.level)
    layers.runtime  # made now: a runtime that cannot run fails before the first frame
    return layers


@dataclass
class DecodedVideo:
    header: Header
    rate: object
    frames: Iterator[Planes]
    damaged: set[int]  # 0-based indices of the frames concealed so far (see ContainerReader)
    orientation: Orientation = Orientation()  # how players turn the frames to show them (they are as stored)
    # For frames that do not come at a constant rate: the unit, and each frame's time stamp
    # from the first frame shown (None: frame index over the rate)
    time_base: Fraction | None = None
    times: list[int] | None = None
    start_time: Fraction = Fraction(0)  # seconds from the file's first frame to the first one decoded (a seek)
    length: int | None = None  # how many frames ``frames`` gives, where the container's index says
    signal: VideoSignal = VideoSignal()  # the base layer's colour and sample aspect ratio, as the source's

    @property
    def format(self) -> YUVFormat:
        """The frames' format: the source's bit depth, range and matrix."""
        return self.header.yuv_format


def decode(source: Path, model: str | None = None, strict: bool = False, runtime: str = "auto",
           threads: int | None = None, start: int = 0) -> DecodedVideo:
    """Open a dualcodec file (or a plain video without the header: mode plain); frames are
    :class:`Planes` at the original size, in the source's format. Damage is concealed
    unless ``strict``. ``runtime`` runs the learned layers (:data:`dualcodec.runtime.RUNTIMES`)
    on ``threads`` threads (``None``: the runtime's default). ``start``: seek; the frames
    from frame ``start`` (0-based) on, decoded from the last key frame before it, the
    same frames as a decode from the beginning gives (every GOP decodes on its own).
    :func:`decompress` does the same from bytes in memory."""
    return _decoded(ContainerReader(Path(source), strict=strict, start=start), model, runtime, threads)


def decompress(data: bytes, model: str | None = None, strict: bool = False, runtime: str = "auto",
               threads: int | None = None, start: int = 0) -> DecodedVideo:
    """In memory, as CompressAI's ``decompress``: the bytes of a dualcodec MP4 (what
    :meth:`LayeredCodec.compress` returns, or a whole file) back to frames."""
    return _decoded(ContainerReader(bytes(data), strict=strict, start=start), model, runtime, threads)


def _decoded(reader: ContainerReader, model: str | None, runtime: str, threads: int | None) -> DecodedVideo:
    header = reader.header
    layers = layers_for_header(header, model, runtime, threads)
    return DecodedVideo(header, reader.rate, _decode_frames(reader, layers), reader.damaged, reader.orientation,
                        reader.time_base, reader.times, reader.start_time, reader.length, reader.signal)


def _decode_frames(reader: ContainerReader, layers: Layers) -> Iterator[Planes]:
    """Three stages on their own threads (:mod:`dualcodec.pipeline`): the container and
    the base decoder, then the side stream and the networks, then the consumer."""
    header = reader.header
    gops = header.version >= 2  # version 1 files could repeat latents across a key frame

    def up(planes: Planes, side: SideFrame | None, index: int) -> Planes:
        if gops and planes.key_frame:
            layers.reset()
        try:
            out = layers.up(planes, side, header.yuv_format)
        except DamagedData as exc:
            reader.record_damage(index, f"side stream of frame {index + 1} is damaged: {exc}")
            out = layers.up(planes, SideFrame(SideMode.SKIP), header.yuv_format)
        return crop_planes(out, header.width, header.height)

    frames = ((up(planes, side, index), index) for index, (planes, side)
              in enumerate(threaded(_base_and_side(reader)), start=reader.first))
    # Seeking: the frames from the key frame to the start are decoded (a temporal model's
    # memory, a repeated side packet) but not shown.
    return threaded((out for out, index in frames if index >= reader.start), setup=torch.inference_mode)


def _base_and_side(reader: ContainerReader) -> Iterator[tuple[Planes, SideFrame | None]]:
    """Each decoded base frame with its side-stream packet; a missing packet, or one that
    repeats across a key frame, is recorded as damage and becomes SKIP."""
    header = reader.header
    payloads = reader.side_frames() if header.mode == "dual" and reader.has_side_stream else None
    gops = header.version >= 2  # version 1 files could repeat latents across a key frame
    for index, planes in enumerate(reader.base_frames(), start=reader.first):
        side = None
        if payloads is not None:
            side = next(payloads, None)
            if side is None:
                reader.record_damage(index, f"side stream ends before frame {index + 1}")
                side, payloads = SideFrame(SideMode.SKIP), None
            elif gops and planes.key_frame and side.mode in (SideMode.REPEAT, SideMode.KEEP):
                reader.record_damage(index, f"side stream of frame {index + 1} repeats across a key frame")
                side = SideFrame(SideMode.SKIP)
            elif side.mode == SideMode.KEEP and header.version < 4:
                reader.record_damage(index, f"side stream of frame {index + 1} keeps latents, which format "
                                            f"version {header.version} has not")
                side = SideFrame(SideMode.SKIP)
        yield planes, side


SIBLINGS = {1: "_x1", 4: "_x4"}  # built-in models that go with a built-in model NAME: NAME_x1, NAME_x4


def model_family(model: str) -> dict[int, LoadedModel]:
    """The models ``--scale`` chooses among, by scale: a built-in model with its built-in
    siblings of the other scales (``default``: ``default_x1``, ``default_x4``), or one model file."""
    from dualcodec.model import BUILTIN_DIR

    loaded = load_model(model)
    family = {loaded.config.scale: loaded}
    if (BUILTIN_DIR / f"{model}.pt").is_file():
        for scale, suffix in SIBLINGS.items():
            path = BUILTIN_DIR / f"{model}{suffix}.pt"
            if scale not in family and path.is_file():
                sibling = load_model(str(path))
                if sibling.config.scale == scale:
                    family[scale] = sibling
    return family


def make_codec(settings: BaseCodecSettings, baseline: str | None, model: str, scale: int | str | None = "auto",
               audio: str = "auto", runtime: str = "auto", threads: int | None = None,
               side_weight: float = SIDE_WEIGHT, side_new: str = "key"):
    """The codec the command line asks for: a learned model, a baseline, or (``scale="auto"``,
    the default with a model) the choice between the plain codec and the family's models
    that downscale (:func:`model_family`; its scale-1 model only where it has no other),
    file by file (:class:`dualcodec.auto.AutoCodec`). A scale-1 model codes the plain
    codec's base layer plus a side stream at full resolution: the dearest trial, and on
    the shared content never the one kept.
    ``scale=1`` is the family's scale-1 model, or the plain codec where it has none. Its
    settings are checked against the real encoder first. ``runtime`` and ``threads`` run
    the decoder's networks inside the encoder's loop (:class:`ModelLayers`). ``side_weight``
    multiplies the side bits' weight in the encoder's side-stream choices on the frames
    the base codec predicts (:data:`~dualcodec.sidestream.SIDE_WEIGHT`); ``side_new`` says
    which frames may send NEW latents (:data:`~dualcodec.sidestream.SIDE_NEW`)."""
    if not side_weight > 0:
        raise DualcodecError(f"the side weight must be positive, got {side_weight}")
    check_encoder(settings)
    plain = LayeredCodec(PlainLayers(), settings, audio)
    if baseline == "bicubic":
        if scale == 1:
            raise DualcodecError("--baseline bicubic needs a scale of 2 or 4")
        return LayeredCodec(BicubicLayers(2 if scale in (None, "auto") else scale), settings, audio)
    if baseline == "none":
        return plain
    family = model_family(model)
    if scale == 1 and 1 not in family:
        return plain
    qp = settings.qp if settings.qp is not None else settings.crf

    def learned(loaded: LoadedModel) -> LayeredCodec:
        layers = ModelLayers(loaded, side_lmbda(qp), level=round(qp), runtime=runtime, threads=threads,
                             inter_weight=side_weight, new=side_new)
        return LayeredCodec(layers, settings, audio)

    if scale not in (None, "auto"):
        if scale not in family:
            name = next(iter(family.values())).name
            raise DualcodecError(f"model {name!r} is {', '.join(f'{s}x' for s in sorted(family))}, not {scale}x "
                                 f"(pick a {scale}x model)")
        return learned(family[scale])
    from dualcodec.auto import AutoCodec

    scales = [s for s in sorted(family) if s > 1] or sorted(family)
    return AutoCodec(plain, [learned(family[s]) for s in scales])
