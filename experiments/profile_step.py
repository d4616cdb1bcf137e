"""Where a training step's time goes: data, the base codec round trip, the networks.

    OMP_NUM_THREADS=2 python experiments/profile_step.py [EXPERIMENT.toml] [--crop 64] [--steps 30]

Builds the experiment's model and data stream (as ``dualcodec train`` does, without
DeepSpeed: plain Adam, fp32) and times each part of ``--steps`` steps at one crop size
after a few warm-up steps, printing the median per part: the DALI batch, the RGB-to-4:2:0
conversion, the base layer (x264 encode and decode of every crop, serially, in the
forward pass), the rest of the forward pass, the backward pass and the optimizer step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from dualcodec.config import load_experiment
    from dualcodec.data import TRAINING_FORMAT, TrainStream, crops_to_planes, split_sources
    from dualcodec.model import DualLayerModel, lmbda_at, plane_distortion
    from dualcodec.proxy import RealCodecLayer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", nargs="?", type=Path, default=ROOT / "experiments" / "default_x2.toml")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--qp", type=int, default=32)
    args = parser.parse_args()

    exp = load_experiment(args.experiment)
    files, _ = split_sources(exp.data.train_dirs, exp.data.val_fraction, exp.data.val_gap)
    stream = TrainStream(files, args.crop, exp.schedule.batch, seed=0, crops_per_image=exp.data.crops_per_image)
    model = DualLayerModel(exp.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    base = RealCodecLayer(exp.base.codec, exp.base.preset, args.qp)
    times: dict[str, list[float]] = {}

    def timed(name, fn, *a):
        start = time.perf_counter()
        out = fn(*a)
        times.setdefault(name, []).append(time.perf_counter() - start)
        return out

    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            times.clear()
        total = time.perf_counter()
        x = timed("data (DALI batch)", stream.next)
        y, uv = timed("RGB to 4:2:0 planes", crops_to_planes, x)
        forward = time.perf_counter()
        out = model(y, uv, lambda a, b: timed("base layer (x264 round trip)", base, a, b), args.qp, TRAINING_FORMAT)
        loss = plane_distortion(out.y_hat, out.uv_hat, y, uv) + lmbda_at(exp.loss.lmbda, args.qp) * (
            out.side_bits.sum() / y.numel())
        times.setdefault("forward (networks)", []).append(
            time.perf_counter() - forward - times["base layer (x264 round trip)"][-1])
        optimizer.zero_grad()
        timed("backward", loss.backward)
        timed("optimizer step", optimizer.step)
        times.setdefault("whole step", []).append(time.perf_counter() - total)

    print(f"{args.experiment.name}: batch {exp.schedule.batch}, crop {args.crop}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps")
    whole = statistics.median(times["whole step"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:30s} {1000 * median:8.1f} ms  {100 * median / whole:5.1f}%")


if __name__ == "__main__":
    main()
