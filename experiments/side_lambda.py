"""How much the encoder should spend on the side stream: its rate weights against BD-rate.

The encoder's side-stream choices (which blocks are enhanced; NEW, REPEAT or SKIP per
frame) weigh the side bits by the rate weight the model was trained with,
``lmbda(qp) = lmbda * 2 ** ((qp - 32) / 6)`` (:func:`dualcodec.model.lmbda_at`), on the
base layer's key frames, and by ``--side-weight`` times it on the frames the base codec
predicts (:data:`dualcodec.sidestream.SIDE_WEIGHT`). The trained weight is right only if
a side bit buys as much as a base-layer bit at the same QP; on predicted frames the base
codec's bits buy more (it predicts from earlier frames, the side stream does not).

This sweep encodes the content with the model at ``--scale 2`` (any frame may send NEW
latents: ``dualcodec encode --side-new all``), for every pair of a key-frame
multiplier (``--key``) and a predicted-frame multiplier (``--inter``) of the trained
weight, and reports each pair's BD-rate (PSNR-YUV 6:1:1) against the bicubic and plain
rows of the RD sweep (``experiments/results/rd``: same QPs, same content, H.264), and the
side stream's share of the bytes at each QP. Content ``train`` is held out from the
evaluation sets, for choosing the weights without them: the first 8 frames of four
training clips (``../shared/data/video_train``: london, bedroom, juggle, bbb), downscaled
by 2 with FFmpeg's bicubic scaler as training reads them (written to runs_data/, not
committed); its bicubic and plain anchors are measured here.

    OMP_NUM_THREADS=1 python experiments/side_lambda.py [--content video kodak train] [--key 1] [--inter 1 4 16]

Writes experiments/results/side_lambda/<content>.json (per pair: the results in
CompressAI's layout, as ``dualcodec eval`` writes them, and the BD-rates); a run resumes
from it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

from rd_sweep import CONTENT, SHARED  # noqa: E402  (the RD sweep's content and frame counts)

TRAIN_CLIPS = ["androidx_london_1024x768.mp4", "sam2_bedroom_960x540.mp4", "sam2_juggle_1280x720.mp4",
               "bbb_1920x1080_vp8.webm"]
TRAIN_FRAMES = 8


def train_clips(folder: Path) -> list[Path]:
    """The held-out content: each training clip's first frames at half size, as y4m in ``folder``."""
    from fractions import Fraction

    import av

    from dualcodec.basecodec import planes_from_frame
    from dualcodec.video import Y4MWriter
    from dualcodec.yuv import BT709, YUVFormat

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in TRAIN_CLIPS:
        target = folder / (Path(name).stem + f"_half_{TRAIN_FRAMES}f.y4m")
        if not target.is_file():
            with av.open(str(SHARED / "video_train" / name)) as inp:
                writer = None
                for i, frame in enumerate(inp.decode(video=0)):
                    if i == TRAIN_FRAMES:
                        break
                    frame = frame.reformat(frame.width // 4 * 2, frame.height // 4 * 2, "yuv420p", interpolation="BICUBIC")
                    if writer is None:
                        writer = Y4MWriter(target, frame.width, frame.height, Fraction(25), YUVFormat(8, False, BT709))
                    writer.write(planes_from_frame(frame))
                writer.close()
        paths.append(target)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--content", nargs="+", default=["video"], choices=[*CONTENT, "train"])
    parser.add_argument("--key", type=float, nargs="+", default=[1.0], help="key-frame multipliers")
    parser.add_argument("--inter", type=float, nargs="+", default=[1.0, 4.0, 16.0],
                        help="predicted-frame multipliers")
    parser.add_argument("--metric", choices=["l1", "mse"], default="l1",
                        help="the encoder's side distortion; mse weighs bits by the multipliers times lmbda(qp)^2 of "
                             "the shipped models' lmbda, whatever the model's "
                             "(the encoder's default rule is mse at key x8, inter x32: dualcodec.sidestream)")
    parser.add_argument("--rd", type=Path, default=ROOT / "experiments" / "results" / "rd",
                        help="the RD sweep's results (the bicubic and plain rows)")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "experiments" / "results" / "side_lambda",
                        help="folder of the results, one file per content")
    args = parser.parse_args()

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import BicubicLayers, LayeredCodec, ModelLayers, PlainLayers
    from dualcodec.evaluate import points_from_results, results_json, sweep, write_results
    from dualcodec.metrics import bd_rate
    from dualcodec.model import lmbda_at, load_model
    from dualcodec.sidestream import MSE_LMBDA

    loaded = load_model(args.model)
    qps = json.loads((args.rd / "sweep.json").read_text())["qps"]
    args.out.mkdir(parents=True, exist_ok=True)
    for content in args.content:
        path = args.out / f"{content}.json"
        record = json.loads(path.read_text()) if path.is_file() else {}
        if record and (record.get("fingerprint") != loaded.fingerprint or record.get("qps") != qps):
            print(f"side_lambda: {path} holds another model's or other QPs' results; move it away", file=sys.stderr)
            return 1
        record.update({"model": args.model, "fingerprint": loaded.fingerprint, "qps": qps,
                       "command": " ".join(["python experiments/side_lambda.py", *sys.argv[1:]])})
        runs = record.setdefault("runs", {})
        if content == "train":
            sources, frames = [str(p) for p in train_clips(ROOT / "runs_data" / "side_lambda_train")], None
            anchors = record.setdefault("anchors", {})
            for baseline, layers in (("bicubic", lambda: BicubicLayers(2)), ("plain", PlainLayers)):
                if baseline not in anchors:
                    points = sweep(sources, lambda qp, layers=layers: LayeredCodec(layers(), BaseCodecSettings(codec="h264", qp=qp)),
                                   qps, desc=f"train {baseline}")
                    anchors[baseline] = results_json(points, baseline, baseline, {}, sources, qps)["results"]
                    write_results(path, record)
        else:
            list_sources, frames = CONTENT[content]
            sources = [str(p) for p in list_sources()]
            anchors = {m: json.loads((args.rd / f"{content}_h264_{m}.json").read_text())["results"]
                       for m in ("bicubic", "plain")}
        for key_multiplier, inter_multiplier in itertools.product(args.key, args.inter):
            key = f"{content} key x{key_multiplier:g} inter x{inter_multiplier:g}" + ("" if args.metric == "l1" else " mse")
            done = points_from_results(runs[key]["results"]) if key in runs else []

            def codec(qp: int, k=key_multiplier, i=inter_multiplier) -> LayeredCodec:
                weight = lmbda_at(loaded.lmbda, qp) if args.metric == "l1" else lmbda_at(MSE_LMBDA, qp) ** 2
                layers = ModelLayers(loaded, k * weight, level=qp, inter_weight=i / k, metric=args.metric)
                return LayeredCodec(layers, BaseCodecSettings(codec="h264", qp=qp))

            def save(points, key=key, sources=sources, path=path, record=record,
                     weights={"key": key_multiplier, "inter": inter_multiplier, "metric": args.metric}) -> None:
                runs[key] = {"multipliers": weights, "content": content,
                             "results": results_json(points, key, f"side weight {weights}", weights, sources, qps)}
                write_results(path, record)

            points = sweep(sources, codec, qps, frames, desc=key, done=done, on_point=save)
            save(points)
            result = runs[key]["results"]["results"]
            runs[key]["side_share"] = [round(s / f, 3) for s, f in zip(result["side_bytes"], result["file_bytes"])]
            for anchor, a in anchors.items():
                bd = bd_rate(a["bpp"], a["psnr-yuv"], result["bpp"], result["psnr-yuv"])
                runs[key][f"bd_rate_vs_{anchor}"] = round(bd.value, 2)
            write_results(path, record)
            print(f"{key}: vs bicubic {runs[key]['bd_rate_vs_bicubic']:+.1f}%, vs plain "
                  f"{runs[key]['bd_rate_vs_plain']:+.1f}%, side share {runs[key]['side_share']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
