"""Training-data throughput: the DALI stream (dualcodec.data) against a PyTorch DataLoader.

Both produce the same thing: uint8 ``[16, 3, 128, 128]`` batches of random crops with
random horizontal and vertical flips and a random multiple of 90 degrees, from the
shared training images, on the same 2 cores:

* DALI: :class:`dualcodec.data.TrainStream`, ``num_threads=2``, prefetch queue of 2;
  with one crop per image it decodes only the crop window (``decoders.image_crop``),
  with ``K`` crops per image it decodes the whole image once and cuts ``K`` windows;
* DataLoader: a map-style dataset that decodes with PIL, cuts the same crops with
  NumPy, ``num_workers=2``, ``prefetch_factor=2``, persistent workers, shuffled.

The machine is shared, so the two loaders alternate: ``--repeats`` rounds, each building
a fresh DALI stream and a fresh DataLoader in turn, warming each up for ``--warmup``
seconds and timing ``--seconds``; the table shows the median round. images/s counts
decoded images (crops/s = images/s x crops per image).

    nice -n 10 .venv/bin/python experiments/bench_data.py --json experiments/results/bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dualcodec.data import TrainStream, list_images

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "train"
SOURCES = {"sun_hays80": "JPEG", "bsd68": "PNG", "wikipedia": "PNG"}


class PilCrops(torch.utils.data.Dataset):
    """Decode one image with PIL, cut ``crops_per_image`` augmented windows: uint8 ``[K, 3, c, c]``."""

    def __init__(self, files: list[Path], crop: int, crops_per_image: int) -> None:
        self.files, self.crop, self.crops_per_image = files, crop, crops_per_image

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        rng = np.random.default_rng()
        with Image.open(self.files[index]) as im:
            rgb = np.asarray(im.convert("RGB"))
        c = self.crop
        crops = []
        for _ in range(self.crops_per_image):
            y, x = rng.integers(rgb.shape[0] - c + 1), rng.integers(rgb.shape[1] - c + 1)
            patch = rgb[y : y + c, x : x + c]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            if rng.random() < 0.5:
                patch = patch[::-1]
            crops.append(np.rot90(patch, rng.integers(4)))
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def dataloader_batches(files: list[Path], crop: int, batch: int, crops_per_image: int) -> Callable[[], torch.Tensor]:
    loader = torch.utils.data.DataLoader(PilCrops(files, crop, crops_per_image), batch_size=batch // crops_per_image,
                                         shuffle=True, num_workers=2, prefetch_factor=2, persistent_workers=True,
                                         drop_last=True)

    def endless():
        while True:
            yield from loader

    stream = endless()
    return lambda: next(stream).flatten(0, 1)


def dali_batches(files: list[Path], crop: int, batch: int, crops_per_image: int) -> Callable[[], torch.Tensor]:
    return TrainStream(files, crop, batch, seed=0, threads=2, crops_per_image=crops_per_image).next


def measure(build: Callable[[], Callable[[], torch.Tensor]], crops_per_image: int, warmup: float,
            seconds: float) -> float:
    """Decoded images per second over ``seconds``, from a fresh loader after ``warmup`` seconds."""
    next_batch = build()

    def span(duration: float) -> float:
        start, crops = time.perf_counter(), 0
        while time.perf_counter() - start < duration:
            crops += next_batch().shape[0]
        return crops / crops_per_image / (time.perf_counter() - start)

    span(warmup)
    return span(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--crops-per-image", type=int, nargs="+", default=[1, 4], metavar="K")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per timed span")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results here")
    args = parser.parse_args()
    if not TRAIN.is_dir():
        raise SystemExit(f"training images not found: {TRAIN}")

    rows = []
    print(f"{'source':<11} {'format':<6} {'K':>2} {'DataLoader img/s':>17} {'DALI img/s':>11} {'DALI/DL':>8}")
    for source in args.sources:
        files = list_images(TRAIN / source)
        for k in args.crops_per_image:
            # Alternate the two loaders, one fresh loader per span, so both see the same load
            # on this shared machine (and neither's idle workers run during the other's span).
            runs = {"dali": [], "dataloader": []}
            for _ in range(args.repeats):
                for name, build in (("dali", dali_batches), ("dataloader", dataloader_batches)):
                    runs[name].append(measure(partial(build, files, args.crop, args.batch, k), k, args.warmup,
                                              args.seconds))
            result = {name: {"images_per_s": statistics.median(r), "runs": r} for name, r in runs.items()}
            ratio = result["dali"]["images_per_s"] / result["dataloader"]["images_per_s"]
            rows.append({"source": source, "format": SOURCES[source], "files": len(files), "crops_per_image": k,
                         **result, "ratio": ratio})
            print(f"{source:<11} {SOURCES[source]:<6} {k:>2} {result['dataloader']['images_per_s']:>17.1f} "
                  f"{result['dali']['images_per_s']:>11.1f} {ratio:>7.2f}x", flush=True)
    if args.json:
        import nvidia.dali
        import PIL

        settings = {"crop": args.crop, "batch": args.batch, "warmup_s": args.warmup, "span_s": args.seconds,
                    "repeats": args.repeats, "dali_threads": 2, "dali_prefetch": 2, "dataloader_workers": 2,
                    "dataloader_prefetch_factor": 2,
                    "statistic": "median of the alternating rounds; images = decoded images"}
        versions = {"dali": nvidia.dali.__version__, "torch": torch.__version__, "pillow": PIL.__version__,
                    "python": platform.python_version()}
        machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
        args.json.write_text(json.dumps({"settings": settings, "versions": versions, "machine": machine,
                                         "results": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
