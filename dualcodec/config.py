"""Configuration: frozen dataclasses with the defaults, stated once.

An experiment file (TOML) states only what differs from these defaults, in the
sections ``[model]``, ``[base]``, ``[loss]``, ``[data]``, ``[schedule]`` and ``[train]``;
``extends = "other.toml"`` (relative path) starts from another experiment file. Unknown
sections or keys are errors. The experiment owns the batch size and the
learning-rate schedule; the DeepSpeed JSON that ``[train] deepspeed`` names owns
precision, gradient clipping and ZeRO (and must not set batch, optimizer or scheduler).

The dataclasses are pydantic's: types are checked strictly (an int for a float is the
only conversion; a TOML array becomes a tuple), unknown keys are refused, each section
checks its own values and :class:`Experiment` the ones that span sections (a preset
the base codec knows, crops the model's scale divides).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from dualcodec.errors import DualcodecError

# Strict types, no unknown keys, immutable.
config = _pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))


@config
class ModelConfig:
    """Architecture of :class:`dualcodec.model.DualLayerModel`."""

    scale: int = 2
    downsampler: str = "learned"  # "learned" | "bicubic"
    down_width: int = 32
    down_depth: int = 3
    down_bound: float = 0.2
    side_stream: bool = True  # the enhancement layer
    latent_channels: int = 16
    side_stride: int = 4  # base-layer pixels per latent vector, each direction (a power of two)
    side_channels: int = 8
    side_width: int = 64
    side_residual: bool = True  # g_s also outputs the enhancement residual, added on the upsampled base
    up_width: int = 16
    up_depth: int = 3
    num_filters: int = 8
    taps: int = 5
    up_residual: bool = True  # the upsampler's per-pixel detail term, from its features
    up_chroma: str = "luma"  # "luma": chroma mixed with luma's weights and phases; "own": its own, on its grid
    up_form: str = "mixture"  # "mixture": on the base luma grid; "folded": on the 4:2:0 planes' common grid (own chroma)
    # The upsampler's features take the base layer's quantiser (the file header's level):
    # one model, filtering each QP as that QP needs (folded form only)
    level_input: bool = False
    # The upsampler keeps the previous frame of the GOP (its decoded base and its output)
    # and blends towards it where the scene holds still (folded form, no side stream)
    temporal: bool = False
    # A temporal model's branch of the previous frame into the features: 0, one 1x1
    # convolution of what changed and the aligned previous output; n > 0, that many 3x3
    # convolutions at this width first (more capacity to fuse the previous frame's detail)
    temporal_width: int = 0
    temporal_depth: int = 2
    # A temporal model that also reads the next frame's decoded base, aligned by motion of
    # its own (a decoder one frame behind; an experiment: experiments/temporal_ahead.py
    # measures it, the decoder does not run it)
    temporal_ahead: bool = False

    def __post_init__(self) -> None:
        if self.scale not in (1, 2, 4):
            raise DualcodecError(f"model.scale must be 1, 2 or 4, got {self.scale}")
        if self.side_stride < 2 or self.side_stride & (self.side_stride - 1):
            raise DualcodecError(f"model.side_stride must be a power of two, at least 2, got {self.side_stride}")
        if self.downsampler not in ("learned", "bicubic"):
            raise DualcodecError(f"model.downsampler must be 'learned' or 'bicubic', got {self.downsampler!r}")
        if self.up_chroma not in ("luma", "own"):
            raise DualcodecError(f"model.up_chroma must be 'luma' or 'own', got {self.up_chroma!r}")
        if self.up_form not in ("mixture", "folded"):
            raise DualcodecError(f"model.up_form must be 'mixture' or 'folded', got {self.up_form!r}")
        if self.up_form == "folded" and self.up_chroma != "own":
            raise DualcodecError("model.up_form 'folded' mixes chroma on its own grid: set model.up_chroma = 'own'")
        if self.level_input and self.up_form != "folded":
            raise DualcodecError("model.level_input needs model.up_form = 'folded'")
        if self.temporal and self.up_form != "folded":
            raise DualcodecError("model.temporal needs model.up_form = 'folded'")
        if self.temporal and self.side_stream:
            raise DualcodecError("model.temporal works without a side stream (a side stream conditioned on the "
                                 "previous frame is not built): set model.side_stream = false")
        if self.temporal_width and not self.temporal:
            raise DualcodecError("model.temporal_width widens a temporal model's branch: set model.temporal")
        if self.temporal_ahead and not self.temporal:
            raise DualcodecError("model.temporal_ahead adds the next frame to a temporal model: set model.temporal")
        if self.temporal_width < 0 or self.temporal_depth < 1:
            raise DualcodecError(f"model.temporal_width must be at least 0 and temporal_depth at least 1, got "
                                 f"{self.temporal_width} and {self.temporal_depth}")
        if self.taps % 2 == 0:
            raise DualcodecError(f"model.taps must be odd, got {self.taps}")


@config
class BaseConfig:
    """The base codec in the training loop: real encoder forward, proxy gradient."""

    codec: str = "h264"
    qp_min: int = 27
    qp_max: int = 42
    preset: str | None = None  # None: the codec's default (medium for x264/x265, 8 for SVT-AV1)

    def __post_init__(self) -> None:
        from dualcodec.basecodec import MAX_QP, preset_problem

        if self.codec not in MAX_QP:
            raise DualcodecError(f"base.codec must be one of {', '.join(MAX_QP)}, got {self.codec!r}")
        if not 0 <= self.qp_min <= self.qp_max <= MAX_QP[self.codec]:
            raise DualcodecError(f"base.qp_min and base.qp_max must satisfy 0 <= qp_min <= qp_max <= "
                                 f"{MAX_QP[self.codec]} for {self.codec}, got {self.qp_min} and {self.qp_max}")
        problem = preset_problem(self.codec, self.preset)
        if problem:
            raise DualcodecError(f"base.preset: {problem}")


@config
class LossConfig:
    """``loss = D(x, x_hat) + lmbda(qp) * (r(t) * side_lmbda * side_bits + base_bits) / pixels``.

    ``lmbda(qp) = lmbda * 2 ** ((qp - 32) / 6)`` follows the quantiser step, so one
    model trained over a range of QPs trades rate for distortion like the codec does.
    ``r(t)`` ramps the side bits in: 0 for ``side_rate_delay`` steps (the side path learns
    on distortion alone), then linearly to 1 over ``side_rate_warmup`` steps. With
    ``skip_weight`` the distortion of the output with every block skipped is added,
    that many times: ``D(x, x_hat) + skip_weight * D(x, x_skip)``.
    """

    distortion: str = "l1"  # "l1" | "mse"
    lmbda: float = 0.01
    base_rate: bool = True
    side_lmbda: float = 1.0  # the side bits' weight, in units of lmbda (the value-curve diagnostic varies it)
    side_rate_delay: int = 0  # steps on distortion alone before the side-bits weight ramps in
    side_rate_warmup: int = 0  # steps over which the side-bits weight then ramps from 0 to 1
    train_skip: bool = True  # train through the encoder's per-block skip/enhance choice
    # Weight of the distortion of the output with every block skipped (the upsampler
    # alone, what a file's predicted frames mostly get) beside that of the chosen output.
    skip_weight: float = 0.0
    # A temporal model's motion: the weight of its alignment error (the previous base frame
    # warped onto the current one, L1; FRVSR's loss), which trains the motion from the start
    alignment_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.distortion not in ("l1", "mse"):
            raise DualcodecError(f"loss.distortion must be 'l1' or 'mse', got {self.distortion!r}")
        if min(self.lmbda, self.side_lmbda, self.side_rate_delay, self.side_rate_warmup, self.skip_weight,
               self.alignment_weight) < 0:
            raise DualcodecError("loss.lmbda, side_lmbda, side_rate_delay, side_rate_warmup, skip_weight and "
                                 "alignment_weight must not be negative")
        if self.skip_weight and not self.train_skip:
            raise DualcodecError("loss.skip_weight weighs the skipped blocks' output, which needs loss.train_skip = true")


@config
class DataConfig:
    """Training data and the validation hold-out (:func:`dualcodec.data.split_sources`)."""

    # Image folders, or folders of frame folders (``dualcodec frames``); each immediate
    # sub-folder (bsd68/, photos/, one per video) is a source that validation draws from.
    train_dirs: tuple[str, ...] = ("../shared/data/images/train",)
    rotate: bool = True  # random 90-degree rotations
    flip: bool = True  # random horizontal and vertical flips
    crops_per_image: int = 8  # crops cut from each decoded training image (must divide the rank's batch)
    val_fraction: float = 0.03  # of each source's images held out for validation, at least one per source
    val_gap: int = 1  # frames on each side of a validation frame that no one uses (video sources only)
    val_crop: int = 128
    val_crops: int = 4  # fixed crops per validation image
    # Validation clips: each validation frame and the val_clip - 1 frames after it (video
    # sources; images repeat), coded as a short video: a temporal model needs more than 1
    val_clip: int = 1
    # A folder of precomputed base layers (``dualcodec pairs``; dualcodec.pairs): train on
    # the base coded from whole pictures at its QPs, not on crops coded in every step.
    pairs: str = ""

    def __post_init__(self) -> None:
        if not self.train_dirs:
            raise DualcodecError("data.train_dirs must name at least one folder")
        if min(self.crops_per_image, self.val_crops, self.val_crop, self.val_clip) < 1:
            raise DualcodecError("data.crops_per_image, val_crops, val_crop and val_clip must be positive")
        if not 0 < self.val_fraction < 1:
            raise DualcodecError(f"data.val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if self.val_gap < 0:
            raise DualcodecError(f"data.val_gap must not be negative, got {self.val_gap}")
        if self.val_gap < self.val_clip - 1:
            raise DualcodecError(f"data.val_gap ({self.val_gap}) must be at least data.val_clip - 1 "
                                 f"({self.val_clip - 1}): a validation clip's frames must not be training frames")


@config
class ScheduleConfig:
    """Steps, batch and learning rate; see :mod:`dualcodec.schedule` for the maths."""

    steps: int = 6000
    batch: int = 16  # global: summed over ranks
    lr: float = 5e-4  # at reference_batch; scaled linearly with batch
    reference_batch: int = 16
    warmup: int = 200
    crops: tuple[int, ...] = (128,)  # spatial cycle, small to large
    crop_fractions: tuple[float, ...] = (1.0,)
    clips: tuple[int, ...] = (1,)  # temporal cycle inside each spatial stage
    clip_fractions: tuple[float, ...] = (1.0,)
    # the learning rate of a temporal model's temporal part, in units of lr: it starts from
    # scratch where the rest of the model may start trained (train.init)
    temporal_lr_scale: float = 1.0
    # train a temporal model's temporal part alone: the rest keeps its weights (train.init's)
    temporal_only: bool = False

    def __post_init__(self) -> None:
        for names in (("crops", "crop_fractions"), ("clips", "clip_fractions")):
            values, fractions = (getattr(self, n) for n in names)
            if not values or len(values) != len(fractions):
                raise DualcodecError(f"schedule.{names[0]} and schedule.{names[1]} need the same, non-zero length")
            if any(f <= 0 for f in fractions):
                raise DualcodecError(f"schedule.{names[1]} must be positive, got {list(fractions)}")
        if any(c < 16 or c % 4 for c in self.crops):
            raise DualcodecError(f"schedule.crops must be multiples of 4, at least 16, got {list(self.crops)}")
        if min(self.steps, self.batch, self.reference_batch, min(self.clips)) < 1 or self.warmup < 0:
            raise DualcodecError("schedule.steps, batch, reference_batch and clips must be positive")
        if not self.lr > 0 or not self.temporal_lr_scale > 0:
            raise DualcodecError(f"schedule.lr and temporal_lr_scale must be positive, got {self.lr} and "
                                 f"{self.temporal_lr_scale}")


@config
class TrainConfig:
    name: str = "run"
    deepspeed: str = "ds_cpu.json"  # relative to the experiment file
    val_every: int = 250
    patience: int = 0  # stop after this many validations without a better loss (0: never)
    checkpoint_every: int = 500  # plus one at every validation that improves the loss
    log_every: int = 10
    seed: int = 0
    out_dir: str = "runs"
    val_qp: int = 32
    images_every: int = 1  # sample images to TensorBoard every N validations (0: never)
    init: str = ""  # a model file (or shipped name) whose weights a new run starts from: fine-tuning

    def __post_init__(self) -> None:
        if min(self.val_every, self.checkpoint_every, self.log_every) < 1:
            raise DualcodecError("train.val_every, checkpoint_every and log_every must be at least 1, got "
                                 f"{self.val_every}, {self.checkpoint_every} and {self.log_every}")
        if min(self.patience, self.images_every) < 0:
            raise DualcodecError("train.patience and images_every must not be negative")


@config
class Experiment:
    model: ModelConfig = field(default_factory=ModelConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # Every crop is a whole number of 4:2:0 base-layer pixels.
        step = 2 * self.model.scale
        crops = [*self.schedule.crops, self.data.val_crop]
        if any(c % step for c in crops):
            raise DualcodecError(f"schedule.crops and data.val_crop must be multiples of {step} (2 x model.scale), "
                                 f"got {crops}")
        if self.data.pairs and self.model.scale > 1 and self.model.downsampler != "bicubic":
            raise DualcodecError("data.pairs holds base layers coded from bicubic downsampling; a learned "
                                 "downsampler's base layer changes with its weights: set model.downsampler = 'bicubic'")
        if self.schedule.temporal_only and not self.model.temporal:
            raise DualcodecError("schedule.temporal_only trains a temporal model's temporal part: set model.temporal")
        if self.data.pairs and any(c > 1 for c in self.schedule.clips):
            raise DualcodecError(f"data.pairs trains on single pictures, got schedule.clips = {list(self.schedule.clips)}")


def _problem(error: dict, where: str) -> str:
    """One pydantic error as a line of ours."""
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])[1:]
    if error["type"] == "unexpected_keyword_argument":
        return f"unknown key in [{where}]: {key}"
    return f"{where}.{key} {error['msg'][0].lower()}{error['msg'][1:]}, got {error['input']!r}"


def dataclass_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build a config dataclass from a dict (a TOML table), rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise DualcodecError(f"[{where}] must be a table")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        hint = hints.get(key)
        if hint is not None and dataclasses.is_dataclass(hint):
            kwargs[key] = dataclass_from_dict(hint, value, key)
        else:
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except ValidationError as exc:
        raise DualcodecError("; ".join(_problem(e, where) for e in exc.errors())) from None


def model_config_from_dict(values: dict[str, Any]) -> ModelConfig:
    return dataclass_from_dict(ModelConfig, values, "model")


def _set_dotted(tree: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or "." not in key:
        raise DualcodecError(f"--set expects section.key=value, got {assignment!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    section, name = key.strip().split(".", 1)
    tree.setdefault(section, {})[name] = value


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _read_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A TOML experiment tree; ``extends = "other.toml"`` starts from another file's tree."""
    path = Path(path)
    if path.resolve() in seen:
        raise DualcodecError(f"{path} extends itself through {' -> '.join(p.name for p in seen)}")
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DualcodecError(f"experiment file not found: {path}") from None
    except UnicodeDecodeError:
        raise DualcodecError(f"{path} is not an experiment file: not UTF-8 text (TOML)") from None
    except OSError as exc:
        raise DualcodecError(f"cannot read experiment file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DualcodecError(f"{path} is not valid TOML: {exc}") from None
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise DualcodecError(f"{path}: extends must be a file name, got {parent!r}")
    return _merge(_read_tree(path.parent / parent, seen + (path.resolve(),)), tree)


def load_experiment(path: Path, overrides: list[str] = ()) -> Experiment:
    """Read an experiment file and ``section.key=value`` overrides into an :class:`Experiment`."""
    tree = _read_tree(Path(path))
    for assignment in overrides:
        _set_dotted(tree, assignment)
    return dataclass_from_dict(Experiment, tree, "experiment")
