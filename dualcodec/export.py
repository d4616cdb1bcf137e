"""``dualcodec export``: the int8 graphs of a model, for ``--runtime openvino-int8``.

The two decoder graphs of :mod:`dualcodec.runtime`, with their feature convolutions in
int8 (:class:`~dualcodec.nets.quant.QuantConv2d`: 8-bit inputs, int8 weights per
channel): ``g_s`` and the upsampler's side term, ``conv_in`` and ``body``, and with the
folded upsampler its 1x1 weight heads, detail term and temporal part's 1x1 convolutions
too (plain convolutions there; the mixture form reorders its heads' rows, which stay fp32
with its detail term). The filter
mixture itself (the candidate filters, their products with the weights and their sums)
stays fp32: its error would go straight to the output pixels.

Calibrated post-training quantisation on what the decoder really sees: real images coded
by the model through the real base codec at several QPs and decoded, their side latents
and base planes recorded on the way into the networks; each convolution's input range is
the range it meets there (the side graph also sees every block's latents, as if the
encoder had enhanced them all; a temporal model's upsampler sees clips of :data:`CLIP`
frames, each calibration image and the frames after it). The graphs are traced as for
fp32 (OpenVINO turns the fake quantisation into int8 convolutions) and written beside
the model file, ``NAME.int8/{side,up}.{xml,bin}``, with ``meta.json`` holding the model's
fingerprint (a stale set is refused at load) and how they were calibrated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

import torch

from dualcodec.errors import DualcodecError
from dualcodec.model import LoadedModel, lmbda_at
from dualcodec.nets.quant import quantise_convs
from dualcodec.nets.upsampler import FoldedUpsampler
from dualcodec.runtime import GRAPHS_VERSION, SideFeatures, SideGraph, TorchRuntime, UpGraph, import_openvino, int8_dir, trace_side, trace_up

CLIP = 4  # frames per calibration clip of a temporal model (dualcodec.data.validation_clip)


class RecordingRuntime(TorchRuntime):
    """The torch runtime, keeping every input its two graphs receive."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__(loaded)
        self.side_inputs: list[list[np.ndarray]] = []
        self.up_inputs: list[list[np.ndarray]] = []

    def side_features(self, w_hat, lr_height, lr_width) -> SideFeatures:
        if w_hat is not None:
            self.side_inputs.append([w_hat.float().numpy().copy()])
        return super().side_features(w_hat, lr_height, lr_width)

    def upsample(self, y, u, v, side, fmt, level=None, memory=None):
        self.up_inputs.append(self._up_inputs(y, u, v, side, fmt, level, memory))
        return super().upsample(y, u, v, side, fmt, level, memory)


