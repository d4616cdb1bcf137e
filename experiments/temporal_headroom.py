"""How much any block-wise reuse of other frames' outputs could buy, at best: an oracle.

    python experiments/temporal_headroom.py [--model default] [--frames 8] [--qps 22 27 32 37 42]
                                            [--block 16] [--search 8] [--families ...] [--prices 1 4 16]
                                            [--signalled motion|decoded]
                                            [--clips ...] [-o OUT]

Codes the first ``--frames`` frames of each shared clip of the RD sweep (H.264, GOP 32,
the per-frame ``--model``'s file) at each QP, upsamples every base frame with the model
(eager torch), then lets an oracle that sees the source rebuild each frame after the
first block by block (``--block`` luma samples, the co-sited chroma block), keeping
whatever is closest to the source in 6:1:1 squared error among:

* ``zero``:   the frame's own output, the previous frame's rebuilt output at the same
  place, or their mean (an LCEVC-style temporal buffer, per block, with perfect choices);
* ``motion``: the same, the previous output moved by the best even shift within
  +-``--search`` samples per block (motion a decoder would have to estimate or be sent);
* ``both``:   ``motion``, plus the next frame's own output moved likewise and its mean
  with the current one (a decoder that waits for the next frame);
* ``decoded``: ``zero``'s three candidates with the previous output moved by the shift a
  decoder can find by itself, the one that best matches the frame's own output (least
  6:1:1 squared error, no source): what motion estimated from decoded frames holds,
  with perfect choices of how to use it;
* ``decoded_blend``: the same moved output, blended with the frame's own by the weight
  in [0, 1] per block that brings it closest to the source (a linear fusion per block,
  with perfect weights);
* ``decoded_both``: ``decoded`` with the next frame's own output too, moved by the shift
  that best matches the frame's own output: the own output, either moved one, the mean
  of the own output with either or with both (a decoder that waits one frame, as
  MFQE-style enhancers use the better frames on both sides, with perfect choices).

Two families are real decoders, with neither source nor bits: a decoder-side temporal
filter, VTM's MCTF weights (``mctf``) on the decoder's own motion.

* ``blind``: each frame's own output filtered with the previous rebuilt output, moved by
  ``decoded``'s shift (one-sided weights);
* ``blind_both``: with the next frame's own output too, moved likewise (two-sided weights:
  a decoder one frame behind), at ``--strength``.

The previous output is the previous frame's rebuilt one, so a block can be carried
across the GOP. The choices and the motion cost no bits in these three, so each BD-rate
(the family against the model alone, the file's bytes for both) bounds from below what a
temporal upsampler or temporal side stream built on that family can reach on these
clips with this base layer: a learned fusion could still do better than a choice, but
it has to find what the oracle is handed. The bound is loose: picking the best of 163
candidates per block also fits the source's noise.

* ``signalled_K``: ``motion`` (or, ``--signalled decoded``, ``decoded``) made real, an
  encoder's per-block choice sent to the decoder: each block's squared error plus ``K``
  times H.264's Lagrangian at the QP (``--prices``) times the bits of its mode and shift
  (entropy under the frame's own frequencies, plus a table a frame), those bits added
  to the file.

Writes ``-o`` (default experiments/results/temporal_headroom.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from rd_sweep import CLIPS, SHARED  # noqa: E402

FAMILIES = ("zero", "motion", "both", "decoded", "decoded_blend", "decoded_both", "blind", "blind_both")
H264_LAMBDA = 0.85  # H.264's mode-decision Lagrangian: 0.85 * 2^((QP - 12) / 3) per bit, 8-bit SSD
TABLE_BITS = 8 * (3 + 2 * 9) // 2  # a frame's code tables (mode and shift frequencies), half a byte each
WEIGHTS = (6.0, 4.0, 4.0)  # 6:1:1 of per-plane MSE, in squared error per block (chroma has 1/4 the samples)
ONE_SIDED = (1.13, 0.97)  # VTM's MCTF reference weights at distances 1 and 2, references on one side
TWO_SIDED = (0.85, 0.57)  # the same with references on both sides
PLANE_WEIGHTS = (0.4, 0.55, 0.55)  # VTM's MCTF luma and chroma weights


def block_error(planes, source, block: int):
    """6:1:1-weighted squared error of each luma block and its chroma blocks: [rows, cols]."""
    difference = [p - s for p, s in zip(planes, source)]
    return block_product(difference, difference, block)


def block_product(a, b, block: int):
    """6:1:1-weighted inner product of planes ``a`` and ``b`` over each luma block and its
    chroma blocks: [rows, cols] (``block_error`` is ``block_product(d, d)`` of the difference)."""
    import torch.nn.functional as F

    total = 0
    for k, (p, q, w) in enumerate(zip(a, b, WEIGHTS)):
        size = block if k == 0 else block // 2
        total = total + w * F.avg_pool2d((p * q)[None, None], size)[0, 0] * size * size
    return total


def spread(values, block: int, shapes):
    """Per-block values (a mask, or weights) as per-sample planes of each plane's shape
    (samples past the last whole block: False, 0)."""
    import torch

    out = []
    for k, shape in enumerate(shapes):
        size = block if k == 0 else block // 2
        full = values.repeat_interleave(size, 0).repeat_interleave(size, 1)
        plane = torch.zeros(shape, dtype=values.dtype)
        plane[: full.shape[0], : full.shape[1]] = full
        out.append(plane)
    return out


def shifted(planes, dy: int, dx: int):
    """The planes moved by (dy, dx) luma samples (even), edges repeated."""
    import torch.nn.functional as F

    out = []
    for k, p in enumerate(planes):
        sy, sx = (dy, dx) if k == 0 else (dy // 2, dx // 2)
        r = max(abs(sy), abs(sx))
        if r == 0:
            out.append(p)
            continue
        padded = F.pad(p[None, None], (r, r, r, r), mode="replicate")[0, 0]
        h, w = p.shape
        out.append(padded[r - sy : r - sy + h, r - sx : r - sx + w])
    return out


def even_shifts(search: int) -> list[tuple[int, int]]:
    """Every even shift (dy, dx) within +-``search`` luma samples."""
    return [(dy, dx) for dy in range(-search, search + 1, 2) for dx in range(-search, search + 1, 2)]


def assembled(base, choice, candidate, block: int):
    """``base``'s planes with each whole block taken from ``candidate(index)``, the planes
    of the index ``choice`` ``[rows, cols]`` (numpy or torch) names there (``None``: ``base``'s own)."""
    import torch

    choice = torch.as_tensor(choice)
    out = [p.clone() for p in base]
    shapes = [p.shape for p in base]
    for index in torch.unique(choice).tolist():
        planes = candidate(index)
        if planes is None:
            continue
        for o, c, mask in zip(out, planes, spread(choice == index, block, shapes)):
            o.copy_(torch.where(mask, c, o))
    return out


def _candidate(current, others, meta):
    """The planes a candidate ``(other, dy, dx, mean)`` stands for (``other`` None: the frame's own)."""
    other, dy, dx, mean = meta
    if other is None:
        return current
    moved = shifted(others[other], dy, dx)
    return [(c + m) / 2 for c, m in zip(current, moved)] if mean else moved


def compensated(reference, target, block: int, search: int):
    """``reference`` moved block by block by the even shift within +-``search`` luma
    samples that best matches ``target`` (6:1:1 squared error); samples past the last
    whole block stay ``target``'s."""
    import torch

    shifts = even_shifts(search)
    estimate = torch.stack([block_error(shifted(reference, dy, dx), target, block) for dy, dx in shifts]).argmin(0)
    return assembled(target, estimate, lambda index: shifted(reference, *shifts[index]), block)


def mctf(current, references, qp: int, bit_depth: int, strength: float):
    """``current``'s planes filtered with ``references`` (``(planes, a)``: planes already
    moved onto ``current``, ``a`` the distance weight), VTM's MCTF: each sample
    ``(x + sum w_i r_i) / (1 + sum w_i)`` with ``w_i = strength p a_i exp(-(r_i - x)^2 /
    (2 sigma^2))``, ``p`` PLANE_WEIGHTS, ``sigma`` ``3 (QP - 10)`` for luma and 30 for
    chroma in 10-bit units."""
    import torch

    to_10_bits = 2.0 ** (10 - bit_depth)
    sigmas = (3.0 * (qp - 10), 30.0, 30.0)
    total = [p.clone() for p in current]
    weights = [torch.ones_like(p) for p in current]
    for moved, a in references:
        for k, (m, x) in enumerate(zip(moved, current)):
            w = strength * PLANE_WEIGHTS[k] * a * torch.exp(-(((m - x) * to_10_bits) ** 2) / (2 * sigmas[k] ** 2))
            total[k] += w * m
            weights[k] += w
    return [t / w for t, w in zip(total, weights)]


def clip_frames(name: str, count: int):
    """The first ``count`` frames of the shared clip ``name``, and their format."""
    from dualcodec.video import VideoReader

    reader = VideoReader(SHARED / "video" / name)
    return [f for _, f in zip(range(count), reader.frames())], reader.info.format


def rebuild_decoded(current, references, source, block: int, search: int, blend: bool = False):
    """``current`` rebuilt block by block from itself, each of ``references`` moved by the
    even shift within +-``search`` that best matches ``current`` (the decoder's own
    estimate), or the mean of itself with one or all of them: each block the closest to
    ``source``. ``blend`` (one reference): instead, each block ``current + w (moved -
    current)`` with the ``w`` in [0, 1] of least 6:1:1 squared error to ``source``."""
    import torch

    moves = [compensated(reference, current, block, search) for reference in references]
    if blend:
        (moved,) = moves
        change = [m - c for m, c in zip(moved, current)]
        along = block_product(change, [s - c for s, c in zip(source, current)], block)
        weight = (along / block_product(change, change, block).clamp_min(1e-9)).clamp(0, 1)
        return [c + w * d for c, w, d in zip(current, spread(weight, block, [p.shape for p in current]), change)]
    candidates = [None, *moves, *([(c + m) / 2 for c, m in zip(current, moved)] for moved in moves)]
    if len(moves) > 1:
        candidates.append([sum(planes) / len(planes) for planes in zip(current, *moves)])
    choice = torch.stack([block_error(current if c is None else c, source, block) for c in candidates]).argmin(0)
    return assembled(current, choice, candidates.__getitem__, block)


def _entropy_bits(symbols, count: int):
    """Bits of each symbol value under the symbols' frequencies, half a count added to each
    (the table a frame sends: no value is impossible)."""
    frequency = (np.bincount(symbols, minlength=count) + 0.5) / (symbols.size + 0.5 * count)
    return -np.log2(frequency)


def rebuild(current, others, source, block: int, search: int, price: float | None = None):
    """The frame rebuilt block by block from its own output or one of ``others`` moved by an
    even shift within +-``search`` (or its mean with the own output): each block the
    closest to ``source`` (``price`` None: the oracle), or the least squared error (luma
    units: (6 Y + 4 U + 4 V) / 6) plus ``price`` times its bits, the mode and the two
    shift components each coded with a table of the frame's own frequencies (refined from
    the choices three times; the last choice is made and coded under the same tables),
    plus TABLE_BITS a frame, or one bit for a frame that keeps its own output everywhere
    where that costs less. Returns (planes, bits)."""
    import torch

    shifts = even_shifts(search)
    metas = [(None, 0, 0, False)] + [(o, dy, dx, mean) for o in range(len(others)) for dy, dx in shifts
                                      for mean in (False, True)]
    errors = torch.stack([block_error(_candidate(current, others, m), source, block) for m in metas]).double().numpy()
    bits = 0.0
    if price is None:
        choice = errors.argmin(0)
    else:
        errors = errors / WEIGHTS[0]
        modes = np.array([0] + [1 + 2 * o + mean for o, _, _, mean in metas[1:]])
        span = search + 1  # shift components: search // 2 * 2 + 1 values
        ys = np.array([(dy + search) // 2 for _, dy, _, _ in metas])
        xs = np.array([(dx + search) // 2 for _, _, dx, _ in metas])
        mode_bits, y_bits, x_bits = np.full(modes.max() + 1, 4.0), np.full(span, 4.0), np.full(span, 4.0)
        for _ in range(4):  # the last choice is coded with the tables it was made under
            rates = mode_bits[modes] + np.where(modes > 0, y_bits[ys] + x_bits[xs], 0.0)
            choice = (errors + price * rates[:, None, None]).argmin(0)
            chosen = choice.ravel()
            bits = float(rates[chosen].sum()) + TABLE_BITS
            moved = modes[chosen] > 0
            mode_bits = _entropy_bits(modes[chosen], modes.max() + 1)
            y_bits, x_bits = _entropy_bits(ys[chosen][moved], span), _entropy_bits(xs[chosen][moved], span)
        own = errors[0].sum()
        if own + price <= float(np.take_along_axis(errors, choice[None], 0).sum()) + price * bits:
            choice, bits = np.zeros_like(choice), 1.0  # a frame flag: no block moved, no tables
    return assembled(current, choice, lambda index: _candidate(current, others, metas[index]) if index else None,
                     block), bits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="the per-frame model (name or file)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--qps", type=int, nargs="+", default=[22, 27, 32, 37, 42])
    parser.add_argument("--block", type=int, default=16, help="luma block side (even)")
    parser.add_argument("--search", type=int, default=8, help="motion search range in luma samples")
    parser.add_argument("--families", nargs="*", choices=FAMILIES, default=list(FAMILIES),
                        help="the free oracles to run")
    parser.add_argument("--prices", type=float, nargs="*", default=[1.0, 4.0, 16.0],
                        help="the signalled family's bit prices, in multiples of H.264's Lagrangian at the QP")
    parser.add_argument("--signalled", choices=("motion", "decoded"), default="motion",
                        help="what the signalled family sends: a choice and a shift a block, or a choice "
                             "among decoded's three candidates (the decoder finds the shift)")
    parser.add_argument("--strength", type=float, default=1.5,
                        help="the blind families' MCTF strength (VTM's: 1.5 on its key frames)")
    parser.add_argument("--clips", nargs="+", default=CLIPS)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "experiments" / "results" / "temporal_headroom.json")
    args = parser.parse_args()

    import torch

    from dualcodec.basecodec import BaseCodecSettings, Planes
    from dualcodec.codec import LayeredCodec, ModelLayers
    from dualcodec.container import ContainerReader
    from dualcodec.metrics import bd_rate, psnr_yuv
    from dualcodec.model import load_model
    from dualcodec.video import crop_planes

    loaded = load_model(args.model)
    if loaded.config.temporal:
        raise SystemExit(f"{args.model} is a temporal model; the oracle starts from a per-frame one")
    results = {"model": loaded.fingerprint, "frames": args.frames, "qps": args.qps, "block": args.block,
               "search": args.search, "signalled": args.signalled, "strength": args.strength, "clips": {}}
    for name in args.clips:
        source, fmt = clip_frames(name, args.frames)
        peak = (1 << fmt.bit_depth) - 1
        dtype = source[0].y.dtype
        rows = {"bytes": [], "model": [], **{f: [] for f in args.families},
                **{f"signalled_{k:g}": {"bytes": [], "psnr": []} for k in args.prices}}
        for qp in args.qps:
            data = LayeredCodec(ModelLayers(loaded), BaseCodecSettings(codec="h264", qp=qp)).compress(source, fmt)
            container = ContainerReader(data)
            header = container.header
            layers = ModelLayers(loaded, runtime="torch")
            outputs = []
            with torch.inference_mode():
                for planes in container.base_frames():
                    if planes.key_frame:
                        layers.reset()
                    out = crop_planes(layers.up(planes, None, header.yuv_format), header.width, header.height)
                    outputs.append([torch.from_numpy(p.astype(np.float32)) for p in (out.y, out.u, out.v)])
                truth = [[torch.from_numpy(p.astype(np.float32)) for p in (s.y, s.u, s.v)] for s in source]

                def quality(frames):
                    return float(np.mean([psnr_yuv(s, Planes(*(p.round().clamp(0, peak).numpy().astype(dtype) for p in f)),
                                                   fmt.bit_depth).weighted for s, f in zip(source, frames)]))

                def rebuilt(family: str, price: float | None = None):
                    frames, bits = [outputs[0]], 0.0
                    for t in range(1, len(outputs)):
                        if family == "decoded" and price is not None:  # the decoder's motion, the choice sent
                            moved = compensated(frames[t - 1], outputs[t], args.block, args.search)
                            frame, frame_bits = rebuild(outputs[t], [moved], truth[t], args.block, 0, price)
                            frames.append(frame)
                            bits += frame_bits
                            continue
                        if family.startswith("blind"):
                            nearest = ONE_SIDED if family == "blind" else TWO_SIDED
                            references = [(compensated(frames[t - 1], outputs[t], args.block, args.search), nearest[0])]
                            if family == "blind_both" and t + 1 < len(outputs):
                                references.append((compensated(outputs[t + 1], outputs[t], args.block, args.search),
                                                   nearest[0]))
                            frames.append(mctf(outputs[t], references, qp, fmt.bit_depth, args.strength))
                            continue
                        if family.startswith("decoded"):
                            after = [outputs[t + 1]] if family == "decoded_both" and t + 1 < len(outputs) else []
                            frames.append(rebuild_decoded(outputs[t], [frames[t - 1], *after], truth[t], args.block,
                                                          args.search, blend=family == "decoded_blend"))
                            continue
                        others = [frames[t - 1]] + ([outputs[t + 1]] if family == "both" and t + 1 < len(outputs) else [])
                        frame, frame_bits = rebuild(outputs[t], others, truth[t], args.block,
                                                    0 if family == "zero" else args.search, price)
                        frames.append(frame)
                        bits += frame_bits
                    return frames, bits

                rows["bytes"].append(len(data))
                rows["model"].append(quality(outputs))
                for family in args.families:
                    rows[family].append(quality(rebuilt(family)[0]))
                lagrangian = H264_LAMBDA * 2 ** ((qp - 12) / 3) * (peak / 255) ** 2
                for k in args.prices:
                    frames, bits = rebuilt(args.signalled, k * lagrangian)
                    rows[f"signalled_{k:g}"]["bytes"].append(len(data) + bits / 8)
                    rows[f"signalled_{k:g}"]["psnr"].append(quality(frames))
            gains = [f"{f} {rows[f][-1] - rows['model'][-1]:+.3f}" for f in args.families]
            gains += [f"signalled x{k:g} {rows[f'signalled_{k:g}']['psnr'][-1] - rows['model'][-1]:+.3f} dB "
                      f"{rows[f'signalled_{k:g}']['bytes'][-1] / len(data) - 1:+.1%}" for k in args.prices]
            print(f"{name} QP {qp}: {len(data)} B, model {rows['model'][-1]:.3f} dB, " + ", ".join(gains), flush=True)
        rows["bd_rate"] = {f: bd_rate(rows["bytes"], rows["model"], rows["bytes"], rows[f]).value for f in args.families}
        for k in args.prices:
            row = rows[f"signalled_{k:g}"]
            rows["bd_rate"][f"signalled_{k:g}"] = bd_rate(rows["bytes"], rows["model"], row["bytes"], row["psnr"]).value
        results["clips"][name] = rows
        print(f"{name} BD-rate: " + ", ".join(f"{f} {v:+.2f}%" for f, v in rows["bd_rate"].items()), flush=True)
    keys = list(next(iter(results["clips"].values()))["bd_rate"])
    results["mean_bd_rate"] = {f: float(np.mean([c["bd_rate"][f] for c in results["clips"].values()])) for f in keys}
    print("mean of the clips: " + ", ".join(f"{f} {v:+.2f}%" for f, v in results["mean_bd_rate"].items()))
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
