"""Speed of an upsampler architecture before it is trained: the co-design tool.

    python experiments/bench_upsampler.py [--sizes 720p 1080p] [--repeats 20]
        [--variant NAME key=value ...] ...

Each variant is the default model configuration (``dualcodec.config.ModelConfig``) with
the given ``model`` keys changed, at random weights: speed does not depend on them. Its
decoder up graph (:class:`dualcodec.runtime.UpGraph`: base code values in, output code
values out, the side features of all-zero latents as a SKIP frame has) is compiled by
OpenVINO in fp32 and in int8 (the feature convolutions quantised as ``dualcodec export``
does, over the ranges a random frame meets), and run on a base frame of the size's base
layer. Prints the median and the fastest milliseconds per frame over ``--repeats`` runs
after a warm-up; writes experiments/results/bench_upsampler.json. Without ``--variant``, a
fixed list.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
VARIANTS = {
    "default (luma chroma, K=8, depth 3)": {"downsampler": "bicubic"},
    "own chroma, K=8": {"downsampler": "bicubic", "up_chroma": "own"},
    "own chroma, K=4": {"downsampler": "bicubic", "up_chroma": "own", "num_filters": 4},
    "own chroma, K=4, depth 2": {"downsampler": "bicubic", "up_chroma": "own", "num_filters": 4, "up_depth": 2},
    "own chroma, K=4, depth 2, width 12": {"downsampler": "bicubic", "up_chroma": "own", "num_filters": 4,
                                           "up_depth": 2, "up_width": 12},
    "folded, K=4, depth 2, width 32": {"downsampler": "bicubic", "up_chroma": "own", "num_filters": 4,
                                       "up_depth": 2, "up_form": "folded", "up_width": 32},
    "folded, K=4, depth 2, width 24": {"downsampler": "bicubic", "up_chroma": "own", "num_filters": 4,
                                       "up_depth": 2, "up_form": "folded", "up_width": 24},
}


def _parse(pairs: list[str]) -> dict:
    import tomllib

    values = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            values[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            values[key] = raw
    return values


def compiled_graphs(values: dict, threads: int, width: int, height: int) -> dict:
    """``{"fp32": (request, inputs), "int8": ...}`` for the model of config ``values``."""
    import numpy as np
    import openvino as ov
    import torch

    from dualcodec.config import ModelConfig
    from dualcodec.export import calibrate, up_convs
    from dualcodec.model import DualLayerModel
    from dualcodec.nets.quant import quantise_convs
    from dualcodec.runtime import UpGraph, trace_up, up_example

    torch.manual_seed(0)
    model = DualLayerModel(ModelConfig(**values)).eval()
    with torch.no_grad():
        for p in model.upsampler.parameters():
            p.add_(0.05 * torch.randn_like(p))
    h, w = height // model.scale, width // model.scale
    example = up_example(model, h, w)
    rng = np.random.default_rng(0)
    example[0] = torch.from_numpy(rng.integers(16, 236, (1, 1, h, w)).astype(np.float32))
    example[1] = torch.from_numpy(rng.integers(16, 241, (1, 2, h // 2, w // 2)).astype(np.float32))
    quantised = copy.deepcopy(model)
    names = up_convs(quantised)
    quantise_convs(quantised, names)
    calibrate(quantised, names, lambda: UpGraph(quantised)(*example))
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    inputs = [t.numpy() for t in example]
    out = {}
    for precision, net in (("fp32", model), ("int8", quantised)):
        graph = trace_up(net)
        graph.reshape({i: list(a.shape) for i, a in enumerate(inputs)})
        out[precision] = (core.compile_model(graph, "CPU", config).create_infer_request(), inputs)
    return out


def timed_ms(request, inputs, repeats: int) -> tuple[float, float]:
    """The median and the fastest of ``repeats`` runs after a warm-up, in ms: on a shared
    machine whose speed drifts, the fastest run is the steadier figure for comparing
    variants (other load only ever adds time)."""
    request.infer(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer(inputs)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), 1000 * min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", nargs="+", action="append", metavar="NAME key=value",
                        help="a name, then model config keys to change (repeatable)")
    args = parser.parse_args()
    variants = {v[0]: _parse(v[1:]) for v in args.variant} if args.variant else VARIANTS
    rows = []
    print(f"upsampler graph, ms a frame (median of {args.repeats}), {args.threads} threads")
    for name, values in variants.items():
        row = {"variant": name, "model": values}
        for size in args.sizes:
            graphs = compiled_graphs(values, args.threads, *SIZES[size])
            for precision, (request, inputs) in graphs.items():
                median, fastest = timed_ms(request, inputs, args.repeats)
                row[f"{size}_{precision}_ms"] = round(median, 2)
                row[f"{size}_{precision}_min_ms"] = round(fastest, 2)
        rows.append(row)
        print(f"  {name:40s} " + "  ".join(f"{k.removesuffix('_ms')} {v:6.1f}" for k, v in row.items() if k.endswith("_ms")),
              flush=True)
    out = ROOT / "experiments" / "results" / "bench_upsampler.json"
    out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
