"""Training data: NVIDIA DALI pipelines over images and frame folders.

A training stream is one DALI pipeline per rank, endless (the reader wraps around
epochs), yielding uint8 crops::

    files ──readers.file──> encoded bytes ──decoders.image_crop──> crop x crop HWC
          (shard of this rank,                (decodes only the crop window where
           shuffled)                           the format allows: JPEG, partly PNG)
          ──flip (h and v, p=1/2 each)──> rotate by 0/90/180/270 degrees ──> CHW uint8

* **Several crops per decoded image** (``crops_per_image=K``): the image is decoded
  whole once and ``K`` windows are cut from it, each with its own position, flips and
  rotation. Large PNGs decode at well under 100 images/s on one core, so ``K > 1`` is
  what makes them affordable (see ``experiments/bench_data.py``).
* **Clips** (multi-frame training): items are tuples of ``T`` consecutive frame files
  from :func:`list_clips`. There is one file reader per frame position, all with the same
  seed and shard, so they walk the clips in the same order; the ``T`` frames share one
  crop window, one flip and one rotation, and come out as ``[T, 3, c, c]``.
* **CPU or GPU**: ``device_id=None`` decodes on the CPU (``decoders.*`` on ``"cpu"``,
  all operators on the CPU); with a ``device_id`` the decoder runs as ``"mixed"``
  (nvJPEG on the GPU for JPEG, CPU decoding then upload for PNG) and the crops, flips
  and rotations run on ``"gpu"`` (DALI places an operator on the device of its input).
  The same pipeline function builds both.
* **Sharding**: ``shard_id`` / ``num_shards`` (rank / world size) split the file list.
  The readers use ``seed`` on every rank, so the shards partition one shuffled order;
  the augmentations draw from a seed derived from ``(seed, shard_id)``, so ranks differ.
* **Exact resume**: pipelines are built with ``enable_checkpointing=True``;
  :meth:`TrainStream.checkpoint` returns DALI's serialized state (reader position,
  shuffle, every random operator) and a stream built with ``checkpoint=`` that state and
  the same arguments yields exactly the batches the original would have yielded next.

Items smaller than the crop on either side are skipped, not padded (padding would
teach the networks flat borders that real frames do not have); none left is an error.

The crops are R'G'B'; :func:`crops_to_planes` turns a batch into the 4:2:0 planes the
model takes: BT.601 (as the codec's edge converts an image), limited range (video's
usual range; images come in at full range, which the networks' unit scale makes alike),
8 bits, rounded.

Training and validation files come from :func:`split_sources` over ``[data] train_dirs``:
every source (an image collection, a video's frame folder) gives a few images, spread over
it, to validation. Validation crops (:func:`validation_crops`) are not DALI: a fixed grid of
windows over each held-out image, decoded with PIL, identical on every call and every machine.

Videos become training data through ``dualcodec frames VIDEO... -o DIR``
(:func:`write_frames`): PyAV decodes them into ``DIR/<video name>/frame_NNNNNN.png``,
optionally every K-th frame only and downscaled, which :func:`list_clips` turns into
clips. DALI's own CPU video reader only handles VP8/VP9/MJPEG, hence the detour through PNG.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dualcodec.errors import DualcodecError
from dualcodec.outputs import atomic_path
from dualcodec.video import IMAGE_SUFFIXES, VideoReader, planes_to_rgb
from dualcodec.yuv import BT601, YUVFormat, planes_to_unit, quantize_planes, rgb_to_yuv420

TRAINING_FORMAT = YUVFormat(bit_depth=8, full_range=False, matrix=BT601)

Clip = tuple[Path, ...]

FRAME_NAME = re.compile(r"frame_\d+")  # the file stems write_frames gives frames


def list_images(folder: Path) -> list[Path]:
    """Every image under ``folder`` (recursively), sorted; other files (e.g. ``.md``) are ignored."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DualcodecError(f"no images found under {folder}")
    return files


def _sources(dirs: Sequence[Path | str]) -> dict[Path, list[Path]]:
    """The images under ``dirs`` by source: an immediate sub-folder of a listed folder, with
    everything below it, or the listed folder itself for the images directly inside it."""
    if not dirs:
        raise DualcodecError("no training folders given")
    sources: dict[Path, list[Path]] = {}
    seen: dict[Path, Path] = {}  # resolved file -> the listed folder it was found under
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise DualcodecError(f"training folder not found: {folder}")
        for path in list_images(folder):
            key = path.resolve()
            if key in seen:
                raise DualcodecError(f"{path} is under two training folders, {seen[key]} and {folder}: it would "
                                     "count twice, and could land in training and validation at once")
            seen[key] = folder
            rel = path.relative_to(folder)
            sources.setdefault(folder / rel.parts[0] if len(rel.parts) > 1 else folder, []).append(path)
    return sources


