"""This machine against the one the real-time budget was measured on.

    python experiments/bench_machine.py [--threads 2] [--repeats 30]

``../shared/RESEARCH.md`` section 8 sets the decoding budget from networks timed "on
these 2 cores": among them a luma network of 16 channels and 4 layers (3x3
convolutions 1-16-16-16-4 at low resolution, pixel-shuffled x2 to a 1920x1080 output),
85 ms in OpenVINO fp32 and 26.8 ms in int8 there, on a CPU with AVX-512 VNNI. This
script builds that network at random weights (speed does not depend on them), compiles
it with OpenVINO (latency hint) in fp32 and in int8 (every convolution's input and
weights fake-quantised as ``dualcodec export`` does, over a random frame's ranges), and
prints the median milliseconds per frame over ``--repeats`` runs after a warm-up, with
the CPU's instruction sets as OpenVINO sees them. The ratio to section 8's figures is
how much slower (or faster) every speed measured here is than on that machine.
Writes experiments/results/bench_machine.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION_8_MS = {"fp32": 85.0, "int8": 26.8}  # ../shared/RESEARCH.md section 8, "luma in, 16 ch, 4 layers"


def network(quantised: bool):
    import torch
    from torch import nn

    from dualcodec.nets.quant import QuantConv2d

    torch.manual_seed(0)
    widths = [1, 16, 16, 16, 4]
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(widths, widths[1:])):
        conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        layers.append(QuantConv2d(conv) if quantised else conv)
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    layers.append(nn.PixelShuffle(2))
    net = nn.Sequential(*layers).eval()
    if quantised:  # each convolution's input range on a random frame
        x = torch.rand(1, 1, 540, 960)
        with torch.no_grad():
            for layer in net:
                if isinstance(layer, QuantConv2d):
                    layer.calibrate(float(x.min()), float(x.max()))
                x = layer(x)
    return net


def cpu_flags() -> list[str]:
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        return []
    return sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)


def main() -> int:
    import numpy as np
    import openvino as ov
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    core = ov.Core()
    x = np.random.default_rng(0).random((1, 1, 540, 960), dtype=np.float32)
    result = {"threads": args.threads, "repeats": args.repeats, "cpu": core.get_property("CPU", "FULL_DEVICE_NAME"),
              "cpu_flags": cpu_flags(), "section_8_ms": SECTION_8_MS, "ms": {}, "ratio": {}}
    for precision in ("fp32", "int8"):
        with torch.no_grad():
            graph = ov.convert_model(network(precision == "int8"), example_input=torch.from_numpy(x))
        compiled = core.compile_model(graph, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads,
                                                     "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        request.infer([x])
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            request.infer([x])
            times.append(1000 * (time.perf_counter() - start))
        ms = statistics.median(times)
        result["ms"][precision] = round(ms, 2)
        result["ratio"][precision] = round(ms / SECTION_8_MS[precision], 2)
        print(f"{precision}: {ms:.1f} ms ({ms / SECTION_8_MS[precision]:.2f}x section 8's {SECTION_8_MS[precision]} ms)")
    print(f"CPU: {result['cpu']}; {', '.join(result['cpu_flags']) or 'no AVX flags read'}")
    out = ROOT / "experiments" / "results" / "bench_machine.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
