"""``dualcodec export``: the int8 graphs of a model, for ``--runtime openvino-int8``.

Post-training static quantisation (NNCF) of the two decoder graphs of
:mod:`dualcodec.runtime`, calibrated on what the decoder really sees: real images coded
by the model through the real base codec at several QPs, decoded, their side latents and
base planes recorded on the way into the networks. Quantised: the feature networks'
convolutions (``g_s``, the upsampler's ``conv_in``, ``body`` and ``detail``). Kept in
fp32: the filter mixture (the candidate filters, the per-pixel weights, their products
and sums), whose error goes straight to the output pixels.

The graphs are written beside the model file, ``NAME.int8/{side,up}.{xml,bin}``, with
``meta.json`` holding the model's fingerprint (a stale set is refused at load) and how
they were calibrated.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from dualcodec.errors import DualcodecError
from dualcodec.model import LoadedModel, lmbda_at
from dualcodec.runtime import SideFeatures, TorchRuntime, int8_dir, trace_side, trace_up, up_inputs

# Node-name patterns of the mixture in the traced up graph (everything the upsampler
# module computes itself, outside its conv_in, body and detail submodules).
MIXTURE_PATTERNS = [r"__module\.model\.upsampler/aten::.*"]


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

    def upsample(self, y, u, v, side, fmt):
        self.up_inputs.append(up_inputs(y, u, v, side, fmt))
        return super().upsample(y, u, v, side, fmt)


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
    import torch
    from tqdm import tqdm

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec, ModelLayers, decompress, to_unit
    from dualcodec.video import VideoReader, pad_planes
    from dualcodec.yuv import codes_to_unit

    recorder = RecordingRuntime(loaded)
    model, coder = loaded.model, loaded.model.latent_coder
    jobs = [(image, qp) for image in images for qp in qps]
    for image, qp in tqdm(jobs, desc="calibrate", unit="frame", disable=not progress, leave=False):
        reader = VideoReader(image)
        frame = next(reader.frames())
        layers = ModelLayers(loaded, lmbda_at(loaded.lmbda, qp), level=qp)
        data = LayeredCodec(layers, BaseCodecSettings(codec="h264", qp=qp)).compress([frame], reader.info.format)
        list(decompress(data, str(loaded.path), runtime=recorder).frames)
        if model.has_side_stream:
            y_codes, uv_codes, scale = recorder.up_inputs[-1][:3]
            base = codes_to_unit(torch.from_numpy(y_codes), torch.from_numpy(uv_codes), torch.from_numpy(scale))
            height, width = (2 * model.scale * -(-n // (2 * model.scale)) for n in (frame.height, frame.width))
            original = to_unit(pad_planes(frame, width, height), reader.info.format)
            with torch.no_grad():
                w_hat = coder.dequantize(coder.quantize(model.analyse(*original, *base), qp), qp)
            recorder.side_inputs.append([w_hat.float().numpy()])
    return recorder


def export_int8(loaded: LoadedModel, folders: list[Path], count: int = 24, qps: tuple[int, ...] = (22, 32, 42),
                progress: bool = True) -> Path:
    """Quantise the decoder graphs of ``loaded`` on ``count`` images of ``folders`` coded at
    ``qps``; write them beside the model file and return their folder."""
    # NNCF imports torch's C++ extension helper, which warns that there is no CUDA.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise DualcodecError("dualcodec export needs openvino and nncf (pip install openvino nncf)") from None
    nncf.set_log_level(logging.ERROR)
    images = calibration_images(folders, count)
    recorder = record(loaded, images, list(qps), progress)
    # NNCF draws its own progress bars on standard output: kept only with progress.
    with contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO()):
        graphs = {"up": nncf.quantize(trace_up(loaded.model), nncf.Dataset(recorder.up_inputs),
                                      subset_size=len(recorder.up_inputs),
                                      ignored_scope=nncf.IgnoredScope(patterns=MIXTURE_PATTERNS, validate=False))}
        if loaded.model.has_side_stream:
            graphs["side"] = nncf.quantize(trace_side(loaded.model), nncf.Dataset(recorder.side_inputs),
                                           subset_size=len(recorder.side_inputs))
    folder = int8_dir(loaded.path)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, graph in graphs.items():
        ov.save_model(graph, staging / f"{name}.xml", compress_to_fp16=False)
    meta = {"fingerprint": loaded.fingerprint, "model": loaded.name, "openvino": ov.get_version(),
            "nncf": nncf.__version__, "calibration": {"images": [p.name for p in images], "qps": list(qps),
                                                       "side_samples": len(recorder.side_inputs),
                                                       "up_samples": len(recorder.up_inputs)}}
    (staging / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    return folder
