"""dualcodec.pipeline: stages on worker threads, order kept, errors and early stops handled."""

from __future__ import annotations

import threading
import time

import pytest

from dualcodec import pipeline
from dualcodec.pipeline import threaded


def test_items_come_in_order_through_chained_stages():
    stages = threaded(x * 2 for x in threaded(iter(range(100)), depth=3))
    assert list(stages) == [2 * x for x in range(100)]


def test_the_stage_runs_ahead_on_another_thread():
    seen = []

    def produce():
        for i in range(3):
            seen.append(threading.current_thread().name)
            yield i

    items = threaded(produce(), depth=3)
    deadline = time.monotonic() + 5
    while len(seen) < 3 and time.monotonic() < deadline:  # produced before anything is consumed
        time.sleep(0.01)
    assert seen == ["dualcodec-stage"] * 3
    assert list(items) == [0, 1, 2]


def test_an_error_in_a_stage_is_raised_at_its_item():
    def produce():
        yield 1
        yield 2
        raise ValueError("bad frame 3")

    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for item in threaded(produce()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_stage():
    produced = []

    def produce():
        for i in range(10_000):
            produced.append(i)
            yield i

    items = threaded(produce(), depth=2)
    assert next(items) == 0
    items.close()  # what a for loop that breaks does when the generator is collected
    time.sleep(0.3)  # the worker notices at its next item
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count < 10


def test_setup_is_entered_on_the_worker():
    import torch

    def grad_enabled():
        yield torch.is_grad_enabled()

    assert list(threaded(grad_enabled(), setup=torch.inference_mode)) == [False]
    assert list(threaded(grad_enabled())) == [True]


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        threaded(iter([]), depth=0)


def test_at_exit_chained_stages_stop_and_are_waited_for():
    def forever():
        i = 0
        while True:
            yield i
            i += 1

    items = threaded(x * 2 for x in threaded(forever()))
    assert next(items) == 0  # both stages run ahead, neither is closed
    stages = list(pipeline._RUNNING)
    assert len(stages) >= 2
    pipeline._stop_all()  # the outer worker, waiting on the inner stage, ends with it
    assert not any(worker.is_alive() for _, worker in stages)
    assert not pipeline._RUNNING
