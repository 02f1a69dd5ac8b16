"""An encoder that runs in a child process of its own, at a lower OS priority.

Embedding text on CPU is the most expensive work a worker does, and under a stream of reviews
it never catches up. In a thread of the worker it shares the worker's process: its batches
take cores and memory bandwidth from the event path and its Python steps (tokenisation,
pooling) take the GIL. In its own process it has its own interpreter, and the OS scheduler,
told by the nice value, gives the event path first claim on the cores; the worker's thread
only waits for the answer. Texts go in and vectors come back through a pipe (a batch of 64
vectors is 96 KB).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from encoders.base import Encoder, EncoderError

_encoder: Encoder | None = None   # the child's encoder
PARENT_CHECK_S = 1.0              # how often the child looks whether its parent still lives


def _start(load: Callable[[], Encoder], nice: int, parent: int) -> None:
    global _encoder
    threading.Thread(target=_exit_with, args=(parent,), name="xlrec-parent-watch", daemon=True).start()
    try:
        os.nice(nice)
    except OSError:  # not permitted here: the child still works, only unprioritised
        pass
    _encoder = load()


def _exit_with(parent: int) -> None:
    """End this process once its parent is gone: a worker killed with SIGKILL cannot shut its
    pool down, and the child would otherwise wait for work forever, holding its memory."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _encode(texts: list[str]) -> np.ndarray:
    assert _encoder is not None, "the encoder process did not start"
    return _encoder.encode(texts)


class ProcessEncoder:
    """`encode` runs `load()`'s encoder in one child process (started with `spawn`: the worker
    has threads, which `fork` must not copy). `load` must be picklable (a module-level function
    or a `functools.partial` of one); `name` and `dim` are those of the encoder it loads. A
    child that died is started again on the next call, which raises `EncoderError` once."""

    def __init__(self, load: Callable[[], Encoder], *, name: str, dim: int, nice: int = 10) -> None:
        self._load = load
        self._nice = nice
        self.name = name
        self.dim = dim
        self._lock = threading.Lock()
        self._pool = self._new_pool()
        self._pool.submit(_encode, ["warm up"])   # load the model now, not on the first review

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=(self._load, self._nice, os.getpid()))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            pool = self._pool
        try:
            return pool.submit(_encode, list(texts)).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = self._new_pool()
            raise EncoderError("the encoder process died; it was started again") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
