"""Atomic writes: the new content or the old one, never a partial file or a leftover temp."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest

from encoders.files import atomic_open, atomic_write_bytes, atomic_write_text


def test_writes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    atomic_write_text(path, "one\n")
    atomic_write_text(path, "twö\n")
    assert path.read_text(encoding="utf-8") == "twö\n"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(tmp_path) == ["f.json"]


def test_failure_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "state.pkl"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError), atomic_open(path, "wb") as f:
        f.write(b"partial")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.pkl"]


def test_streamed_pickle_is_the_same_bytes(tmp_path: Path) -> None:
    state = {"a": list(range(100_000)), "b": "x" * 70_000}
    path = tmp_path / "s.pkl"
    with atomic_open(path, "wb", private=True) as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    assert path.read_bytes() == (tmp_path / "plain.pkl").read_bytes()


def test_permissions(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "private", b"x", private=True)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared", "x")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == \
        stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644