def split_sources(dirs: Sequence[Path | str], val_fraction: float, val_gap: int = 1) -> tuple[list[Path], list[Path]]:
    """Training and validation images from every source under ``dirs``: ``(train, val)``, each sorted.

    A *source* is an immediate sub-folder of a listed folder, with everything under it
    (``images/train/bsd68``, ``images/train/photos``; under a ``dualcodec frames`` output,
    one frame folder per video), or the listed folder itself for images directly inside it.
    Each source of ``n`` images gives ``k = max(1, round(val_fraction * n))`` of them to
    validation, at evenly spaced positions of its sorted list (``floor((i + 1/2) n / k)``,
    ``i < k``). So validation covers every collection and every video, in proportion to
    its share of the training data; the choice depends on the file names only, the same on
    every machine and every run.

    A source whose images are all named ``frame_<number>`` (as :func:`write_frames` names
    them) is a video: its neighbouring frames are near-duplicates, so the ``val_gap``
    frames on each side of a validation frame (neighbours in the same folder, sorted) are
    used neither for validation nor for training. With ``dualcodec frames --every 4`` and a
    gap of 1, a training frame is at least 8 video frames (0.27 s at 30 fps) from every
    validation frame. Holding out a contiguous stretch per video would leak across its
    boundary the same way, and holding out whole videos would leave their content
    unvalidated. Image collections drop no neighbours: their images are separate pictures.

    Errors: a listed folder that is missing or holds no image, an image under two listed
    folders, a source left with no training image.
    """
    if not 0 < val_fraction < 1:
        raise DualcodecError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if val_gap < 0:
        raise DualcodecError(f"val_gap must not be negative, got {val_gap}")
    train: list[Path] = []
    val: list[Path] = []
    for source, files in _sources(dirs).items():
        n = len(files)
        k = max(1, int(val_fraction * n + 0.5))
        held = {(2 * i + 1) * n // (2 * k) for i in range(k)}
        video = all(FRAME_NAME.fullmatch(p.stem) for p in files)
        dropped = {j for i in held for j in range(i - val_gap, i + val_gap + 1)
                   if video and 0 <= j < n and files[j].parent == files[i].parent}
        kept = [p for j, p in enumerate(files) if j not in held | dropped]
        if not kept:
            gap = f" (and {val_gap} frames on each side of each, unused)" if video and val_gap else ""
            raise DualcodecError(f"too few images in source {source}: {n} cannot give {k} to validation{gap} and "
                                 "keep one for training")
        train += kept
        val += [files[i] for i in sorted(held)]
    return sorted(train), sorted(val)


def list_clips(files: Sequence[Path], length: int) -> list[Clip]:
    """Every run of ``length`` consecutive frames among ``files``, e.g. the training files of
    :func:`split_sources`.

    A frame folder is any folder holding images (``dualcodec frames`` writes one per
    video); its images, sorted by name, are the frames. Two frames are consecutive when
    they are neighbours in their folder and both in ``files``: a clip never spans two
    folders, nor a frame missing from ``files`` (a validation frame, or a neighbour that
    :func:`split_sources` dropped). Clips start at every frame (they overlap), in sorted
    folder order.
    """
    if length < 1:
        raise DualcodecError(f"clip length must be at least 1, got {length}")
    by_folder: dict[Path, list[Path]] = {}
    for path in sorted(map(Path, files)):
        by_folder.setdefault(path.parent, []).append(path)
    clips = []
    for folder, frames in by_folder.items():
        position = {p: i for i, p in enumerate(sorted(p for p in folder.iterdir()
                                                      if p.suffix.lower() in IMAGE_SUFFIXES))}
        run: list[Path] = []
        for path in frames:
            if run and position.get(path, -2) != position.get(run[-1], -2) + 1:
                run = []
            run.append(path)
            if len(run) >= length:
                clips.append(tuple(run[-length:]))
    if not clips:
        raise DualcodecError(f"no frame folder has {length} consecutive frames")
    return clips


@dataclass(frozen=True)
class WrittenFrames:
    """What :func:`write_frames` wrote: ``count`` PNGs of ``width`` x ``height``."""

    count: int
    width: int
    height: int


def write_frames(video: Path, folder: Path, max_frames: int | None = None, *, every: int = 1,
                 downscale: int = 1) -> WrittenFrames:
    """Decode ``video`` with PyAV into ``folder/frame_000001.png``, ...: 8-bit R'G'B'.

    ``max_frames`` reads only the first frames of the video; of those, ``every`` keeps the
    1st, the ``every + 1``-th, ... (per-image training gains little from near-duplicate
    neighbours). Each file is named after its frame's number in the video, counted from 1,
    so with ``every=4`` the names run ``frame_000001``, ``frame_000005``, ...

    ``downscale`` shrinks each frame by that integer factor after the conversion to R'G'B',
    with PIL's bicubic filter widened to the factor (antialiased, as SR data sets make their
    low-resolution images); a side that the factor does not divide loses its last pixels.
    Phone and web clips carry their coding artefacts at full size: at half size most are
    gone, which makes them clean targets. Display rotation (phone clips) is not applied;
    training rotates by multiples of 90 degrees anyway.

    The folder appears only when every frame is written; it must be new or empty
    (:func:`dualcodec.outputs.atomic_path`).
    """
    from PIL import Image

    if every < 1:
        raise DualcodecError(f"every must be at least 1, got {every}")
    if downscale < 1:
        raise DualcodecError(f"downscale must be at least 1, got {downscale}")
    reader = VideoReader(video)
    if min(reader.info.width, reader.info.height) < downscale:
        raise DualcodecError(f"cannot downscale {video} ({reader.info.width}x{reader.info.height}) by {downscale}: "
                             "no pixel would be left")
    count = 0
    with atomic_path(folder, is_dir=True) as tmp:
        for number, planes in enumerate(reader.frames(), start=1):
            if max_frames is not None and number > max_frames:
                break
            if (number - 1) % every:
                continue
            image = Image.fromarray(planes_to_rgb(planes, reader.info.format))
            if downscale > 1:
                width, height = image.width // downscale, image.height // downscale
                image = image.resize((width, height), Image.Resampling.BICUBIC,
                                     box=(0, 0, width * downscale, height * downscale))
            image.save(tmp / f"frame_{number:06d}.png", compress_level=1)
            count += 1
    return WrittenFrames(count, image.width, image.height)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DualcodecError(f"cannot read image {path}: {exc.__class__.__name__}") from None


def _large_enough(items: Sequence[Path | Clip], crop: int, tile: int = 0) -> list[Path | Clip]:
    """The items whose (first) frame is at least ``crop`` pixels on each side (``tile``:
    packed pairs, ``.npy`` arrays of ``tile`` x ``tile`` pixels per element)."""
    sizes: dict[Path, int] = {}  # frames of one folder share a size: read one per folder
    kept = []
    for item in items:
        first = item[0] if isinstance(item, tuple) else Path(item)
        key = first.parent if isinstance(item, tuple) else first
        if key not in sizes:
            sizes[key] = tile * min(np.load(first, mmap_mode="r").shape[:2]) if tile else min(_image_size(first))
        if sizes[key] >= crop:
            kept.append(item)
    if not kept:
        raise DualcodecError(f"no training image is at least {crop} pixels on each side")
    return kept


def _random_window(crop: int) -> dict:
    """Crop arguments for a ``crop`` x ``crop`` window at a uniformly random position."""
    from nvidia.dali import fn

    return {"crop": (crop, crop), "crop_pos_x": fn.random.uniform(range=(0.0, 1.0)),
            "crop_pos_y": fn.random.uniform(range=(0.0, 1.0))}


def _augment(x, rotate: bool, flip: bool = True):
    """Random horizontal and vertical flips (``flip``) and a random multiple of 90 degrees
    (``rotate``), one draw per sample.

    For a sequence (``FHWC``) the one draw applies to every frame. The rotation is exact
    (nearest neighbour at multiples of 90 degrees on a square window).
    """
    from nvidia.dali import fn, types

    if flip:
        x = fn.flip(x, horizontal=fn.random.coin_flip(), vertical=fn.random.coin_flip())
    if rotate:
        quarter = fn.random.uniform(values=[0.0, 90.0, 180.0, 270.0])
        x = fn.rotate(x, angle=quarter, interp_type=types.INTERP_NN, keep_size=True)
    return x


class TrainStream:
    """One rank's endless stream of augmented uint8 crops, from a DALI pipeline.

    ``items`` are image paths (batches ``[batch, 3, crop, crop]``) or clips, tuples of
    ``T`` frame paths from :func:`list_clips` (batches ``[batch, T, 3, crop, crop]``).
    Batches are on the CPU, or on ``cuda:device_id`` when ``device_id`` is given.
    ``crops_per_image`` (images only) cuts that many windows from each decoded image and
    must divide ``batch``. ``checkpoint`` is a :meth:`checkpoint` of a stream built with
    the same arguments; the new stream continues exactly where that one stood.

    With ``tile``, items are packed pairs (``.npy`` files of :mod:`dualcodec.pairs`, each
    element ``tile`` x ``tile`` pixels): ``readers.numpy`` reads them whole and the windows
    are cut on their grid, ``[batch, crop / tile, crop / tile, C]``, neither flipped nor
    rotated (the tiles' inner order would need it: :func:`dualcodec.pairs.augment` does it
    after unpacking); :meth:`sources` names each window's file.
    """

    def __init__(self, items: Sequence[Path | Clip], crop: int, batch: int, seed: int, *, shard_id: int = 0,
                 num_shards: int = 1, device_id: int | None = None, rotate: bool = True, crops_per_image: int = 1,
                 threads: int = 2, checkpoint: bytes | None = None, tile: int = 0, flip: bool = True) -> None:
        from nvidia.dali.pipeline import Pipeline

        if not items:
            raise DualcodecError("no training items")
        clip = len(items[0]) if isinstance(items[0], tuple) else 0
        if clip and any(not isinstance(item, tuple) or len(item) != clip for item in items):
            raise DualcodecError(f"every clip must have {clip} frames")
        if crops_per_image < 1 or batch % crops_per_image:
            raise DualcodecError(f"crops_per_image ({crops_per_image}) must divide the batch ({batch})")
        if clip and crops_per_image > 1:
            raise DualcodecError("crops_per_image applies to images, not clips")
        if not 0 <= shard_id < num_shards:
            raise DualcodecError(f"shard_id {shard_id} is not in 0..{num_shards - 1}")
        if tile and (clip or crop % tile):
            raise DualcodecError(f"packed pairs take single pictures and crops of whole {tile}-pixel tiles, got {crop}")
        items = _large_enough(items, crop, tile)
        self.crops_per_image = crops_per_image
        if tile:
            self.shape = (batch, crop // tile, crop // tile, -1)
        else:
            self.shape = (batch, clip, 3, crop, crop) if clip else (batch, 3, crop, crop)
        self.device = torch.device("cpu") if device_id is None else torch.device("cuda", device_id)
        # The readers share the seed on every rank (the shards must partition one file order);
        # the augmentations draw from a seed of their own per rank.
        rank_seed = int(np.random.SeedSequence([seed, shard_id]).generate_state(1)[0] >> 1)

        if clip:  # one file list per frame position
            columns = [[str(item[t]) for item in items] for t in range(clip)]
        else:
            columns = [[str(path) for path in items]]
        self.pipe = Pipeline(batch_size=batch // crops_per_image, num_threads=threads, device_id=device_id,
                             seed=rank_seed, prefetch_queue_depth=2, enable_checkpointing=True, checkpoint=checkpoint)
        with self.pipe:
            if tile:
                self.pipe.set_outputs(self._packed_windows(columns[0], crop // tile, crops_per_image, seed, shard_id,
                                                           num_shards, device_id))
            else:
                self.pipe.set_outputs(self._image_windows(columns, crop, crops_per_image, seed, shard_id, num_shards,
                                                          "cpu" if device_id is None else "mixed", rotate, clip, flip))
        self.pipe.build()
        self._sources: list[str] = []

    @staticmethod
    def _image_windows(columns, crop, crops_per_image, seed, shard_id, num_shards, decoder, rotate, clip, flip):
        from nvidia.dali import fn, types

        encoded = [fn.readers.file(files=files, random_shuffle=True, seed=seed, shard_id=shard_id,
                                   num_shards=num_shards)[0] for files in columns]
        if crops_per_image == 1:
            window = _random_window(crop)  # shared by the frames of a clip
            frames = [fn.decoders.image_crop(data, device=decoder, output_type=types.RGB, **window)
                      for data in encoded]
            if clip:
                return fn.transpose(_augment(fn.stack(*frames, axis=0, axis_name="F"), rotate, flip), perm=[0, 3, 1, 2])
            return fn.transpose(_augment(frames[0], rotate, flip), perm=[2, 0, 1])
        image = fn.decoders.image(encoded[0], device=decoder, output_type=types.RGB)
        return fn.stack(*[fn.transpose(_augment(fn.crop(image, **_random_window(crop)), rotate, flip), perm=[2, 0, 1])
                          for _ in range(crops_per_image)], axis=0)

    @staticmethod
    def _packed_windows(files, tiles, crops_per_image, seed, shard_id, num_shards, device_id):
        from nvidia.dali import fn

        array = fn.readers.numpy(files=files, random_shuffle=True, seed=seed, shard_id=shard_id, num_shards=num_shards)
        array = array.gpu() if device_id is not None else array
        return fn.stack(*[fn.crop(array, **_random_window(tiles)) for _ in range(crops_per_image)], axis=0)

    def next(self) -> torch.Tensor:
        """The next batch: uint8, ``[batch, 3, crop, crop]``, ``[batch, T, 3, crop, crop]``
        or (packed pairs) ``[batch, crop / tile, crop / tile, C]``."""
        from nvidia.dali.plugin.pytorch import feed_ndarray

        (out,) = self.pipe.run()
        self._sources = [out[i].source_info() for i in range(len(out))]
        out = out.as_tensor()  # [batch / crops_per_image, ...]
        x = torch.empty(out.shape(), dtype=torch.uint8, device=self.device)
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        return feed_ndarray(out, x, cuda_stream=stream).view(self.shape)

    def sources(self) -> list[str]:
        """The file of each item of the last batch (its first frame's, for clips)."""
        return [name for name in self._sources for _ in range(self.crops_per_image)]

    def checkpoint(self) -> bytes:
        """DALI's state after the batches returned so far, for ``TrainStream(..., checkpoint=)``."""
        return self.pipe.checkpoint()


def crops_to_planes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 R'G'B' crops ``[B,3,c,c]`` (c even) to 4:2:0 planes on the unit scale, in
    :data:`TRAINING_FORMAT`: ``y`` ``[B,1,c,c]``, ``uv`` ``[B,2,c/2,c/2]``."""
    planes = quantize_planes(*rgb_to_yuv420(x.float() / 255.0, TRAINING_FORMAT), TRAINING_FORMAT)
    return planes_to_unit(*planes, TRAINING_FORMAT)


def validation_clip(path: Path, length: int) -> Clip:
    """The validation clip of a validation frame: it and the ``length - 1`` frames after it
    in its frame folder (which :func:`split_sources` keeps from training when ``val_gap >=
    length - 1``); fewer where the folder ends, the last frame repeated. A picture that is
    not a frame (an image collection's) is a still shot: itself ``length`` times."""
    path = Path(path)
    if not FRAME_NAME.fullmatch(path.stem):
        return (path,) * length
    frames = sorted(p for p in path.parent.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    start = frames.index(path)
    return tuple(frames[min(start + i, len(frames) - 1)] for i in range(length))


def validation_crops(files: Sequence[Path], crop: int, per_image: int, clip: int = 1) -> torch.Tensor:
    """Fixed uint8 crops ``[N, 3, crop, crop]``: ``per_image`` windows on a diagonal of each image;
    with ``clip > 1`` the same windows of each image's :func:`validation_clip`, ``[N, clip, 3, crop, crop]``.

    Window ``k`` of an ``H x W`` image starts at ``((H - crop) k / (n - 1), (W - crop)
    (n - 1 - k) / (n - 1))``, so the windows run from the top-right corner to the bottom-left one.
    Images smaller than the crop are skipped, as in training.
    """
    from PIL import Image

    def rgb(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    out = []
    for path in _large_enough(list(files), crop):
        frames = np.stack([rgb(p) for p in validation_clip(path, clip)])
        h, w = frames.shape[1:3]
        steps = max(per_image - 1, 1)
        for k in range(per_image):
            y, x = (h - crop) * k // steps, (w - crop) * (per_image - 1 - k) // steps
            out.append(frames[:, y : y + crop, x : x + crop])
    crops = torch.from_numpy(np.stack(out)).permute(0, 1, 4, 2, 3).contiguous()
    return crops if clip > 1 else crops[:, 0]
