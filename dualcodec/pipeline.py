"""Run the stages of a decoder on threads of their own, with bounded queues between them.

:func:`threaded` moves the work of producing an iterator's items onto a worker thread,
``depth`` items ahead of the consumer; chaining it overlaps the stages::

    frames = threaded(up(f) for f in threaded(base_frames()))   # base | networks | consumer

Order is kept (one thread per stage), an exception in a stage is raised in the consumer
at the item where it happened, and a consumer that stops early (or is interrupted by a
signal) stops the stage at its next item, without waiting for it. Each
stage releases the GIL where it does real work (PyAV's decoder, torch, OpenVINO), so
the stages overlap on the cores the runtimes leave free.

A stage starts at once (a decode runs ahead while its caller opens the output). A
program may exit with stages still running, never read or left half-read: at exit
every stage stops at its next item and is waited for (up to ``EXIT_WAIT_S``), since a
worker frozen inside OpenVINO while the interpreter shuts down aborts the process.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()
_POLL_S = 0.05
EXIT_WAIT_S = 10.0  # how long an exiting program waits for its stages to finish their items
_RUNNING: set[tuple[threading.Event, threading.Thread]] = set()  # the stages whose workers run
_AT_EXIT: list[bool] = []  # whether _stop_all is registered (on the first stage)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def threaded(items: Iterable[T], depth: int = 2, setup: Callable[[], object] | None = None) -> Iterator[T]:
    """Iterate ``items`` on a worker thread, at most ``depth`` items ahead. ``setup``, if
    given, returns a context manager entered on the worker for the whole stage (e.g.
    ``torch.inference_mode``, which is per thread)."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    box: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            if setup is None:
                produce()
            else:
                with setup():
                    produce()
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))
        finally:
            _RUNNING.discard(stage)

    def produce() -> None:
        for item in items:
            if not put(item):
                return
        put(_END)

    worker = threading.Thread(target=work, name="dualcodec-stage", daemon=True)
    stage = (stop, worker)
    if not _AT_EXIT:
        atexit.register(_stop_all)
        _AT_EXIT.append(True)
    _RUNNING.add(stage)
    worker.start()

    def consume() -> Iterator[T]:
        try:
            while True:
                try:
                    item = box.get(timeout=_POLL_S)
                except queue.Empty:
                    if stop.is_set():  # stopped from outside (the program exits): no more items
                        return
                    continue
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:  # the worker stops at its next item (not joined: it may be stuck in a stage)
            stop.set()

    return consume()


def _stop_all() -> None:
    """At exit: stop every running stage at its next item and wait for its worker (a stage
    reading from one upstream ends with it), at most ``EXIT_WAIT_S`` in all."""
    stages = list(_RUNNING)
    for stop, _ in stages:
        stop.set()
    deadline = time.monotonic() + EXIT_WAIT_S
    for _, worker in stages:
        worker.join(max(0.0, deadline - time.monotonic()))