def calibration_images(folders: list[Path], count: int) -> list[Path]:
    """``count`` images spread evenly over the sorted images of ``folders``."""
    from dualcodec.video import IMAGE_SUFFIXES

    images = sorted(p for folder in folders for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DualcodecError(f"no images in {', '.join(map(str, folders))} to calibrate on")
    step = max(1, len(images) // count)
    return images[::step][:count]


def record(loaded: LoadedModel, images: list[Path], qps: list[int], progress: bool = True) -> RecordingRuntime:
    """Code every image at every QP with the model and decode it, recording the graphs' inputs.

    The side graph also sees the latents of every block of each image (as if the encoder
    had enhanced them all), so its calibration does not hang on the encoder's choices."""
    from tqdm import tqdm

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec, ModelLayers, decompress, to_unit
    from dualcodec.data import validation_clip
    from dualcodec.video import VideoReader, pad_planes
    from dualcodec.yuv import codes_to_unit

    recorder = RecordingRuntime(loaded)
    model, coder = loaded.model, loaded.model.latent_coder
    jobs = [(image, qp) for image in images for qp in qps]
    for image, qp in tqdm(jobs, desc="calibrate", unit="frame", disable=not progress, leave=False):
        reader = VideoReader(image)
        frame = next(reader.frames())
        # A temporal model's memory is seen on clips: the image and the frames after it.
        frames = [frame, *(next(VideoReader(p).frames()) for p in validation_clip(image, CLIP)[1:])] \
            if model.temporal else [frame]
        # the reference runtime makes the choices: not the int8 graphs this export replaces
        layers = ModelLayers(loaded, lmbda_at(loaded.lmbda, qp), level=qp, runtime="torch", metric="l1")
        data = LayeredCodec(layers, BaseCodecSettings(codec="h264", qp=qp)).compress(frames, reader.info.format)
        list(decompress(data, str(loaded.path), runtime=recorder).frames)
        if model.has_side_stream:
            height, width = (2 * model.scale * -(-n // (2 * model.scale)) for n in (frame.height, frame.width))
            original = to_unit(pad_planes(frame, width, height), reader.info.format)
            y_codes, uv_codes, scale = recorder.up_inputs[-1][:3]
            base = codes_to_unit(torch.from_numpy(y_codes), torch.from_numpy(uv_codes), torch.from_numpy(scale))
            with torch.no_grad():
                w_hat = coder.dequantize(coder.quantize(model.analyse(*original, *base), qp), qp)
            recorder.side_inputs.append([w_hat.float().numpy()])
    return recorder


def up_convs(model) -> list[str]:
    """The upsampler's convolutions that int8 runs: the feature network's, and with the
    folded form its 1x1 heads and detail term too (the filter mixture, the candidates,
    their products and sums, stays fp32)."""
    up = model.upsampler
    names = ["upsampler.conv_in", *(f"upsampler.body.{i}" for i in range(len(up.body)))]
    if isinstance(up, FoldedUpsampler):
        names += ["upsampler.head", "upsampler.chroma_head", *(["upsampler.detail"] if up.detail is not None else [])]
        names += ["upsampler.memory_in", "upsampler.memory_gate"] if up.temporal else []
    return names


def side_convs(model) -> list[str]:
    """The side graph's convolutions: the side synthesis's, and the upsampler's side term."""
    names = [f"g_s.body.{i}" for i, m in enumerate(model.g_s.body) if isinstance(m, torch.nn.Conv2d)]
    return names + (["upsampler.conv_side"] if model.upsampler.conv_side is not None else [])


@torch.no_grad()
def calibrate(model, names: list[str], run) -> None:
    """Each named convolution's input range over ``run()`` (which feeds the calibration
    set through the model, every convolution still fp32), set on its
    :class:`~dualcodec.nets.quant.QuantConv2d`, which then quantises."""
    ranges: dict[str, list[float]] = {name: [0.0, 0.0] for name in names}
    hooks = []
    for name in names:
        def hook(module, args, name=name):
            ranges[name][0] = min(ranges[name][0], float(args[0].min()))
            ranges[name][1] = max(ranges[name][1], float(args[0].max()))
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    run()
    for h in hooks:
        h.remove()
    for name, (low, high) in ranges.items():
        model.get_submodule(name).calibrate(low, high)


def export_int8(loaded: LoadedModel, folders: list[Path], count: int = 24, qps: tuple[int, ...] = (22, 32, 42),
                progress: bool = True) -> Path:
    """Quantise the decoder graphs of ``loaded``, calibrated on ``count`` images of
    ``folders`` coded at ``qps``; write them beside the model file and return their folder."""
    import copy

    from dualcodec.model import undecodable

    if problem := undecodable(loaded):
        raise DualcodecError(problem)
    ov = import_openvino()
    images = calibration_images(folders, count)
    recorder = record(loaded, images, list(qps), progress)
    model = copy.deepcopy(loaded.model)
    up_names = up_convs(model)
    side_names = side_convs(model) if model.has_side_stream else []

    def run_up() -> None:
        for inputs in recorder.up_inputs:
            UpGraph(model)(*(torch.from_numpy(a) for a in inputs))

    def run_side() -> None:
        for (w,) in recorder.side_inputs:
            SideGraph(model)(torch.from_numpy(w))

    quantise_convs(model, up_names + side_names)
    calibrate(model, up_names, run_up)  # the side graph's inputs are recorded: independent
    if side_names:
        calibrate(model, side_names, run_side)
    graphs = {"up": trace_up(model)}
    if model.has_side_stream:
        graphs["side"] = trace_side(model)
    folder = int8_dir(loaded.path)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, graph in graphs.items():
        ov.save_model(graph, staging / f"{name}.xml", compress_to_fp16=False)
    meta = {"fingerprint": loaded.fingerprint, "graphs": GRAPHS_VERSION, "model": loaded.name, "openvino": ov.get_version(),
            "calibration": {"images": [p.name for p in images], "qps": list(qps),
                            "side_samples": len(recorder.side_inputs), "up_samples": len(recorder.up_inputs)}}
    (staging / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    return folder
