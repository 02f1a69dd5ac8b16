"""Defaults of the encoder's settings when a caller passes none: the same `XLREC_*`
environment variables and defaults as the streams settings (`XLREC_CACHE_DIR`,
`XLREC_DEVICE`, `XLREC_ENCODER_MAX_TOKENS`, `XLREC_ENCODER_THREADS`), read here so that
encoders need nothing from streams. Callers with settings of their own pass them as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")


def _env(name: str) -> str | None:
    """`XLREC_<NAME>`, matched without regard to case (as pydantic-settings does)."""
    key = f"XLREC_{name}".upper()
    if key in os.environ:
        return os.environ[key]
    return next((v for k, v in os.environ.items() if k.upper() == key), None)


def _int(name: str, default: int, low: int, high: int | None = None) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"XLREC_{name}={raw!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"XLREC_{name}={value} must be between {low} and {high or 'any'}")
    return value


def default_cache_dir() -> Path:
    """XLREC_CACHE_DIR, else ~/.cache/xlrec: models (and embedding caches) live outside the repository."""
    raw = _env("CACHE_DIR")
    return Path(raw) if raw else Path.home() / ".cache" / "xlrec"


def default_device() -> str:
    """XLREC_DEVICE: auto (CUDA when onnxruntime offers it), cpu or cuda."""
    return _env("DEVICE") or "auto"


def default_max_tokens() -> int:
    """XLREC_ENCODER_MAX_TOKENS (8..512), else 256."""
    return _int("ENCODER_MAX_TOKENS", 256, 8, 512)


def default_threads() -> int:
    """XLREC_ENCODER_THREADS: onnxruntime intra-op threads, 0 (the default) = the physical
    cores this process may run on."""
    return _int("ENCODER_THREADS", 0, 0)


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads share a core's
    matrix units, so a second thread per core only adds contention); the CPU count where
    the topology cannot be read."""
    cpus = os.sched_getaffinity(0)
    cores = set()
    for cpu in cpus:
        try:
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))
