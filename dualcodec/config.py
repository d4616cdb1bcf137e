"""Configuration: frozen dataclasses with the defaults, stated once.

An experiment file (TOML) states only what differs from these defaults, in the
sections ``[model]``, ``[base]``, ``[loss]``, ``[data]`` and ``[train]``. Unknown
sections or keys are errors. Batch size, optimizer, learning-rate schedule and
precision belong to the DeepSpeed JSON that ``[train] deepspeed`` names.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualcodec.errors import DualcodecError


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`dualcodec.model.DualLayerModel`."""

    scale: int = 2
    downsampler: str = "learned"  # "learned" | "bicubic"
    down_width: int = 32
    down_depth: int = 3
    down_bound: float = 0.2
    side_stream: bool = True
    latent_channels: int = 8
    side_channels: int = 8
    side_width: int = 32
    up_width: int = 16
    up_depth: int = 3
    num_filters: int = 8
    taps: int = 5
    up_residual: bool = False

    def __post_init__(self) -> None:
        if self.scale not in (2, 4):
            raise DualcodecError(f"model.scale must be 2 or 4, got {self.scale}")
        if self.downsampler not in ("learned", "bicubic"):
            raise DualcodecError(f"model.downsampler must be 'learned' or 'bicubic', got {self.downsampler!r}")
        if self.taps % 2 == 0:
            raise DualcodecError(f"model.taps must be odd, got {self.taps}")


@dataclass(frozen=True)
class BaseConfig:
    """The base codec in the training loop: real encoder forward, proxy gradient."""

    codec: str = "h264"
    qp_min: int = 27
    qp_max: int = 42
    preset: str = "medium"


@dataclass(frozen=True)
class LossConfig:
    """``loss = D(x, x_hat) + lmbda(qp) * (side_bits + base_bits) / pixels``.

    ``lmbda(qp) = lmbda * 2 ** ((qp - 32) / 6)`` follows the quantiser step, so one
    model trained over a range of QPs trades rate for distortion like the codec does.
    """

    distortion: str = "l1"  # "l1" | "mse"
    lmbda: float = 0.01
    base_rate: bool = True
    side_rate_warmup: int = 0  # steps over which the side-bits weight ramps from 0 to 1

    def __post_init__(self) -> None:
        if self.distortion not in ("l1", "mse"):
            raise DualcodecError(f"loss.distortion must be 'l1' or 'mse', got {self.distortion!r}")


@dataclass(frozen=True)
class DataConfig:
    train_dir: str = "../shared/data/images/train"
    crop: int = 128
    val_images: int = 8  # the first N images (sorted) are held out for validation
    val_crops: int = 4  # fixed crops per validation image


@dataclass(frozen=True)
class TrainConfig:
    name: str = "run"
    deepspeed: str = "ds_cpu.json"  # relative to the experiment file
    steps: int = 2000
    val_every: int = 250
    log_every: int = 10
    seed: int = 0
    out_dir: str = "runs"
    val_qp: int = 32


@dataclass(frozen=True)
class Experiment:
    model: ModelConfig = field(default_factory=ModelConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    kind = {"int": int, "float": float, "str": str, "bool": bool}.get(annotation, annotation)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float, str, bool) and (type(value) is not kind):
        raise DualcodecError(f"{where} must be {kind.__name__}, got {value!r}")
    return value


def dataclass_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build a frozen dataclass from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise DualcodecError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise DualcodecError(f"unknown key{'s' if len(unknown) > 1 else ''} in [{where}]: {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = dataclass_from_dict(hint, value, key)
        else:
            kwargs[key] = _coerce(value, hint.__name__ if isinstance(hint, type) else hint, f"{where}.{key}")
    return cls(**kwargs)


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


def load_experiment(path: Path, overrides: list[str] = ()) -> Experiment:
    """Read an experiment file and ``section.key=value`` overrides into an :class:`Experiment`."""
    path = Path(path)
    try:
        tree = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DualcodecError(f"experiment file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise DualcodecError(f"{path} is not valid TOML: {exc}") from None
    for assignment in overrides:
        _set_dotted(tree, assignment)
    return dataclass_from_dict(Experiment, tree, "experiment")
