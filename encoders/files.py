"""Atomic file writes: readers see the old file or the new one, never a partial one.

The data goes to a temporary file beside `path` (same directory, so same file system),
which then replaces `path` with `os.replace`; on any failure the temporary file is removed
and `path` is untouched. The bottom layer: encoders, ranking and streams all use it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _create_temp(path: Path, private: bool) -> tuple[int, Path]:
    """A new file `<name><random>.tmp` beside `path`, opened for writing. `private`: mode
    0600 (as `tempfile.mkstemp` makes it); otherwise what `open()` gives (0666 less umask)."""
    while True:
        tmp = path.with_name(f"{path.name}{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666), tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", *, private: bool = False,
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """Write `path` atomically through the file object this yields (`mode` "wb" or "w");
    `path` is replaced only when the block ends without an exception."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', not {mode!r}")
    path = Path(path)
    fd, tmp = _create_temp(path, private)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_open(path, "wb", private=private) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
                      private: bool = False) -> None:
    """Replace `path` with `text` atomically."""
    with atomic_open(path, "w", private=private, encoding=encoding) as f:
        f.write(text)
