"""Quality measured in the running system (`streams.worker.online_quality`): every applied click
and review counts as a hit@k, a miss, or "no list", against the latest recommendation the user
had been sent before it, per slice (all, cross_lingual, non_english)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.contracts.forget import forget_request
from streams.contracts.schemas import ClickEvent
from streams.worker import metrics
from streams.worker.online_quality import OnlineQuality
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine, catalog
from tests.streams.fake_worker import NOW, click, consumed, fake_worker, review

pytestmark = pytest.mark.anyio

SERIES = [("events", s, None) for s in metrics.ONLINE_SLICES] + \
    [("no_list", s, None) for s in metrics.ONLINE_SLICES] + \
    [("hits", s, k) for s in metrics.ONLINE_SLICES for k in metrics.ONLINE_KS]


def counts() -> dict[str, float]:
    """Every online-quality series now, named like `hits:all:10` (the registry is global:
    tests compare differences)."""
    out = {}
    for kind, slice_, k in SERIES:
        labels = {"slice": slice_} if k is None else {"slice": slice_, "k": str(k)}
        value = metrics.REGISTRY.get_sample_value(f"xlrec_online_{kind}_total", labels)
        assert value is not None, (kind, slice_, k)   # declared at 0 from the start
        out[f"{kind}:{slice_}" + ("" if k is None else f":{k}")] = value
    return out


def moved(before: dict[str, float]) -> dict[str, float]:
    """The series that changed since `before`, by how much."""
    return {name: value - before[name] for name, value in counts().items() if value != before[name]}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(items=catalog(12))   # recommends item0 .. item9, in that order


@pytest.fixture
def worker(engine: FakeEngine, tmp_path: Path) -> Iterator[Worker]:
    with fake_worker(engine, tmp_path, rank_interval_s=1.0, top_k=10, feedback_window_s=60.0) as w:
        yield w


async def rank_due(worker: Worker) -> None:
    await worker.ranking.rank_batch(worker.ctx.scheduler.due(100), [])


async def test_events_before_any_recommendation_are_no_list_not_misses(worker: Worker) -> None:
    before = counts()
    await worker.user_events.handle([consumed("t.clicks", click("e1", item="item0"), "u1", 0)])
    await rank_due(worker)   # a list computed after the event does not count for it
    assert moved(before) == {"no_list:all": 1}


async def test_hits_at_k_are_counted_against_the_list_sent_before_the_events(worker: Worker) -> None:
    await worker.user_events.handle([consumed("t.clicks", click("e1", item="item3"), "u1", 0)])
    await rank_due(worker)
    before = counts()
    # One batch: each event is measured against the list sent before the batch, item0 at rank 1,
    # item6 at rank 7; item11 is not in it.
    await worker.user_events.handle([
        consumed("t.clicks", click("e2", item="item0"), "u1", 1),
        consumed("t.clicks", click("e3", item="item6"), "u1", 2),
        consumed("t.reviews", {**review("e4", item="item11"), "lang": "en"}, "u1", 0),
        consumed("t.clicks", click("e5", user="u2", item="item0"), "u2", 3)])   # u2 has no list
    assert moved(before) == {"events:all": 3, "hits:all:1": 1, "hits:all:5": 1, "hits:all:10": 2,
                             "no_list:all": 1}


async def test_cross_lingual_and_non_english_slices(worker: Worker, engine: FakeEngine) -> None:
    engine.item_langs.update({"item0": "de", "item1": "pt-BR"})
    await worker.user_events.handle([consumed("t.clicks", click("e1", item="item5"), "u1", 0)])
    await rank_due(worker)
    before = counts()
    await worker.user_events.handle([
        consumed("t.clicks", click("e2", item="item0", lang="en"), "u1", 1),     # en on a de item
        consumed("t.clicks", click("e3", item="item1", lang="pt"), "u1", 2),     # pt on pt-BR: the same
        consumed("t.clicks", click("e4", item="item2", lang="ko"), "u1", 3),     # ko on an en item
        consumed("t.clicks", click("e5", item="item11", lang="de-AT"), "u1", 4)])  # de on en, a miss
    assert moved(before) == {
        "events:all": 4, "hits:all:1": 1, "hits:all:5": 3, "hits:all:10": 3,
        "events:cross_lingual": 3, "hits:cross_lingual:1": 1, "hits:cross_lingual:5": 2,
        "hits:cross_lingual:10": 2,
        "events:non_english": 3, "hits:non_english:5": 2, "hits:non_english:10": 2}


async def test_the_item_language_is_the_one_before_the_event(worker: Worker, engine: FakeEngine) -> None:
    """The runner asks the engine for the item's language before applying each event."""
    langs: list[str | None] = []
    await worker.ctx.runner.observe([consumed_click("e1", "item0", "de"), consumed_click("e2", "item1", None)],
                                    {}, langs)
    assert langs == ["en", None]   # no language asked for an event that has none


def consumed_click(event_id: str, item: str, lang: str | None) -> ClickEvent:
    return ClickEvent(event_id=event_id, user_id="u1", item_id=item, ts=1.7e9, lang=lang)


async def test_replays_and_dead_letters_are_not_counted(worker: Worker, engine: FakeEngine) -> None:
    await worker.user_events.handle([consumed("t.clicks", click("e1", item="item3"), "u1", 0)])
    await rank_due(worker)
    engine.fail_on.add("bad")
    before = counts()
    await worker.user_events.handle([
        consumed("t.clicks", click("e1", item="item3"), "u1", 0),    # offset 0 again: a replay
        consumed("t.clicks", click("bad", item="item3"), "u1", 1),   # dead-lettered
        consumed("t.clicks", click("e2", item="item3"), "u1", 2)])
    assert moved(before) == {"events:all": 1, "hits:all:5": 1, "hits:all:10": 1}


async def test_an_erased_user_has_no_list(worker: Worker) -> None:
    await worker.user_events.handle([consumed("t.clicks", click("e1", item="item3"), "u1", 0)])
    await rank_due(worker)
    await worker.user_events.handle([consumed("t.requests", forget_request("u1", NOW).to_json(), "u1", 1)])
    before = counts()
    await worker.user_events.handle([consumed("t.clicks", click("e2", item="item0"), "u1", 2)])
    assert moved(before) == {"no_list:all": 1}
    assert "u1" not in worker.quality._lists


def test_a_list_the_worker_no_longer_holds_as_latest_does_not_count() -> None:
    """Dropped at a rebalance or evicted: `LatestRecommendations` no longer has that body."""
    held: dict[str, bytes] = {}
    quality = OnlineQuality(held)   # type: ignore[arg-type]   # a dict has `get`
    held["u1"] = body = b'{"one": 1}'
    quality.sent("u1", body, ["a", "b"])
    ev = consumed_click("e1", "b", None)
    assert quality.ranks_before([ev]) == [2]
    held.pop("u1")
    assert quality.ranks_before([ev]) == [-1]
    held["u1"] = b'{"another": 2}'   # sent by someone else since
    assert quality.ranks_before([ev]) == [-1]
