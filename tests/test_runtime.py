"""dualcodec.runtime (and dualcodec.export): the decoder's networks, eager and compiled."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from dualcodec.errors import DualcodecError
from dualcodec.model import load_model
from dualcodec.runtime import OpenVINORuntime, TorchRuntime, int8_dir, make_runtime
from dualcodec.yuv import YUVFormat
from helpers import synthetic_rgb, write_png

FORMATS = [YUVFormat(), YUVFormat(10, True)]


def _base(height: int, width: int, fmt: YUVFormat, seed: int = 0):
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if fmt.bit_depth == 8 else np.uint16
    top = fmt.max_code + 1
    return (rng.integers(0, top, (height, width)).astype(dtype),
            rng.integers(0, top, (height // 2, width // 2)).astype(dtype),
            rng.integers(0, top, (height // 2, width // 2)).astype(dtype))


def _latents(loaded, height: int, width: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    hb, wb = loaded.model.latent_size(height, width)
    return torch.from_numpy(rng.normal(0.0, 2.0, (1, loaded.model.latent_coder.channels, hb, wb)).round()
                            .astype(np.float32))


def _differences(a, b) -> list[int]:
    return [int(np.abs(p.astype(np.int32) - q).max()) for p, q in zip(a, b)]


FORMS = ["tiny_model", "folded_model"]  # the upsampler's two forms (model.up_form)


@pytest.mark.parametrize("fmt", FORMATS, ids=["8bit-tv", "10bit-pc"])
@pytest.mark.parametrize("form", FORMS)
def test_torch_runtime_is_the_models_own_upsampling(request, form, fmt):
    from dualcodec.basecodec import planes_from_tensors, planes_to_tensors
    from dualcodec.basecodec import Planes
    from dualcodec.yuv import planes_to_unit, unit_to_planes

    loaded = load_model(str(request.getfixturevalue(form).path))
    y, u, v = _base(18, 30, fmt)  # 18x30: the latents cover 20x32, the features are cropped
    w_hat = _latents(loaded, 18, 30)
    runtime = TorchRuntime(loaded)
    out = runtime.upsample(y, u, v, runtime.side_features(w_hat, 18, 30), fmt)
    with torch.no_grad():
        unit = planes_to_unit(*planes_to_tensors([Planes(y, u, v)]), fmt)
        ref = planes_from_tensors(*unit_to_planes(*loaded.model.upsample(*unit, w_hat), fmt), fmt)[0]
    assert out[0].shape == (36, 60) and out[1].shape == (18, 30) and out[0].dtype == y.dtype
    assert _differences(out, (ref.y, ref.u, ref.v)) == [0, 0, 0]


@pytest.mark.parametrize("fmt", FORMATS, ids=["8bit-tv", "10bit-pc"])
@pytest.mark.parametrize("form", FORMS)
def test_openvino_fp32_decodes_as_torch_does(request, form, fmt):
    loaded = load_model(str(request.getfixturevalue(form).path))
    torch_rt, ov_rt = TorchRuntime(loaded), OpenVINORuntime(loaded, threads=2)
    for height, width in ((18, 30), (40, 24)):  # one traced graph serves every size and format
        y, u, v = _base(height, width, fmt)
        w_hat = _latents(loaded, height, width)
        for latents in (w_hat, None):
            a = torch_rt.upsample(y, u, v, torch_rt.side_features(latents, height, width), fmt)
            b = ov_rt.upsample(y, u, v, ov_rt.side_features(latents, height, width), fmt)
            assert max(_differences(a, b)) <= 1
            assert np.mean(a[0] != b[0]) < 0.01  # rounding ties only


def test_openvino_frames_are_identical_at_any_thread_count(tiny_model):
    loaded = load_model(str(tiny_model.path))
    fmt = YUVFormat()
    y, u, v = _base(40, 48, fmt)
    w_hat = _latents(loaded, 40, 48)
    outs = []
    for threads in (1, 2):
        runtime = OpenVINORuntime(loaded, threads=threads)
        outs.append(runtime.upsample(y, u, v, runtime.side_features(w_hat, 40, 48), fmt))
    assert _differences(*outs) == [0, 0, 0]


@pytest.mark.parametrize("kept", [1, 2])
def test_compiled_graphs_are_kept_for_the_last_frame_sizes_only(tiny_model, monkeypatch, kept):
    # A sweep from clip to clip held every clip's compiled graphs, with their working
    # memory (a 3-clip HD sweep grew from 7.2 to 9.9 GiB); each graph now keeps the last
    # COMPILED_SIZES sizes it ran at.
    from dualcodec import runtime

    monkeypatch.setattr(runtime, "_SHARED", runtime._Graphs())
    monkeypatch.setattr(runtime, "COMPILED_SIZES", kept)
    compiles = []
    compile_model = runtime._SHARED.get_core().compile_model
    monkeypatch.setattr(type(runtime._SHARED.get_core()), "compile_model",
                        lambda self, model, *args: compiles.append(tuple(model.inputs[0].get_shape()))
                        or compile_model(model, *args))
    loaded = load_model(str(tiny_model.path))
    fmt = YUVFormat()
    outputs = {}
    kept_runtime = OpenVINORuntime(loaded, threads=1)  # one runtime through all sizes, as a codec's
    for height, width in ((40, 48), (40, 48), (24, 32), (40, 48), (32, 32), (40, 48), (24, 32)):
        ov_rt = OpenVINORuntime(loaded, threads=1)  # a new runtime a point, as a sweep's decoder
        y, u, v = _base(height, width, fmt)
        out = ov_rt.upsample(y, u, v, ov_rt.side_features(None, height, width), fmt)
        assert _differences(outputs.setdefault((height, width), out), out) == [0, 0, 0]
        again = kept_runtime.upsample(y, u, v, kept_runtime.side_features(None, height, width), fmt)
        assert _differences(out, again) == [0, 0, 0]
        # Its requests (each holding working memory for its size) are kept for the last sizes only.
        assert len([k for k in kept_runtime.requests if k[0] == "up"]) <= kept
    up = [shape[-2:] for shape in compiles if len(shape) == 4 and shape[1] == 1]  # the up graph's luma input
    if kept == 1:  # every change of size compiles, the same size again does not
        assert up == [(40, 48), (24, 32), (40, 48), (32, 32), (40, 48), (24, 32)]
    else:  # 40x48 is used again before 32x32 comes, so 32x32 evicts 24x32, which then compiles again
        assert up == [(40, 48), (24, 32), (32, 32), (24, 32)]
    assert all(len(sizes) <= kept for sizes in runtime._SHARED.compiled.values())


def test_a_requests_first_run_is_one_at_a_time(tiny_model, monkeypatch):
    # Two threads' first runs at once can deadlock in the bindings' lazy statics
    # (pybind11's numpy API; 3 hangs in 20 fresh processes of 8 threads before): a new
    # request runs first under the process's lock, later runs without it.
    import openvino

    from dualcodec.runtime import _SHARED

    runs = []
    infer = openvino.InferRequest.infer
    monkeypatch.setattr(openvino.InferRequest, "infer",
                        lambda self, *args, **kwargs: runs.append((id(self), _SHARED.lock.locked()))
                        or infer(self, *args, **kwargs))
    loaded = load_model(str(tiny_model.path))
    runtime = OpenVINORuntime(loaded, threads=1)
    w_hat = _latents(loaded, 40, 48)
    first = runtime.side_features(w_hat, 40, 48)
    second = runtime.side_features(w_hat, 40, 48)
    assert [locked for _, locked in runs] == [True, False] and runs[0][0] == runs[1][0]
    assert np.array_equal(first.t, second.t)


@pytest.mark.parametrize("fmt", FORMATS, ids=["8bit-tv", "10bit-pc"])
def test_the_encoders_analysis_is_the_models_own_with_every_runtime(tiny_model, int8_model, fmt):
    from dualcodec.basecodec import Planes, planes_to_tensors
    from dualcodec.yuv import planes_to_unit

    loaded = load_model(str(tiny_model.path))
    original, base = _base(40, 48, fmt, seed=1), _base(20, 24, fmt, seed=2)
    with torch.no_grad():
        ref = loaded.model.analyse(*planes_to_unit(*planes_to_tensors([Planes(*original)]), fmt),
                                   *planes_to_unit(*planes_to_tensors([Planes(*base)]), fmt))
    assert ref.shape == (1, 16, 5, 6)
    scale = float(ref.abs().max())
    for runtime, tolerance in ((TorchRuntime(loaded), 1e-5), (OpenVINORuntime(loaded, threads=2), 1e-3),
                               (OpenVINORuntime(int8_model, int8=True), 1e-3)):  # fp32: the int8 graphs are the decoder's
        w = runtime.analyse(original, base, fmt)
        assert w.shape == ref.shape and torch.allclose(w, ref, atol=tolerance * scale), runtime.name


def test_skipped_frames_reuse_the_features_of_zero_latents(tiny_model):
    runtime = TorchRuntime(load_model(str(tiny_model.path)))
    first = runtime.side_features(None, 18, 30)
    assert runtime.side_features(None, 18, 30) is first
    assert runtime.side_features(None, 20, 30) is not first
    assert np.allclose(runtime.side_features(torch.zeros(1, 16, 5, 8), 18, 30).t, first.t)


def test_unknown_runtime_and_missing_int8_graphs_are_refused(tiny_model):
    loaded = load_model(str(tiny_model.path))
    with pytest.raises(DualcodecError, match="unknown runtime 'onnx'"):
        make_runtime("onnx", loaded)
    with pytest.raises(DualcodecError, match="has no int8 graphs .*dualcodec export"):
        make_runtime("openvino-int8", loaded)
    assert make_runtime("auto", loaded).name == "openvino"


def _int8_copy(tmp_path_factory, model):
    """A copy of a tiny model file with int8 graphs, calibrated on two synthetic images."""
    from dualcodec.export import export_int8

    folder = tmp_path_factory.mktemp("int8")
    path = shutil.copy(model.path, folder / f"{model.name}.pt")
    images = folder / "images"
    images.mkdir()
    for i, frame in enumerate(synthetic_rgb(64, 48, count=2, seed=3, noise=12.0)):
        write_png(images / f"{i}.png", frame)
    export_int8(load_model(str(path)), [images], count=2, qps=(22, 42), progress=False)
    return load_model(str(path))


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, tiny_model):
    return _int8_copy(tmp_path_factory, tiny_model)


@pytest.fixture(scope="module")
def int8_folded(tmp_path_factory, folded_model):
    return _int8_copy(tmp_path_factory, folded_model)


INT8_FORMS = ["int8_model", "int8_folded"]


def test_export_writes_int8_graphs_tied_to_the_fingerprint(int8_model):
    folder = int8_dir(int8_model.path)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["fingerprint"] == int8_model.fingerprint
    assert meta["calibration"]["qps"] == [22, 42] and meta["calibration"]["up_samples"] == 4
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "side.bin", "side.xml", "up.bin", "up.xml"]
    assert "FakeQuantize" in (folder / "up.xml").read_text()  # quantised, not a copy of fp32
    assert make_runtime("auto", int8_model).name == "openvino-int8"


@pytest.mark.parametrize("form", INT8_FORMS)
def test_int8_decodes_close_to_torch(request, form):
    int8_model = request.getfixturevalue(form)
    fmt = YUVFormat()
    rgb = synthetic_rgb(48, 40, count=1, seed=5, noise=12.0)[0]
    from helpers import to_planes

    planes = to_planes(rgb)
    y, u, v = planes.y[::2, ::2].copy(), planes.u[::2, ::2].copy(), planes.v[::2, ::2].copy()  # a 24x20 base
    w_hat = _latents(int8_model, 20, 24)
    torch_rt, int8_rt = TorchRuntime(int8_model), make_runtime("openvino-int8", int8_model, 2)
    a = torch_rt.upsample(y, u, v, torch_rt.side_features(w_hat, 20, 24), fmt)
    b = int8_rt.upsample(y, u, v, int8_rt.side_features(w_hat, 20, 24), fmt)
    difference = np.abs(a[0].astype(np.int32) - b[0])
    assert difference.mean() < 0.5 and difference.max() <= 4  # measured: 0.23 and 2
    assert difference.max() > 0  # int8 arithmetic really ran


def test_stale_int8_graphs_are_refused(int8_model, tmp_path):
    path = shutil.copy(int8_model.path, tmp_path / "tiny.pt")
    shutil.copytree(int8_dir(int8_model.path), int8_dir(tmp_path / "tiny.pt"))
    meta_path = int8_dir(tmp_path / "tiny.pt") / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "fingerprint": "0" * 16}))
    with pytest.raises(DualcodecError, match="built from another model .*dualcodec export"):
        make_runtime("openvino-int8", load_model(str(path)))
    assert make_runtime("auto", load_model(str(path))).name == "openvino"


def test_int8_graphs_of_another_graph_version_are_refused(int8_model, tmp_path):
    from dualcodec.runtime import GRAPHS_VERSION

    path = shutil.copy(int8_model.path, tmp_path / "tiny.pt")
    shutil.copytree(int8_dir(int8_model.path), int8_dir(tmp_path / "tiny.pt"))
    meta_path = int8_dir(tmp_path / "tiny.pt") / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert meta["graphs"] == GRAPHS_VERSION
    del meta["graphs"]  # as the first dualcodec export wrote it
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DualcodecError, match=f"graph version 1, this dualcodec runs version {GRAPHS_VERSION}; rebuild"):
        make_runtime("openvino-int8", load_model(str(path)))
    assert make_runtime("auto", load_model(str(path))).name == "openvino"


def test_side_latents_are_the_same_bits_with_every_runtime_and_thread_count(dual_file, int8_model, tiny_model):
    # The latents are entropy-decoded from integer classes before any network runs: record
    # what each runtime is handed. (int8_model is a copy of tiny_model, with int8 graphs.)
    from dualcodec.codec import decode

    seen = {}
    for name, threads in (("torch", 1), ("torch", 2), ("openvino", 1), ("openvino", 2), ("openvino-int8", 1),
                          ("openvino-int8", 2)):
        path = str(int8_model.path if name == "openvino-int8" else tiny_model.path)
        runtime = make_runtime(name, load_model(path), threads)
        received = []
        original = runtime.side_features
        runtime.side_features = lambda w, h, wd, original=original, received=received: (
            received.append(None if w is None else w.numpy().copy()), original(w, h, wd))[1]
        frames = list(decode(dual_file.path, path, runtime=runtime).frames)
        assert len(frames) == 3
        seen[(name, threads)] = received
    torch.set_num_threads(1)
    reference = seen[("torch", 1)]
    assert len(reference) == 3 and all(w is not None and np.any(w) for w in reference)
    for key, received in seen.items():
        assert all(np.array_equal(a, b) for a, b in zip(received, reference)), key


def test_traced_graphs_are_cached_under_the_fingerprint_and_a_damaged_entry_is_traced_again(tiny_model, tmp_path,
                                                                                            monkeypatch):
    from dualcodec import runtime

    monkeypatch.setenv("DUALCODEC_CACHE", str(tmp_path))
    loaded = load_model(str(tiny_model.path))
    runtime._traced(loaded, "up")
    cached = tmp_path / loaded.fingerprint / f"openvino-v{runtime.GRAPHS_VERSION}"  # a graph version of its own
    assert sorted(p.name for p in cached.iterdir()) == ["up.bin", "up.xml"]
    traced = []
    trace_up = runtime.trace_up
    monkeypatch.setattr(runtime, "trace_up", lambda model: traced.append(model) or trace_up(model))
    runtime._traced(loaded, "up")
    assert traced == []  # read back from the cache
    (cached / "up.xml").write_text("<net>not a graph</net>")
    graph = runtime._traced(loaded, "up")
    assert len(traced) == 1 and len(graph.inputs) == len(trace_up(loaded.model).inputs)
    assert runtime._SHARED.get_core().read_model(cached / "up.xml") is not None  # written again


@pytest.mark.parametrize("form", INT8_FORMS)
def test_int8_frames_are_identical_at_any_thread_count(request, form):
    int8_model = request.getfixturevalue(form)
    fmt = YUVFormat()
    y, u, v = _base(40, 48, fmt)
    w_hat = _latents(int8_model, 40, 48)
    outs = []
    for threads in (1, 2):
        runtime = make_runtime("openvino-int8", int8_model, threads)
        outs.append(runtime.upsample(y, u, v, runtime.side_features(w_hat, 40, 48), fmt))
    assert _differences(*outs) == [0, 0, 0]


def test_int8_graphs_of_a_level_input_model_read_the_level(tmp_path_factory, level_model):
    loaded = _int8_copy(tmp_path_factory, level_model)
    fmt = YUVFormat()
    from helpers import to_planes

    planes = to_planes(synthetic_rgb(48, 40, count=1, seed=5, noise=12.0)[0])  # scale 1: the base is the frame
    torch_rt, int8_rt = TorchRuntime(loaded), make_runtime("openvino-int8", loaded, 2)
    none = torch_rt.side_features(None, 40, 48)
    outputs = {}
    for level in (22, 42):
        a = torch_rt.upsample(planes.y, planes.u, planes.v, none, fmt, level)
        b = int8_rt.upsample(planes.y, planes.u, planes.v, int8_rt.side_features(None, 40, 48), fmt, level)
        difference = np.abs(a[0].astype(np.int32) - b[0])
        assert difference.mean() < 0.5 and difference.max() <= 4
        outputs[level] = b[0]
    assert not np.array_equal(outputs[22], outputs[42])
    with pytest.raises(DualcodecError, match="quantiser level"):
        torch_rt.upsample(planes.y, planes.u, planes.v, none, fmt)


# -- a temporal model: the previous frame's planes are inputs of the up graph --------------


def _frames(fmt: YUVFormat, count: int = 3, height: int = 20, width: int = 24):
    """A moving base layer: ``count`` frames of one random picture, shifted a pixel a frame."""
    y, u, v = _base(height + 2 * count, width + 2 * count, fmt)
    return [(y[i : i + height, 2 * i : 2 * i + width].copy(), u[: height // 2, i : i + width // 2].copy(),
             v[: height // 2, i : i + width // 2].copy()) for i in range(count)]


def _run_gop(runtime, frames, fmt: YUVFormat) -> list:
    from dualcodec.runtime import FrameMemory

    memory, outs = None, []
    for y, u, v in frames:
        out = runtime.upsample(y, u, v, runtime.side_features(None, *y.shape), fmt, memory=memory)
        memory = FrameMemory((y, u, v), out)
        outs.append(out)
    return outs


@pytest.mark.parametrize("fmt", FORMATS, ids=["8bit-tv", "10bit-pc"])
def test_a_temporal_models_runtimes_upsample_each_frame_after_the_previous_one(temporal_model, fmt):
    from dualcodec.basecodec import Planes, planes_from_tensors, planes_to_tensors
    from dualcodec.nets.upsampler import Memory
    from dualcodec.yuv import planes_to_unit, unit_to_planes

    loaded = load_model(str(temporal_model.path))
    frames = _frames(fmt)
    outs = _run_gop(TorchRuntime(loaded), frames, fmt)
    memory = None
    with torch.no_grad():  # the model's own recurrence, on the code values the runtime keeps
        for (y, u, v), out in zip(frames, outs):
            base = planes_to_unit(*planes_to_tensors([Planes(y, u, v)]), fmt)
            ref = planes_from_tensors(*unit_to_planes(*loaded.model.upsample(*base, None, memory=memory), fmt), fmt)[0]
            assert _differences(out, (ref.y, ref.u, ref.v)) == [0, 0, 0]
            memory = Memory(*base, *planes_to_unit(*planes_to_tensors([Planes(*out)]), fmt))
    # the memory changes the frames after the first: each alone is another picture
    torch_rt = TorchRuntime(loaded)
    alone = [torch_rt.upsample(y, u, v, torch_rt.side_features(None, *y.shape), fmt) for y, u, v in frames]
    assert _differences(alone[0], outs[0]) == [0, 0, 0] and max(_differences(alone[2], outs[2])) > 0
    ov_rt = OpenVINORuntime(loaded, threads=2)
    for size in ((20, 24), (16, 40)):  # one traced graph, warping included, serves every size
        clip = _frames(fmt, 3, *size)
        a, b = _run_gop(TorchRuntime(loaded), clip, fmt), _run_gop(ov_rt, clip, fmt)
        assert all(max(_differences(x, y)) <= 1 for x, y in zip(a, b))


def test_a_temporal_models_int8_graphs_calibrate_on_clips_and_decode_close_to_torch(tmp_path_factory, temporal_model):
    from dualcodec.export import export_int8

    folder = tmp_path_factory.mktemp("int8_temporal")
    path = shutil.copy(temporal_model.path, folder / "temporal.pt")
    frames = folder / "frames" / "clip"
    frames.mkdir(parents=True)
    for i, rgb in enumerate(synthetic_rgb(64, 48, count=4, seed=3, noise=12.0)):
        write_png(frames / f"frame_{i + 1:06d}.png", rgb)
    export_int8(load_model(str(path)), [frames.parent], count=1, qps=(32,), progress=False)
    loaded = load_model(str(path))
    meta = json.loads((int8_dir(path) / "meta.json").read_text())
    assert meta["calibration"]["up_samples"] == 4  # the image and the three frames after it, one clip
    from helpers import to_planes

    fmt = YUVFormat()
    rgb = synthetic_rgb(48, 40, count=4, seed=5, noise=12.0)  # a 24x20 base, of the kind calibrated on
    clip = [(p.y[::2, ::2].copy(), p.u[::2, ::2].copy(), p.v[::2, ::2].copy()) for p in map(to_planes, rgb)]
    a, b = _run_gop(TorchRuntime(loaded), clip, fmt), _run_gop(make_runtime("openvino-int8", loaded, 2), clip, fmt)
    for x, y in zip(a, b):
        difference = np.abs(x[0].astype(np.int32) - y[0])
        assert difference.mean() < 0.5 and difference.max() <= 4
