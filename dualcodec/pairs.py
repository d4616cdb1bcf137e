"""Precomputed base layers: training pictures packed with their decoded base, at several QPs.

With the bicubic downsampler the base layer does not depend on the model's weights, so
``dualcodec pairs EXPERIMENT -o DIR`` codes it once, before training, on *whole pictures*
as a file has them, where the training loop otherwise codes each crop as a small intra
picture of its own (:mod:`dualcodec.proxy`). An image is one intra picture; the training
frames of one video (a ``dualcodec frames`` folder, in name order) are one sequence with
the encoder's GOP, P- and B-frames: the artefacts a file's base layer has (intra
prediction across the picture, block edges at every phase of a crop, predicted frames).
Measured, it trains worse models than crops coded in the step (README, *Data*). ``[data] pairs = "DIR"`` trains on them (:class:`dualcodec.train.Trainer`);
validation still codes its fixed crops with the real codec, so its figures compare with
runs that do not read pairs.

Layout: per training picture (the experiment's training split, :func:`dualcodec.data.split_sources`)
one ``.npy``, uint8 ``[H/t, W/t, C]`` on the grid of ``t = 2 s`` source pixels (``s`` the
scale; one base chroma sample per tile). Per tile, the channels are the source's luma
(``t^2``, in ``pixel_unshuffle`` order), Cb and Cr (``s^2`` each), then for each QP of
the index the decoded base's luma (4), Cb and Cr (1 each): ``C = 6 s^2 + 6 Q``. Crops on
the tile grid keep every plane aligned (:class:`dualcodec.data.TrainStream` with
``tile``); :func:`unpack` gives the planes, :func:`augment` flips and rotates them.

``pairs.json`` (written last: a folder without it is incomplete) holds the format and
version, the scale, codec, preset and QPs, and per picture its source, its file and its
base layer's bits per source pixel at each QP. A sequence's bits are shared among its
frames in proportion to their pixels (the frame types differ, but with a fixed
downsampler the base bits carry no gradient; training only logs them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dualcodec.basecodec import BaseCodecSettings, Planes, planes_from_tensors, roundtrip
from dualcodec.data import FRAME_NAME, TRAINING_FORMAT, crops_to_planes
from dualcodec.errors import DualcodecError
from dualcodec.model import BaseLayerOutput
from dualcodec.nets.common import bicubic_down
from dualcodec.outputs import atomic_path
from dualcodec.yuv import BT601, planes_to_unit, unit_to_planes

PAIRS_FORMAT = "dualcodec-pairs"
PAIRS_VERSION = 1
INDEX = "pairs.json"
DEFAULT_QPS = (22, 26, 30, 34, 38, 42)


def channels(scale: int, qps: int) -> int:
    return 6 * scale * scale + 6 * qps


def pack(source: Planes, bases: Sequence[Planes], scale: int) -> np.ndarray:
    """A source picture's planes and its decoded base layers (one per QP) as ``[H/t, W/t, C]``
    uint8 (module docstring); sizes must be whole tiles."""
    def fold(plane: np.ndarray, f: int) -> torch.Tensor:
        return F.pixel_unshuffle(torch.from_numpy(np.ascontiguousarray(plane))[None, None], f)[0]

    parts = [fold(source.y, 2 * scale), fold(source.u, scale), fold(source.v, scale)]
    for base in bases:
        parts += [fold(base.y, 2), fold(base.u, 1), fold(base.v, 1)]
    return torch.cat(parts).permute(1, 2, 0).contiguous().numpy()


def unpack(x: torch.Tensor, scale: int, qp_index: int) -> tuple[torch.Tensor, ...]:
    """uint8 windows ``[B, h, w, C]`` (in tiles) to ``(y, uv, y_lr_hat, uv_lr_hat)`` on the
    unit scale of :data:`~dualcodec.data.TRAINING_FORMAT`: the source's planes and the base
    layer decoded at the index's ``qp_index``-th QP."""
    x = x.permute(0, 3, 1, 2).float()
    t, s2 = 2 * scale, scale * scale
    y = F.pixel_shuffle(x[:, : t * t], t)
    uv = torch.cat([F.pixel_shuffle(x[:, t * t + i * s2 : t * t + (i + 1) * s2], scale) for i in range(2)], dim=1)
    b = 6 * s2 + 6 * qp_index
    y_lr, uv_lr = F.pixel_shuffle(x[:, b : b + 4], 2), x[:, b + 4 : b + 6]
    return (*planes_to_unit(y, uv, TRAINING_FORMAT), *planes_to_unit(y_lr, uv_lr, TRAINING_FORMAT))


