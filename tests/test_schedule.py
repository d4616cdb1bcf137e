"""Multigrid stages and the dynamic learning rate (Lin et al.)."""

from __future__ import annotations

import math

import pytest

from dualcodec.config import ScheduleConfig
from dualcodec.errors import DualcodecError
from dualcodec.schedule import make_plan


def test_fixed_size_is_one_stage_cosine_to_zero_after_warmup():
    plan = make_plan(ScheduleConfig(steps=100, warmup=10, lr=1e-3))
    assert [(s.start, s.steps, s.crop, s.clip) for s in plan.stages] == [(0, 100, 128, 1)]
    assert plan.lr_at(0) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(0)))  # 1/10 of the way up
    assert plan.lr_at(9) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 9 / 100)))
    assert plan.lr_at(50) == pytest.approx(5e-4)
    assert plan.lr_at(99) < 1e-6


def test_spatial_stages_nest_temporal_stages_hierarchically():
    config = ScheduleConfig(steps=1000, crops=(64, 128), crop_fractions=(3, 1), clips=(1, 3), clip_fractions=(1, 1))
    plan = make_plan(config)
    assert [(s.start, s.steps, s.crop, s.clip) for s in plan.stages] == [
        (0, 375, 64, 1), (375, 375, 64, 3), (750, 125, 128, 1), (875, 125, 128, 3)]
    assert sum(s.steps for s in plan.stages) == 1000
    assert plan.stage_at(374).index == 0 and plan.stage_at(375).index == 1 and plan.stage_at(999).index == 3


def test_learning_rate_restarts_at_each_stage_and_only_the_last_decays_to_zero():
    plan = make_plan(ScheduleConfig(steps=1000, warmup=0, lr=1e-3, crops=(32, 64, 128), crop_fractions=(1, 1, 2)))
    starts = [s.start for s in plan.stages]
    assert starts == [0, 250, 500]
    for start in starts:
        assert plan.lr_at(start) == pytest.approx(1e-3)
    # earlier stages anneal over the total iterations: a quarter of the way down the cosine
    assert plan.lr_at(249) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 249 / 1000)))
    assert plan.lr_at(999) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 499 / 500)))
    assert plan.lr_at(999) < 1e-7


def test_large_minibatch_scales_the_learning_rate_linearly():
    plan = make_plan(ScheduleConfig(steps=100, warmup=0, lr=5e-4, batch=64, reference_batch=16))
    assert plan.peak_lr == pytest.approx(2e-3)


def test_describe_prints_every_stage():
    text = make_plan(ScheduleConfig(steps=10, crops=(32, 64), crop_fractions=(1, 1))).describe()
    assert "stage 0: steps 0-4 (5), crop 32" in text and "stage 1: steps 5-9 (5), crop 64" in text


def test_a_stage_without_steps_is_an_error():
    with pytest.raises(DualcodecError, match="without steps"):
        make_plan(ScheduleConfig(steps=2, crops=(32, 64, 128), crop_fractions=(1, 1, 1)))


@pytest.mark.parametrize("kwargs, message", [
    ({"crops": (64, 128), "crop_fractions": (1.0,)}, "same, non-zero length"),
    ({"clip_fractions": (0.0,)}, "must be positive"),
    ({"crops": (30,)}, "multiples of 4"),
    ({"batch": 0}, "must be positive"),
])
def test_bad_schedules_are_rejected(kwargs, message):
    with pytest.raises(DualcodecError, match=message):
        ScheduleConfig(**kwargs)
