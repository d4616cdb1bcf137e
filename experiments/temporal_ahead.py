"""A learned decoder one frame behind: the two-sided temporal model against the per-frame
default and the one-sided adapter, on the same base layer.

    python experiments/temporal_ahead.py [--models default ADAPTER AHEAD] [--frames 8]
                                         [--qps 22 27 32 37 42] [--clips ...] [-o OUT]

``experiments/temporal_x2_ahead.toml`` trains ``model.temporal_ahead``: the adapter's
recipe (the per-frame default frozen, the temporal part alone trained, 3500 steps) with
the next frame's decoded base as a third input, aligned by motion of its own. Its
downsampler is the default's, so all three models upsample the very same base layer:
each shared clip's first ``--frames`` frames coded by the default (H.264, GOP 32, as the
RD sweep codes them) at each QP. Each model then upsamples the decoded base frames in
eager torch, in order, the temporal ones with the previous frame's base and rounded
output (as the decoder keeps them) and, the two-sided one, the next frame's base (none
for a GOP's last frame). The decoder does not run a two-sided model (``dualcodec.model.
undecodable``), so no file of it exists: every model is charged the default's file
bytes (a real file's header would differ by the model's name). Quality: PSNR-YUV
(6:1:1) of each frame at the source's depth, the mean over the frames; BD-rate of each
model against the first. Writes ``-o`` (default experiments/results/temporal_ahead.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from rd_sweep import CLIPS  # noqa: E402
from temporal_headroom import clip_frames  # noqa: E402

MODELS = ["default", str(ROOT / "experiments/results/runs_v13/temporal_x2_adapter/model.pt"),
          str(ROOT / "experiments/results/runs_v14/temporal_x2_ahead/model.pt")]  # or runs/temporal_x2_ahead/, trained


def upsampled(loaded, frames, header):
    """Every decoded base frame (:class:`~dualcodec.basecodec.Planes`) upsampled by the model,
    in order, as code-value planes of the header's size."""
    import torch

    from dualcodec.basecodec import Planes
    from dualcodec.nets.upsampler import Ahead, Memory
    from dualcodec.yuv import codes_to_unit, unit_scale, unit_to_codes

    model = loaded.model
    scale = torch.tensor(unit_scale(header.yuv_format))
    level = header.level if model.takes_level else None

    def unit(planes):
        y = torch.from_numpy(planes.y.astype(np.float32))[None, None]
        uv = torch.from_numpy(np.stack([planes.u, planes.v]).astype(np.float32))[None]
        return codes_to_unit(y, uv, scale)

    out, memory = [], None
    with torch.inference_mode():
        for i, planes in enumerate(frames):
            if planes.key_frame:
                memory = None
            y_lr, uv_lr = unit(planes)
            after = frames[i + 1] if i + 1 < len(frames) else None
            ahead = Ahead(*unit(after)) if model.reads_ahead and after is not None and not after.key_frame else None
            y_hat, uv_hat = model.upsample(y_lr, uv_lr, None, level, memory if model.temporal else None, ahead)
            y_out, uv_out = (torch.round(p).clamp(0, scale[4]) for p in unit_to_codes(y_hat, uv_hat, scale))
            if model.temporal:  # what the decoder keeps: the base and the rounded output
                memory = Memory(y_lr, uv_lr, *codes_to_unit(y_out, uv_out, scale))
            dtype = planes.y.dtype
            h, w = header.height, header.width
            out.append(Planes(y_out[0, 0, :h, :w].numpy().astype(dtype), uv_out[0, 0, :(h + 1) // 2, :(w + 1) // 2]
                              .numpy().astype(dtype), uv_out[0, 1, :(h + 1) // 2, :(w + 1) // 2].numpy().astype(dtype)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, help="the first is the per-frame reference")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--qps", type=int, nargs="+", default=[22, 27, 32, 37, 42])
    parser.add_argument("--clips", nargs="+", default=CLIPS)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "experiments" / "results" / "temporal_ahead.json")
    args = parser.parse_args()

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec, ModelLayers
    from dualcodec.container import ContainerReader
    from dualcodec.metrics import bd_rate, psnr_yuv
    from dualcodec.model import load_model

    models = [load_model(m) for m in args.models]
    if models[0].config.temporal:
        raise SystemExit(f"{args.models[0]} is a temporal model; the reference is a per-frame one")
    for loaded in models[1:]:
        if not same_base_layer(models[0], loaded):
            raise SystemExit(f"model {loaded.name} downsamples as {models[0].name} does not: it needs its own base layer")
    names = [m.name for m in models]
    results = {"models": {m.name: m.fingerprint for m in models}, "frames": args.frames, "qps": args.qps, "clips": {}}
    for clip in args.clips:
        source, fmt = clip_frames(clip, args.frames)
        rows = {"bytes": [], **{n: [] for n in names}}
        for qp in args.qps:
            data = LayeredCodec(ModelLayers(models[0]), BaseCodecSettings(codec="h264", qp=qp)).compress(source, fmt)
            container = ContainerReader(data)
            frames = list(container.base_frames())
            rows["bytes"].append(len(data))
            for loaded in models:
                outputs = upsampled(loaded, frames, container.header)
                rows[loaded.name].append(float(np.mean([psnr_yuv(s, o, fmt.bit_depth).weighted
                                                        for s, o in zip(source, outputs)])))
            print(f"{clip} QP {qp}: {len(data)} B, " + ", ".join(f"{n} {rows[n][-1]:.3f} dB" for n in names), flush=True)
        rows["bd_rate"] = {n: bd_rate(rows["bytes"], rows[names[0]], rows["bytes"], rows[n]).value for n in names[1:]}
        results["clips"][clip] = rows
        print(f"{clip} BD-rate against {names[0]}: " + ", ".join(f"{n} {v:+.2f}%" for n, v in rows["bd_rate"].items()),
              flush=True)
    results["mean_bd_rate"] = {n: float(np.mean([c["bd_rate"][n] for c in results["clips"].values()]))
                               for n in names[1:]}
    print("mean of the clips: " + ", ".join(f"{n} {v:+.2f}%" for n, v in results["mean_bd_rate"].items()))
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def same_base_layer(a, b) -> bool:
    """Whether two loaded models make the same base layer: the same scale and downsampler
    (bicubic, or learned with the same weights)."""
    import torch

    if (a.config.scale, a.config.downsampler) != (b.config.scale, b.config.downsampler):
        return False
    if a.model.downsampler is None:
        return True
    theirs = b.model.downsampler.state_dict()
    return all(torch.equal(w, theirs[k]) for k, w in a.model.downsampler.state_dict().items())


if __name__ == "__main__":
    sys.exit(main())