def augment(planes: Sequence[torch.Tensor], rotate: bool = True, flip: bool = True) -> list[torch.Tensor]:
    """The same random horizontal and vertical flips (``flip``, p = 1/2 each) and rotation
    by a multiple of 90 degrees (``rotate``) for all planes of a sample, one draw per sample
    from torch's generator, as :class:`dualcodec.data.TrainStream` augments images. Square
    windows; chroma sited at the centre of its 2x2 luma block stays sited so."""
    draws = torch.randint(0, 4, (planes[0].shape[0], 3)).tolist()

    def one(p: torch.Tensor, h: int, v: int, quarter: int) -> torch.Tensor:
        p = p.flip(-1) if flip and h % 2 else p
        p = p.flip(-2) if flip and v % 2 else p
        return torch.rot90(p, quarter, dims=(-2, -1)) if rotate else p

    return [torch.stack([one(p[i], *draws[i]) for i in range(p.shape[0])]) for p in planes]


class PrecomputedLayer:
    """The base layer of :meth:`DualLayerModel.forward` from pairs: the decoded planes as
    they were coded (the model's bicubic downsampling of the same source), ``bits`` ``[B]``."""

    def __init__(self, y_lr_hat: torch.Tensor, uv_lr_hat: torch.Tensor, bits: torch.Tensor) -> None:
        self.out = BaseLayerOutput(y_lr_hat, uv_lr_hat, bits)

    def __call__(self, y_lr: torch.Tensor, uv_lr: torch.Tensor) -> BaseLayerOutput:
        return self.out


@dataclass(frozen=True)
class PairSet:
    """An opened pairs folder: its files in training order and their base bits per pixel."""

    folder: Path
    scale: int
    codec: str
    preset: str | None
    qps: tuple[int, ...]
    files: tuple[Path, ...]
    sources: tuple[Path, ...]
    bpp: dict[str, tuple[float, ...]]  # file path -> base bits per source pixel at each QP

    @classmethod
    def open(cls, folder: Path | str) -> "PairSet":
        folder = Path(folder)
        try:
            index = json.loads((folder / INDEX).read_text())
        except (OSError, ValueError):
            raise DualcodecError(f"{folder} holds no complete pairs ({INDEX} missing or unreadable): "
                                 "write them with dualcodec pairs EXPERIMENT -o DIR") from None
        if index.get("format") != PAIRS_FORMAT or index.get("version") != PAIRS_VERSION:
            raise DualcodecError(f"{folder / INDEX} is not a {PAIRS_FORMAT} index of version {PAIRS_VERSION}")
        items = index["items"]
        files = tuple(folder / item["file"] for item in items)
        return cls(folder, index["scale"], index["codec"], index["preset"], tuple(index["qps"]), files,
                   tuple(Path(item["source"]) for item in items),
                   {str(f): tuple(item["bpp"]) for f, item in zip(files, items)})

    def check(self, scale: int, codec: str, preset: str | None, train_files: Sequence[Path]) -> None:
        """Refuse pairs written for another model scale, base codec or training split."""
        if (self.scale, self.codec, self.preset) != (scale, codec, preset):
            raise DualcodecError(f"pairs in {self.folder} are for scale {self.scale}, {self.codec} preset "
                                 f"{self.preset}; the experiment has scale {scale}, {codec} preset {preset}")
        mine, theirs = {p.resolve() for p in train_files}, {p.resolve() for p in self.sources}
        if mine != theirs:
            raise DualcodecError(f"pairs in {self.folder} were written for other training files "
                                 f"({len(mine ^ theirs)} differ): write them again with dualcodec pairs")

    def qps_within(self, qp_min: int, qp_max: int) -> tuple[int, ...]:
        qps = tuple(q for q in self.qps if qp_min <= q <= qp_max)
        if not qps:
            raise DualcodecError(f"pairs in {self.folder} hold QPs {list(self.qps)}, none in {qp_min}..{qp_max}")
        return qps

    def batch(self, x: torch.Tensor, qp: int, files: Sequence[str], rotate: bool,
              flip: bool = True) -> tuple[torch.Tensor, ...]:
        """Windows ``x`` (from ``files``) to ``(y, uv, base layer)`` at ``qp``, augmented."""
        index = self.qps.index(qp)
        y, uv, y_lr_hat, uv_lr_hat = augment(unpack(x, self.scale, index), rotate, flip)
        pixels = y.shape[-1] * y.shape[-2]
        bits = torch.tensor([self.bpp[f][index] * pixels for f in files], device=y.device)
        return y, uv, PrecomputedLayer(y_lr_hat, uv_lr_hat, bits)


