"""Runtimes for the decoder's per-pixel networks: eager PyTorch (the reference) and OpenVINO.

The decoder runs two graphs, both made of the model's own modules:

    SideGraph  w_hat [1,M,hb,wb] --g_s, side_inputs--> t [1,h,w,C] (channels last), r_y, r_uv   (NEW frames only)
    UpGraph    y [1,1,h,w], uv [1,2,h/2,w/2] (base code values), t, r_y, r_uv
               (a temporal model: then the previous frame's base y, uv and output y, uv, code
               values, and present [1], 0 at a GOP's first frame: :class:`FrameMemory`)
                 --unit scale, upsampler, code values, round, clamp-->
               y [1,1,H,W], uv [1,2,H/2,W/2] (code values)

and the encoder a third, for its side-stream choices:

    AnalysisGraph  y, uv (the original's code values), y, uv (the decoded base's), the
                   format's numbers --unit scale, g_a--> w [1,M,hb,wb]

so a SKIP or REPEAT frame costs the upsampler alone (:class:`SideFeatures` of the all-zero
latents are computed once per frame size; the side graph works on whole latent blocks,
and its outputs are cropped to the upsampler's grid for the base layer once, here). ``t`` passes between
the graphs channels last, the layout OpenVINO's convolutions work in: as ``[1,C,h,w]``
each graph would reorder it (the side graph's output, and the up graph's input on every
frame). Both graphs see code values, so the format's
offsets, rounding and clamping run inside the compiled graph, not in eager torch.

Runtimes (:func:`make_runtime`):

- ``torch``: the modules themselves, eager, fp32: the reference path and the training path.
- ``openvino``: the same modules traced by ``openvino.convert_model`` at first use (fp32,
  ``INFERENCE_PRECISION_HINT f32``: on a CPU with bf16 OpenVINO would otherwise run bf16).
- ``openvino-int8``: graphs whose feature convolutions are int8, calibrated on real frames by
  ``dualcodec export`` (:mod:`dualcodec.export`) and saved beside the model file as ``NAME.int8/``, with the
  fingerprint of the weights they were built from; a stale set is refused. The encoder's
  analysis graph stays fp32 (it decides what is sent, the decoder never runs it).
- ``auto``: ``openvino-int8`` where the model has int8 graphs of its fingerprint and of
  this :data:`GRAPHS_VERSION` (the built-in models ship them), else ``openvino``, or ``torch`` where the openvino package is not installed.

What selects an entropy-coding table never passes through a runtime (the latents are
decoded before the networks run, from integer activity classes), so the side latents
are the same bits whichever runtime decodes them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from dualcodec.errors import DualcodecError
from dualcodec.model import DualLayerModel, LoadedModel
from dualcodec.nets.upsampler import Memory, SideInputs
from dualcodec.yuv import YUVFormat, codes_to_unit, unit_scale, unit_to_codes

RUNTIMES = ("auto", "torch", "openvino", "openvino-int8")
INT8_SUFFIX = ".int8"  # NAME.pt -> NAME.int8/{side,up}.{xml,bin}, meta.json
GRAPHS_VERSION = 3  # the graphs' inputs and outputs; 3: t channels last; 2: side inputs (t, r_y, r_uv); 1: (s, r)


@dataclass(frozen=True)
class SideFeatures:
    """One frame's side inputs to the upsampler (float32, batch 1, on the upsampler's grid of the base layer):
    :class:`~dualcodec.nets.upsampler.SideInputs` as the graphs pass them (``t`` channels
    last, ``[1,h,w,C]``), ``None`` where absent."""

    t: np.ndarray | None
    r_y: np.ndarray | None
    r_uv: np.ndarray | None

    def arrays(self) -> list[np.ndarray]:
        return [a for a in (self.t, self.r_y, self.r_uv) if a is not None]


@dataclass(frozen=True)
class FrameMemory:
    """What a temporal model's upsampler keeps of the previous frame of the GOP: its
    decoded base planes and the output planes, ``(y, u, v)`` code values each."""

    base: tuple[np.ndarray, np.ndarray, np.ndarray]
    output: tuple[np.ndarray, np.ndarray, np.ndarray]

    def arrays(self) -> list[np.ndarray]:
        """The up graph's memory inputs (:data:`MEMORY_INPUTS` of them): present."""
        return [*_plane_arrays(*self.base), *_plane_arrays(*self.output), np.ones(1, np.float32)]

    @staticmethod
    def absent(y: np.ndarray, scale: int) -> list[np.ndarray]:
        """The memory inputs for a GOP's first frame of base luma ``y``: zeros, not present."""
        h, w = y.shape
        zeros = np.zeros((h, w), np.float32)
        big = np.zeros((scale * h, scale * w), np.float32)
        return [*_plane_arrays(zeros, zeros[::2, ::2], zeros[::2, ::2]),
                *_plane_arrays(big, big[::2, ::2], big[::2, ::2]), np.zeros(1, np.float32)]


