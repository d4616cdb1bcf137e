"""dualcodec.config: experiment files, strict keys and types, --set overrides."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from dualcodec.config import (
    Experiment,
    ModelConfig,
    load_experiment,
    model_config_from_dict,
)
from dualcodec.errors import DualcodecError

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.toml"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_empty_file_gives_the_defaults(tmp_path):
    assert load_experiment(_write(tmp_path, "")) == Experiment()


def test_values_are_read(tmp_path):
    exp = load_experiment(_write(tmp_path, '[model]\nscale = 4\nup_width = 12\n[loss]\ndistortion = "mse"\n'))
    assert exp.model.scale == 4 and exp.model.up_width == 12
    assert exp.loss.distortion == "mse"
    assert exp.model.side_width == ModelConfig().side_width  # untouched keys keep their default


def test_unknown_key_is_rejected_and_named(tmp_path):
    with pytest.raises(DualcodecError, match=r"\[loss\].*lamda"):
        load_experiment(_write(tmp_path, "[loss]\nlamda = 0.1\n"))


def test_several_unknown_keys_are_all_named(tmp_path):
    with pytest.raises(DualcodecError) as info:
        load_experiment(_write(tmp_path, "[model]\nwidth = 3\ndepth = 2\n"))
    assert "depth" in str(info.value) and "width" in str(info.value)


def test_unknown_section_is_rejected_and_named(tmp_path):
    with pytest.raises(DualcodecError, match="optimizer"):
        load_experiment(_write(tmp_path, "[optimizer]\nlr = 0.1\n"))


@pytest.mark.parametrize(
    "text, where",
    [
        ('[model]\nscale = "2"\n', "model.scale"),
        ("[model]\nscale = 2.0\n", "model.scale"),
        ("[model]\nside_stream = 1\n", "model.side_stream"),
        ("[model]\nup_width = true\n", "model.up_width"),  # bool is not an int here
        ('[loss]\nlmbda = "small"\n', "loss.lmbda"),
        ("[train]\nname = 3\n", "train.name"),
        ("[schedule]\ncrops = 64\n", "schedule.crops"),
        ('[schedule]\ncrops = [64, "128"]\n', r"schedule.crops[1]"),
    ],
)
def test_wrong_type_is_rejected(tmp_path, text, where):
    with pytest.raises(DualcodecError, match=where.replace(".", r"\.").replace("[", r"\[")):
        load_experiment(_write(tmp_path, text))


def test_section_that_is_not_a_table_is_rejected(tmp_path):
    with pytest.raises(DualcodecError, match="table"):
        load_experiment(_write(tmp_path, "loss = 3\n"))


def test_int_is_accepted_for_a_float(tmp_path):
    exp = load_experiment(_write(tmp_path, "[loss]\nlmbda = 1\n"))
    assert exp.loss.lmbda == 1.0 and isinstance(exp.loss.lmbda, float)


@pytest.mark.parametrize(
    "text, match",
    [
        ("[model]\nscale = 3\n", "model.scale must be 1, 2 or 4"),
        ("[model]\nside_stride = 6\n", "model.side_stride must be a power of two"),
        ("[model]\nside_stride = 1\n", "model.side_stride must be a power of two, at least 2"),
        ("[loss]\nside_lmbda = -0.5\n", "must not be negative"),
        ("[model]\ntaps = 4\n", "taps"),
        ('[model]\ndownsampler = "lanczos"\n', "downsampler"),
        ('[model]\nup_form = "lapar"\n', "model.up_form must be"),
        ('[model]\nup_form = "folded"\n', "set model.up_chroma = 'own'"),
        ('[loss]\ndistortion = "ssim"\n', "distortion"),
        ("[schedule]\nlr = 0.0\n", "schedule.lr and temporal_lr_scale must be positive"),
        ("[schedule]\ntemporal_lr_scale = 0\n", "schedule.lr and temporal_lr_scale must be positive"),
    ],
)
def test_invalid_values_are_rejected(tmp_path, text, match):
    with pytest.raises(DualcodecError, match=match):
        load_experiment(_write(tmp_path, text))


def test_set_overrides(tmp_path):
    path = _write(tmp_path, "[loss]\nlmbda = 0.1\n[train]\nname = \"a\"\n")
    exp = load_experiment(path, ["loss.lmbda=0.5", "train.name=try", "model.side_stream=false", "schedule.steps=7",
                                 "schedule.crops=[64, 128]", "schedule.crop_fractions=[1, 3]"])
    assert exp.loss.lmbda == 0.5
    assert exp.train.name == "try"  # a bare word is a string
    assert exp.model.side_stream is False
    assert exp.schedule.steps == 7
    assert exp.schedule.crops == (64, 128) and exp.schedule.crop_fractions == (1.0, 3.0)
    # The file itself is not changed.
    assert load_experiment(path).loss.lmbda == 0.1


def test_set_override_later_wins_and_creates_sections(tmp_path):
    exp = load_experiment(_write(tmp_path, ""), ["loss.lmbda=0.5", "loss.lmbda=0.25", 'data.train_dirs=["x y", "z"]'])
    assert exp.loss.lmbda == 0.25
    assert exp.data.train_dirs == ("x y", "z")


@pytest.mark.parametrize("assignment", ["lmbda=0.5", "loss.lmbda", "loss"])
def test_malformed_set_is_rejected(tmp_path, assignment):
    with pytest.raises(DualcodecError, match="section.key=value"):
        load_experiment(_write(tmp_path, ""), [assignment])


def test_set_unknown_key_is_rejected(tmp_path):
    with pytest.raises(DualcodecError, match="lamda"):
        load_experiment(_write(tmp_path, ""), ["loss.lamda=0.5"])


def test_set_wrong_type_is_rejected(tmp_path):
    with pytest.raises(DualcodecError, match=r"model\.scale"):
        load_experiment(_write(tmp_path, ""), ["model.scale=two"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(DualcodecError, match="not found"):
        load_experiment(tmp_path / "nope.toml")
    with pytest.raises(DualcodecError, match="not valid TOML"):
        load_experiment(_write(tmp_path, "[loss\nlmbda = \n"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_repository_experiments_load(path):
    exp = load_experiment(path)
    assert isinstance(exp, Experiment)
    ds = path.parent / exp.train.deepspeed
    assert ds.is_file(), f"{path.name} names a DeepSpeed config that does not exist: {ds}"
    ds_config = json.loads(ds.read_text())
    assert not {"optimizer", "scheduler", "train_batch_size"} & set(ds_config), "the experiment owns these"
    assert exp.base.qp_min <= exp.train.val_qp <= exp.base.qp_max


def test_repository_has_experiments():
    names = {p.name for p in EXPERIMENTS}
    assert {"default_x2.toml", "smoke.toml"} <= names


def test_extends_starts_from_another_file(tmp_path):
    (tmp_path / "parent.toml").write_text('[loss]\nlmbda = 0.5\ndistortion = "mse"\n[train]\nname = "parent"\n')
    exp = load_experiment(_write(tmp_path, 'extends = "parent.toml"\n[loss]\nlmbda = 0.25\n'))
    assert exp.loss.lmbda == 0.25 and exp.loss.distortion == "mse" and exp.train.name == "parent"


def test_extends_loops_and_missing_parents_are_errors(tmp_path):
    _write(tmp_path, 'extends = "exp.toml"\n')
    with pytest.raises(DualcodecError, match="extends itself"):
        load_experiment(tmp_path / "exp.toml")
    with pytest.raises(DualcodecError, match="not found"):
        load_experiment(_write(tmp_path, 'extends = "gone.toml"\n'))


def test_model_config_dict_round_trip():
    config = ModelConfig(scale=4, up_width=8, side_stream=False)
    assert model_config_from_dict(asdict(config)) == config
    with pytest.raises(DualcodecError, match="unknown key"):
        model_config_from_dict({**asdict(config), "extra": 1})



@pytest.mark.parametrize(
    "text, match",
    [
        ('[base]\ncodec = "av1"\npreset = "medium"\n', "unknown av1 preset 'medium'"),
        ('[base]\npreset = "quick"\n', "unknown h264 preset 'quick'"),
        ('[base]\ncodec = "vp9"\n', "base.codec must be one of"),
        ("[base]\nqp_min = 40\nqp_max = 30\n", "qp_min <= qp_max"),
        ("[data]\nval_crop = 102\n", r"multiples of 4 \(2 x model.scale\)"),
        ("[model]\nscale = 4\n[schedule]\ncrops = [36]\n", r"multiples of 8 \(2 x model.scale\), got \[36, 128\]"),
        ("[data]\nval_crop = 100\n[model]\nscale = 4\n", "data.val_crop must be multiples of 8"),
        ("[train]\nval_every = 0\n", "val_every, checkpoint_every and log_every must be at least 1"),
        ("[train]\nlog_every = -5\n", "must be at least 1"),
        ("[data]\ncrops_per_image = 0\n", "crops_per_image"),
        ("[data]\ntrain_dirs = []\n", "data.train_dirs must name at least one folder"),
        ("[data]\nval_fraction = 0\n", r"data.val_fraction must be between 0 and 1 \(exclusive\), got 0"),
        ("[data]\nval_fraction = 1\n", "data.val_fraction must be between 0 and 1"),
        ("[data]\nval_gap = -1\n", "data.val_gap must not be negative"),
        ("[data]\nval_clip = 0\n", "val_clip must be positive"),
        ("[data]\nval_clip = 4\n", r"data.val_gap \(1\) must be at least data.val_clip - 1 \(3\)"),
        ("[loss]\nalignment_weight = -1\n", "alignment_weight must not be negative"),
        ("[schedule]\ntemporal_only = true\n", "temporal_only trains a temporal model's temporal part"),
    ],
)
def test_values_that_span_or_bound_a_section_are_checked(tmp_path, text, match):
    with pytest.raises(DualcodecError, match=match):
        load_experiment(_write(tmp_path, text))


def test_data_sources_default_and_types(tmp_path):
    data = load_experiment(_write(tmp_path, "")).data
    assert data.train_dirs == ("../shared/data/images/train",) and 0 < data.val_fraction < 1 and data.val_gap == 1
    exp = load_experiment(_write(tmp_path, '[data]\ntrain_dirs = ["a", "b/frames"]\nval_fraction = 0.1\n'))
    assert exp.data.train_dirs == ("a", "b/frames") and exp.data.val_fraction == 0.1
    with pytest.raises(DualcodecError, match=r"data\.train_dirs"):  # one folder is still a list
        load_experiment(_write(tmp_path, '[data]\ntrain_dirs = "a"\n'))
    for old in ("train_dir = \"a\"", "val_images = 8"):  # the keys before train_dirs, named as unknown
        with pytest.raises(DualcodecError, match=f"unknown key in \\[data\\]: {old.split()[0]}"):
            load_experiment(_write(tmp_path, f"[data]\n{old}\n"))


def test_the_base_codecs_default_preset_is_its_own(tmp_path):
    exp = load_experiment(_write(tmp_path, '[base]\ncodec = "av1"\n'))
    assert exp.base.preset is None  # the codec's own default (8), not x264's medium