def _picture(path: Path, scale: int) -> tuple[Planes, Planes]:
    """An image file's 4:2:0 planes as training sees them (cut to whole tiles) and the
    model's bicubic downsampling of them, both as 8-bit code values."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    tile = 2 * scale
    h, w = rgb.shape[0] // tile * tile, rgb.shape[1] // tile * tile
    y, uv = crops_to_planes(torch.from_numpy(np.array(rgb[:h, :w])).permute(2, 0, 1)[None])
    source = planes_from_tensors(*unit_to_planes(y, uv, TRAINING_FORMAT), TRAINING_FORMAT)[0]
    down = unit_to_planes(bicubic_down(y, scale), bicubic_down(uv, scale), TRAINING_FORMAT)
    return source, planes_from_tensors(*down, TRAINING_FORMAT)[0]


def _groups(files: Sequence[Path]) -> list[list[Path]]:
    """Pictures coded together: each video's frames (one folder of ``frame_N`` files, in
    order) as one sequence, every other image alone."""
    groups: dict[Path, list[Path]] = {}
    alone = []
    for path in sorted(files):
        if FRAME_NAME.fullmatch(path.stem):
            groups.setdefault(path.parent, []).append(path)
        else:
            alone.append([path])
    return alone + list(groups.values())


def write_pairs(files: Sequence[Path], out: Path, scale: int, codec: str, preset: str | None,
                qps: Sequence[int] = DEFAULT_QPS, progress: bool = True) -> int:
    """Code ``files`` (a training split) at every QP and write the pairs folder ``out``
    (new or empty; module docstring). Returns the number of pictures written."""
    from tqdm import tqdm

    qps = sorted(set(qps))
    if not files:
        raise DualcodecError("no training pictures to write pairs for")
    items = []
    with atomic_path(Path(out), is_dir=True) as tmp:
        with tqdm(total=len(files), desc="pairs", unit="picture", disable=not progress, dynamic_ncols=True) as bar:
            for group in _groups(files):
                sources, base = map(list, zip(*(_picture(p, scale) for p in group)))  # 8-bit planes only
                if len({p.y.shape for p in sources}) > 1:
                    raise DualcodecError(f"the frames in {group[0].parent} differ in size")
                coded, bpp = [], []
                for qp in qps:
                    settings = BaseCodecSettings(codec=codec, qp=qp, preset=preset, matrix=BT601)
                    decoded, sizes = roundtrip(settings, base, intra=len(group) == 1)
                    coded.append(decoded)
                    bpp.append(8.0 * sum(sizes) / (len(group) * sources[0].width * sources[0].height))
                for i, path in enumerate(group):
                    name = f"{len(items):06d}.npy"
                    np.save(tmp / name, pack(sources[i], [c[i] for c in coded], scale))
                    items.append({"source": str(path), "file": name, "bpp": bpp})
                bar.update(len(group))
        index = {"format": PAIRS_FORMAT, "version": PAIRS_VERSION, "scale": scale, "codec": codec, "preset": preset,
                 "qps": qps, "items": items}
        (tmp / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return len(items)
