"""Training schedules from Lin et al., "Accelerating the Training of Video Super-resolution Models".

**Multigrid curriculum.** Training is split into spatial stages, small crops first
(``crops = [64, 128]`` with ``crop_fractions = [0.5, 0.5]`` of the steps). Inside each
spatial stage a temporal cycle runs the clip lengths from short to long (``clips`` and
``clip_fractions``, fractions of that spatial stage): the cycles are hierarchical, not
synchronous. Most of the computation happens on small, short samples.

**Dynamic learning rate.** At every stage change the learning rate restarts at its
initial value and anneals by cosine over the *total* number of steps; only the last
stage decays to zero at the end of training::

    lr(t) = lr0 * (1 + cos(pi * (t - start) / period)) / 2,
    period = total steps (earlier stages) or the last stage's length (last stage).

**Large minibatch.** ``lr0 = lr * batch / reference_batch`` (the linear scaling rule),
reached by a linear warm-up from 0 over ``warmup`` steps at the start of training.

Steps count from 0; ``lr_at(t)`` is the rate used for the update of step ``t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dualcodec.config import ScheduleConfig
from dualcodec.errors import DualcodecError


@dataclass(frozen=True)
class Stage:
    index: int
    start: int  # first step of the stage
    steps: int
    crop: int
    clip: int

    @property
    def end(self) -> int:
        return self.start + self.steps


def _split(total: int, fractions: tuple[float, ...]) -> list[int]:
    """Integer step counts proportional to ``fractions`` that add up to ``total``."""
    bounds = [round(total * sum(fractions[: i + 1]) / sum(fractions)) for i in range(len(fractions))]
    return [b - a for a, b in zip([0] + bounds[:-1], bounds)]


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]
    total: int
    peak_lr: float
    warmup: int

    def stage_at(self, step: int) -> Stage:
        for stage in self.stages:
            if step < stage.end:
                return stage
        return self.stages[-1]

    def lr_at(self, step: int) -> float:
        stage = self.stage_at(step)
        last = stage.index == len(self.stages) - 1
        period = stage.steps if last else self.total
        lr = self.peak_lr * 0.5 * (1.0 + math.cos(math.pi * (step - stage.start) / period))
        if step < self.warmup:
            lr *= (step + 1) / self.warmup
        return lr

    def describe(self) -> str:
        lines = [f"{self.total} steps, peak lr {self.peak_lr:.3g} after {self.warmup} warm-up steps, "
                 f"{len(self.stages)} stage{'s' if len(self.stages) > 1 else ''}:"]
        for s in self.stages:
            lines.append(f"  stage {s.index}: steps {s.start}-{s.end - 1} ({s.steps}), crop {s.crop}, clip {s.clip}")
        return "\n".join(lines)


def make_plan(config: ScheduleConfig) -> Plan:
    """Lay out the stages of ``config``; every stage has at least one step."""
    stages: list[Stage] = []
    start = 0
    for crop, spatial_steps in zip(config.crops, _split(config.steps, config.crop_fractions)):
        for clip, steps in zip(config.clips, _split(spatial_steps, config.clip_fractions)):
            if steps < 1:
                raise DualcodecError(f"schedule.steps={config.steps} leaves stage (crop {crop}, clip {clip}) "
                                     "without steps; raise the steps or merge stages")
            stages.append(Stage(len(stages), start, steps, crop, clip))
            start += steps
    peak = config.lr * config.batch / config.reference_batch
    return Plan(tuple(stages), config.steps, peak, config.warmup)