COMPILED_SIZES = 1  # frame sizes a compiled graph is kept for; another size compiles again (0.05-1 s)
MEMORY_INPUTS = 5  # base y, uv; output y, uv; present


class SideGraph(nn.Module):
    """``g_s`` and the upsampler's side inputs of decoded latents, on whole latent blocks."""

    def __init__(self, model: DualLayerModel) -> None:
        super().__init__()
        self.g_s = model.g_s
        self.upsampler = model.upsampler

    def forward(self, w_hat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return graph_side(self.upsampler.side_inputs(*self.g_s(w_hat)))


def graph_side(side: SideInputs) -> tuple[torch.Tensor, ...]:
    """Side inputs as the graphs pass them: ``t`` channels last, the absent ones left out."""
    t, r_y, r_uv = side
    return tuple(a for a in (None if t is None else t.permute(0, 2, 3, 1), r_y, r_uv) if a is not None)


def _model_side(side: tuple[torch.Tensor, ...]) -> SideInputs:
    """:func:`graph_side` undone."""
    t, r_y, r_uv = (*side, None, None, None)[:3]
    return SideInputs(None if t is None else t.permute(0, 3, 1, 2), r_y, r_uv)


class UpGraph(nn.Module):
    """Base code values, the format's numbers (:func:`~dualcodec.yuv.unit_scale`, ``[5]``)
    and side inputs (on the upsampler's grid) to output code values (rounded and clamped
    floats). ``rows``: the upsampler's strips (``None`` for a compiled graph)."""

    def __init__(self, model: DualLayerModel, rows: int | None = 32) -> None:
        super().__init__()
        self.model = model
        self.rows = rows

    def forward(self, y: torch.Tensor, uv: torch.Tensor, scale: torch.Tensor,
                *rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``rest``: the side inputs, then (a temporal model) the memory's :data:`MEMORY_INPUTS`."""
        level = scale[5:6] if self.model.takes_level else None  # the numbers' sixth: the quantiser
        memory = None
        if self.model.temporal:
            rest, (y_lr, uv_lr, y_prev, uv_prev, present) = rest[:-MEMORY_INPUTS], rest[-MEMORY_INPUTS:]
            memory = Memory(*codes_to_unit(y_lr, uv_lr, scale), *codes_to_unit(y_prev, uv_prev, scale), present)
        y_hat, uv_hat = self.model.upsample_with(*codes_to_unit(y, uv, scale), _model_side(rest), level, rows=self.rows,
                                                 memory=memory)
        y_out, uv_out = unit_to_codes(y_hat, uv_hat, scale)
        top = scale[4]
        return torch.minimum(torch.round(y_out).clamp_min(0.0), top), torch.minimum(torch.round(uv_out).clamp_min(0.0), top)


class Runtime(Protocol):
    """Runs the decoder's networks on one frame (see the module docstring)."""

    name: str

    def side_features(self, w_hat: torch.Tensor | None, lr_height: int, lr_width: int) -> SideFeatures:
        """Features of decoded latents ``w_hat`` ``[1,M,hb,wb]`` (``None``: all zero)."""

    def upsample(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, side: SideFeatures,
                 fmt: YUVFormat, level: int | None = None,
                 memory: FrameMemory | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Base planes (code values) to full-size planes (code values, the planes' dtype);
        ``level``: the base layer's quantiser, for a model that takes it (the header's);
        ``memory``: the previous frame of the GOP, for a temporal model (``None``: the GOP's first)."""

    def analyse(self, original: tuple[np.ndarray, np.ndarray, np.ndarray], base: tuple[np.ndarray, np.ndarray, np.ndarray],
                fmt: YUVFormat) -> torch.Tensor:
        """The encoder's side latents ``w`` ``[1,M,hb,wb]`` of an original frame's planes and
        its decoded base planes (code values)."""


class AnalysisGraph(nn.Module):
    """The original's and the decoded base's code values and the format's numbers to the
    encoder's side latents (:meth:`~dualcodec.model.DualLayerModel.analyse`)."""

    def __init__(self, model: DualLayerModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor, uv: torch.Tensor, y_lr: torch.Tensor, uv_lr: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
        return self.model.analyse(*codes_to_unit(y, uv, scale), *codes_to_unit(y_lr, uv_lr, scale))


def _plane_arrays(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    """A frame's planes as a graph takes them: y ``[1,1,h,w]``, uv ``[1,2,h/2,w/2]`` (float32)."""
    return [y.astype(np.float32)[None, None], np.stack([u, v]).astype(np.float32)[None]]


def analysis_inputs(original, base, fmt: YUVFormat) -> list[np.ndarray]:
    """:class:`AnalysisGraph`'s inputs from two frames' planes ``(y, u, v)``."""
    return [*_plane_arrays(*original), *_plane_arrays(*base), np.array(unit_scale(fmt), np.float32)]


def up_inputs(y: np.ndarray, u: np.ndarray, v: np.ndarray, side: SideFeatures, fmt: YUVFormat,
              level: int | None = None) -> list[np.ndarray]:
    """The up graph's inputs: base code values, the format's numbers (and the quantiser
    ``level`` after them, for a model that takes it), the side features."""
    numbers = [*unit_scale(fmt), *([] if level is None else [level])]
    return [*_plane_arrays(y, u, v), np.array(numbers, np.float32), *side.arrays()]


def _planes(y: np.ndarray, uv: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return y[0, 0].astype(dtype), uv[0, 0].astype(dtype), uv[0, 1].astype(dtype)


class _Networks:
    """What both runtimes share: side features of decoded latents, and those of all-zero
    latents computed once per base layer size. A runtime supplies :meth:`_synthesis`."""

    def __init__(self, model: DualLayerModel) -> None:
        self.model = model
        self._zero: dict[tuple[int, int], SideFeatures] = {}

    def _up_inputs(self, y, u, v, side: SideFeatures, fmt: YUVFormat, level: int | None,
                   memory: FrameMemory | None = None) -> list[np.ndarray]:
        """:func:`up_inputs`, with ``level`` where the model takes it (and required there),
        and a temporal model's memory inputs."""
        if self.model.takes_level and level is None:
            raise DualcodecError("this model needs the base layer's quantiser level, which the file's header lacks")
        inputs = up_inputs(y, u, v, side, fmt, level if self.model.takes_level else None)
        if self.model.temporal:
            inputs += FrameMemory.absent(y, self.model.scale) if memory is None else memory.arrays()
        return inputs

    def _synthesis(self, w_hat: np.ndarray) -> list[np.ndarray]:
        """The side graph's outputs (on whole latent blocks; may be views of a runtime's buffers)."""
        raise NotImplementedError

    def _features(self, w_hat: np.ndarray, lr_height: int, lr_width: int) -> SideFeatures:
        t, *residual = self._synthesis(w_hat)
        h, w = self.model.upsampler.side_size(lr_height, lr_width)
        out = [np.array(t[:, :h, :w]), *(np.array(a[..., :h, :w]) for a in residual)]  # copies, kept per packet
        return SideFeatures(*out, *(None,) * (3 - len(out)))

    def side_features(self, w_hat: torch.Tensor | None, lr_height: int, lr_width: int) -> SideFeatures:
        if not self.model.has_side_stream:
            return SideFeatures(None, None, None)
        if w_hat is not None:
            return self._features(w_hat.float().numpy(), lr_height, lr_width)
        key = (lr_height, lr_width)
        if key not in self._zero:
            shape = (1, self.model.latent_coder.channels, *self.model.latent_size(lr_height, lr_width))
            self._zero[key] = self._features(np.zeros(shape, np.float32), lr_height, lr_width)
        return self._zero[key]


class TorchRuntime(_Networks):
    """Eager PyTorch, fp32, on the CPU: the reference."""

    name = "torch"

    def __init__(self, loaded: LoadedModel, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        super().__init__(loaded.model.to(memory_format=torch.channels_last))
        self.side_graph = SideGraph(self.model) if self.model.has_side_stream else None
        self.up_graph = UpGraph(self.model)
        self.analysis_graph = AnalysisGraph(self.model)

    @torch.inference_mode()
    def _synthesis(self, w_hat: np.ndarray) -> list[np.ndarray]:
        return [t.numpy() for t in self.side_graph(torch.from_numpy(w_hat))]

    @torch.inference_mode()
    def upsample(self, y, u, v, side: SideFeatures, fmt: YUVFormat, level: int | None = None,
                 memory: FrameMemory | None = None):
        inputs = self._up_inputs(y, u, v, side, fmt, level, memory)
        y_out, uv_out = self.up_graph(*(torch.from_numpy(a) for a in inputs))
        return _planes(y_out.numpy(), uv_out.numpy(), y.dtype)

    @torch.inference_mode()
    def analyse(self, original, base, fmt: YUVFormat) -> torch.Tensor:
        return self.analysis_graph(*(torch.from_numpy(a) for a in analysis_inputs(original, base, fmt)))


def import_openvino():
    """The openvino package, or a one-line error that says how to get it."""
    try:
        import openvino
    except ImportError:
        raise DualcodecError("the openvino runtime needs the openvino package (pip install openvino); "
                             "or pass --runtime torch") from None
    return openvino


def int8_dir(model_path: Path) -> Path:
    """Where the int8 graphs of the model file ``model_path`` live."""
    return model_path.with_suffix(INT8_SUFFIX)


def int8_problem(loaded: LoadedModel) -> str | None:
    """Why the model's int8 graphs cannot be used (``None``: they can)."""
    folder = int8_dir(loaded.path)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return (f"model {loaded.name!r} has no int8 graphs ({folder}); build them with dualcodec export, "
                f"or pass --runtime openvino")
    meta = json.loads(meta_path.read_text())
    if meta.get("fingerprint") != loaded.fingerprint:
        return (f"the int8 graphs in {folder} were built from another model (fingerprint {meta.get('fingerprint')}, "
                f"the model's is {loaded.fingerprint}); rebuild them with dualcodec export")
    if meta.get("graphs") != GRAPHS_VERSION:
        return (f"the int8 graphs in {folder} are of graph version {meta.get('graphs', 1)}, this dualcodec runs "
                f"version {GRAPHS_VERSION}; rebuild them with dualcodec export")
    return None


def cache_dir() -> Path:
    """Where traced graphs are kept between runs: ``$DUALCODEC_CACHE``, else
    ``$XDG_CACHE_HOME/dualcodec``, else ``~/.cache/dualcodec``."""
    if os.environ.get("DUALCODEC_CACHE"):
        return Path(os.environ["DUALCODEC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dualcodec"


class _Graphs:
    """The process's OpenVINO core, graphs and compiled models, shared by every runtime
    object (a decode, then another, compiles once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.core = None
        self.graphs: dict[tuple, object] = {}  # (fingerprint, runtime, graph): ov.Model, sizes free
        # (fingerprint, runtime, graph, config) -> {input shapes: compiled model}, the most recent last
        self.compiled: dict[tuple, dict[tuple, object]] = {}

    def compiled_for(self, key: tuple, shapes: tuple, compile_model):
        """The compiled model of graph ``key`` for input ``shapes``, compiled by ``compile_model()``
        the first time. A compiled model holds working memory for its size, so each graph keeps
        only its :data:`COMPILED_SIZES` most recently used sizes: a sweep from clip to clip does
        not hold every clip's. Call under ``lock``."""
        sizes = self.compiled.setdefault(key, {})
        compiled = sizes.pop(shapes, None)
        if compiled is None:
            compiled = compile_model()
        sizes[shapes] = compiled  # the most recent last
        while len(sizes) > COMPILED_SIZES:  # runtimes still running an evicted one keep it alive
            del sizes[next(iter(sizes))]
        return compiled

    def get_core(self):
        if self.core is None:
            self.core = import_openvino().Core()
        return self.core


_SHARED = _Graphs()


def _traced(loaded: LoadedModel, key: str):
    """The fp32 graph ``key`` of a model: from the cache folder, else traced and saved there
    (a cache that cannot be written is skipped)."""
    ov = import_openvino()
    folder = cache_dir() / loaded.fingerprint / f"openvino-v{GRAPHS_VERSION}"
    path = folder / f"{key}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        try:
            return _SHARED.get_core().read_model(path)
        except RuntimeError:  # a damaged cache entry: trace again
            pass
    graph = {"side": trace_side, "up": trace_up, "analysis": trace_analysis}[key](loaded.model)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder))
        ov.save_model(graph, staging / f"{key}.xml", compress_to_fp16=False)
        os.replace(staging / f"{key}.bin", path.with_suffix(".bin"))
        os.replace(staging / f"{key}.xml", path)
        shutil.rmtree(staging, ignore_errors=True)
    except OSError:
        pass
    return graph


class OpenVINORuntime(_Networks):
    """The same graphs, compiled by OpenVINO for the CPU: fp32 traced at first use (and
    kept in :func:`cache_dir` under the model's fingerprint), or the int8 graphs saved
    beside the model (``int8``). Compiled once per frame size and thread count."""

    def __init__(self, loaded: LoadedModel, int8: bool = False, threads: int | None = None, streams: int = 1) -> None:
        """``threads``: per run. ``streams``: how many runs of a graph may go at once, from
        as many runtime objects on threads of their own (the encoder's workers), each on
        ``threads`` (default 1) threads of its own; with one stream, the runs of every
        runtime object of these settings take turns (they share the compiled graph).
        Streams are not pinned to cores: the caller's own threads (the base encoder)
        share the cores with them (pinned, they fight those threads for a core, and the
        encoder ran far slower)."""
        import_openvino()
        super().__init__(loaded.model)
        self.name = "openvino-int8" if int8 else "openvino"
        self.loaded = loaded
        self.threads = threads
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if streams > 1:
            self.config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams,
                               INFERENCE_NUM_THREADS=streams * (threads or 1), ENABLE_CPU_PINNING=False)
        elif threads is not None:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.requests: dict[tuple, object] = {}  # (graph, input shapes): this runtime's infer request
        if int8 and (problem := int8_problem(loaded)):
            raise DualcodecError(problem)

    def _graph(self, key: str):
        """The ov.Model of graph ``key`` (``side``, ``up`` or ``analysis``), sizes free."""
        cache_key = (self.loaded.fingerprint, self.name, key)
        if cache_key not in _SHARED.graphs:
            if self.name == "openvino-int8" and key != "analysis":
                _SHARED.graphs[cache_key] = _SHARED.get_core().read_model(int8_dir(self.loaded.path) / f"{key}.xml")
            else:
                _SHARED.graphs[cache_key] = _traced(self.loaded, key)
        return _SHARED.graphs[cache_key]

    def _run(self, key: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        shapes = tuple(a.shape for a in inputs)
        request = self.requests.get((key, shapes))
        if request is None:
            # A request holds working memory for its size: as for the process's compiled
            # graphs, this runtime keeps requests for each graph's last COMPILED_SIZES sizes.
            others = [k for k in self.requests if k[0] == key]
            for k in others[:max(0, len(others) + 1 - COMPILED_SIZES)]:
                del self.requests[k]
            with _SHARED.lock:
                def compile_model():
                    model = self._graph(key).clone()
                    model.reshape({i: list(shape) for i, shape in enumerate(shapes)})
                    return _SHARED.get_core().compile_model(model, "CPU", self.config)

                graph = (self.loaded.fingerprint, self.name, key, tuple(sorted(self.config.items())))
                compiled = _SHARED.compiled_for(graph, shapes, compile_model)
                request = self.requests[(key, shapes)] = compiled.create_infer_request()
                # A request's first run initialises the bindings' lazy statics (pybind11's
                # numpy API among them); two threads doing that at once deadlock (seen in
                # the pipelined encoder's workers): first runs go one at a time.
                request.infer(inputs, share_inputs=True)
        else:
            request.infer(inputs, share_inputs=True)  # the arrays are read in place, not copied
        # Views of the request's buffers, valid until its next run: the callers copy.
        return [request.get_output_tensor(i).data for i in range(len(request.model_outputs))]

    def _synthesis(self, w_hat: np.ndarray) -> list[np.ndarray]:
        return self._run("side", [w_hat])

    def upsample(self, y, u, v, side: SideFeatures, fmt: YUVFormat, level: int | None = None,
                 memory: FrameMemory | None = None):
        y_out, uv_out = self._run("up", self._up_inputs(y, u, v, side, fmt, level, memory))
        return _planes(y_out, uv_out, y.dtype)

    def analyse(self, original, base, fmt: YUVFormat) -> torch.Tensor:
        return torch.from_numpy(np.array(self._run("analysis", analysis_inputs(original, base, fmt))[0]))


def _dynamic(shape: tuple[int, ...]):
    """Batch and channels fixed, the sizes free."""
    return import_openvino().PartialShape([*shape[:-2], -1, -1] if len(shape) == 4 else list(shape))


def _convert(module: nn.Module, inputs: list[torch.Tensor]):
    """``openvino.convert_model`` of a module traced on ``inputs``, sizes left free (the
    tracer's deprecation warnings silenced: they are about TorchScript, not the graph)."""
    ov = import_openvino()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return ov.convert_model(module.eval(), example_input=tuple(inputs), input=[_dynamic(t.shape) for t in inputs])


def trace_side(model: DualLayerModel):
    """:class:`SideGraph` as an ov.Model with dynamic spatial sizes."""
    return _convert(SideGraph(model), [torch.zeros(1, model.latent_coder.channels, 8, 8)])


def up_example(model: DualLayerModel, height: int = 32, width: int = 32) -> list[torch.Tensor]:
    """Inputs of :class:`UpGraph` for a base layer of ``height x width`` (8-bit limited range)."""
    y = torch.full((1, 1, height, width), 128.0)
    numbers = [*unit_scale(YUVFormat()), *([32.0] if model.takes_level else [])]
    inputs = [y, torch.full((1, 2, height // 2, width // 2), 128.0), torch.tensor(numbers)]
    if model.has_side_stream:
        with torch.no_grad():
            inputs += graph_side(model.side_features(None, y))
    if model.temporal:
        s = model.scale
        inputs += [y, inputs[1], torch.full((1, 1, s * height, s * width), 128.0),
                   torch.full((1, 2, s * height // 2, s * width // 2), 128.0), torch.ones(1)]
    return inputs


def trace_up(model: DualLayerModel):
    """:class:`UpGraph` as an ov.Model with dynamic spatial sizes."""
    return _convert(UpGraph(model, rows=None), up_example(model))


def trace_analysis(model: DualLayerModel):
    """:class:`AnalysisGraph` as an ov.Model with dynamic spatial sizes."""
    h, w = 8 * model.side_stride, 8 * model.side_stride  # a base layer of whole latent blocks
    s = model.scale
    y, uv = torch.full((1, 1, h * s, w * s), 128.0), torch.full((1, 2, h * s // 2, w * s // 2), 128.0)
    y_lr, uv_lr = torch.full((1, 1, h, w), 128.0), torch.full((1, 2, h // 2, w // 2), 128.0)
    return _convert(AnalysisGraph(model), [y, uv, y_lr, uv_lr, torch.tensor(unit_scale(YUVFormat()))])


def make_runtime(name: "str | Runtime", loaded: LoadedModel, threads: int | None = None) -> Runtime:
    """The runtime ``name`` (one of :data:`RUNTIMES`) for a loaded model; a runtime object
    is returned as it is."""
    if not isinstance(name, str):
        return name
    if name not in RUNTIMES:
        raise DualcodecError(f"unknown runtime {name!r} (one of {', '.join(RUNTIMES)})")
    if name == "torch":
        return TorchRuntime(loaded, threads)
    if name == "auto":
        try:
            import openvino  # noqa: F401
        except ImportError:
            return TorchRuntime(loaded, threads)
        name = "openvino" if int8_problem(loaded) else "openvino-int8"
    return OpenVINORuntime(loaded, int8=name == "openvino-int8", threads=threads)
