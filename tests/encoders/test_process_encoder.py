"""`encoders.process_encoder.ProcessEncoder`: the same vectors as the encoder it loads, computed in
a child process at a lower priority, which is started again after it died."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from encoders.base import EncoderError
from encoders.process_encoder import ProcessEncoder


class WhereEncoder:
    """Says where it ran: each row is (pid, niceness, len(text), 1...) normalised."""

    name = "where"
    dim = 4

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.asarray([[os.getpid(), os.nice(0) + 100, len(t), 1.0] for t in texts], np.float64)
        return rows.astype(np.float32)


def load_where() -> WhereEncoder:
    return WhereEncoder()


@pytest.fixture
def encoder():
    enc = ProcessEncoder(load_where, name="where", dim=4, nice=5)
    yield enc
    enc.close()


def test_texts_are_encoded_in_a_child_process_at_a_lower_priority(encoder: ProcessEncoder) -> None:
    out = encoder.encode(["a", "bbb", "cc"])
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert out[:, 2].tolist() == [1.0, 3.0, 2.0]                  # in order
    assert int(out[0, 0]) != os.getpid()                         # not in this process
    assert int(out[0, 1]) - 100 >= min(19, os.nice(0) + 5)       # niced (capped at 19)
    assert encoder.name == "where" and encoder.dim == 4


def test_a_child_that_died_is_started_again(encoder: ProcessEncoder) -> None:
    child = int(encoder.encode(["x"])[0, 0])
    os.kill(child, signal.SIGKILL)
    with pytest.raises(EncoderError, match="died"):
        encoder.encode(["y"])
    again = encoder.encode(["zz"])
    assert int(again[0, 0]) not in (child, os.getpid()) and again[0, 2] == 2.0


def test_the_child_ends_when_its_parent_was_killed() -> None:
    """A worker killed with SIGKILL cannot stop its pool: the child must not outlive it."""
    import subprocess
    import sys
    import time

    script = ("import sys, time\n"
              "from encoders.process_encoder import ProcessEncoder\n"
              "from tests.encoders.test_process_encoder import load_where\n"
              "enc = ProcessEncoder(load_where, name='where', dim=4, nice=5)\n"
              "print(int(enc.encode(['x'])[0, 0]), flush=True)\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert child != parent.pid and _alive(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the encoder process outlived its killed parent"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"   # a zombie has ended
    except FileNotFoundError:
        return False
