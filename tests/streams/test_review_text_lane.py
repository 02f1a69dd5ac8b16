"""The review-text lane (`streams.worker.review_text_lane`): texts are embedded after their events
updated the profiles, in one encoder batch; their offsets wait in the user's `UserRecord` until
folded in, so a restarted worker or a partition's new owner reads them again, and folds each in
once; texts of revoked partitions are dropped."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import pytest
from faust.types import TP

from streams.contracts.settings import Settings
from streams.worker.review_text_lane import to_read
from streams.worker.user_record import UserRecord
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine
from tests.streams.fake_worker import click, consumed, review

pytestmark = pytest.mark.anyio


def record(worker: Worker, user_id: str) -> UserRecord:
    value = worker.ctx.users[user_id]
    assert isinstance(value, UserRecord)
    return value


def waits_for_no_text(stored: UserRecord) -> bool:
    """No waiting offsets, and none stored (no "t" key: small values)."""
    return stored.waiting_texts == () and "t" not in stored.to_json()


async def test_review_texts_are_embedded_in_one_batch_after_the_profile_update(
        worker: Worker, engine: FakeEngine) -> None:
    await worker.user_events.handle([consumed("t.reviews", review("r1"), "u1", 0),
                                     consumed("t.clicks", click("c1", user="u2"), "u2", 0),
                                     consumed("t.reviews", review("r2", user="u2"), "u2", 1),
                                     consumed("t.reviews", review("r3", text=""), "u1", 2),
                                     consumed("t.reviews", review("r1"), "u1", 3)])  # sent twice
    assert engine.embedded == [] and record(worker, "u2").profile["n"] == 2
    assert not record(worker, "u1").profile["reviewed"]   # the profile did not wait for the encoder
    await worker.lane.embed_batch()
    assert engine.embedded == [["r1", "r2"]]  # once each; empty texts are not embedded
    assert record(worker, "u1").profile["reviewed"] and record(worker, "u2").profile["reviewed"]
    assert record(worker, "u1").offsets == {"reviews:0": 3}
    assert not worker.lane.texts


async def test_the_lane_reports_how_long_its_oldest_text_waited(
        worker: Worker, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.worker import metrics, review_text_lane

    clock = [1000.0]
    monkeypatch.setattr(review_text_lane.time, "monotonic", lambda: clock[0])
    assert worker.lane.oldest_wait() == 0.0
    await worker.user_events.handle([consumed("t.reviews", review("r1"), "u1", 0)])
    clock[0] += 2.5
    await worker.user_events.handle([consumed("t.reviews", review("r2", user="u2"), "u2", 1)])
    clock[0] += 1.0
    assert worker.lane.oldest_wait() == pytest.approx(3.5)
    assert metrics.REGISTRY.get_sample_value("xlrec_review_text_oldest_wait_seconds") == pytest.approx(3.5)
    await worker.lane.embed_batch()
    assert worker.lane.oldest_wait() == 0.0 and not worker.lane.texts


async def test_review_texts_of_revoked_partitions_are_dropped(worker: Worker, engine: FakeEngine) -> None:
    await worker.user_events.handle([consumed("t.reviews", review("r1"), "u1", 0),
                                     consumed("t.reviews", review("r2", user="u2"), "u2", 1, partition=1)])
    await worker.rebalance.on_partitions_revoked(None, {TP("t.reviews", 1)})
    await worker.lane.embed_batch()
    assert engine.embedded == [["r1"]]
    assert record(worker, "u1").profile["reviewed"] and not record(worker, "u2").profile["reviewed"]


async def test_waiting_review_texts_are_kept_in_the_table_until_folded_in(
        worker: Worker, engine: FakeEngine) -> None:
    await worker.user_events.handle([consumed("t.reviews", review("r1"), "u1", 5),
                                     consumed("t.reviews", review("r2", item="i2"), "u1", 6)])
    assert record(worker, "u1").waiting_texts == (5, 6)
    assert record(worker, "u1").to_json()["t"] == [5, 6]
    queued = list(worker.lane.texts)
    await worker.lane.embed_batch()
    assert waits_for_no_text(record(worker, "u1")) and engine.folded == ["r1", "r2"]
    worker.lane.queue(queued)   # read again, e.g. by a worker that restarted
    await worker.lane.embed_batch()
    assert engine.folded == ["r1", "r2"]  # folded in once


async def test_the_owner_after_a_restart_reads_the_waiting_texts_again(
        worker: Worker, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    await worker.user_events.handle([consumed("t.reviews", review("r1"), "u1", 5),
                                     consumed("t.reviews", review("r2", user="u2"), "u2", 7, partition=1)])
    worker.lane.texts.clear()   # a new process: nothing queued, the table recovered
    asked = []

    def read(settings: Settings, topic: str, wanted: dict[int, set[int]]) -> list[Any]:
        asked.append((topic, wanted))
        return [consumed("t.reviews", review("r1"), "u1", 5).message]

    monkeypatch.setattr("streams.worker.review_text_lane.read_messages", read)
    with patch.object(worker.ctx.app.consumer, "assignment", return_value={TP("t.reviews", 0), TP("t.clicks", 0)}):
        await worker.rebalance.on_rebalance_complete()
    assert worker.lane.reader is not None
    await worker.lane.reader
    assert asked == [("t.reviews", {0: {5}})]   # only the partitions this worker owns
    await worker.lane.embed_batch()
    assert engine.folded == ["r1"] and waits_for_no_text(record(worker, "u1"))
    assert record(worker, "u2").waiting_texts == (7,)     # its owner reads it


def test_only_owned_partitions_and_texts_not_queued_are_read() -> None:
    records = [UserRecord.from_json(value) if value else None for value in (
        {"p": {}, "o": {"reviews:0": 9}, "t": [4, 9]}, {"p": {}, "o": {"clicks:1": 2, "reviews:1": 5}, "t": [5]},
        {"p": {}, "o": {"reviews:2": 1}}, None)]
    assert to_read(records, owned={0, 1}, queued={(0, 4)}) == {0: {9}, 1: {5}}
    assert to_read(records, owned={2}, queued=set()) == {}
