"""`Backoff`: waits start, doubles up to the cap, starts over on reset."""

from __future__ import annotations

import asyncio

import pytest

from streams.worker import backoff as backoff_module
from streams.worker.backoff import Backoff


def test_doubles_up_to_the_cap_and_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(backoff_module.asyncio, "sleep", fake_sleep)

    async def run() -> list[float]:
        b = Backoff(0.2, 1.0)
        waited = [await b.sleep() for _ in range(5)]
        b.reset()
        waited.append(await b.sleep())
        return waited

    assert asyncio.run(run()) == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 0.2])
    assert slept == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 0.2])


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
