"""One conformance suite for every Ranker (the baselines and the production engine)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from ranking.base import Interaction, NewItem, Ranker
from ranking.baselines import BiasedMF, CoOccurrence, Content, Popularity, RecentPopularity
from ranking.engine import Recommender
from ranking.evaluate import EngineRanker
from ranking.memory_store import MemoryStore
from tests.ranking.fakes import FakeEncoder

DIM = 32
ENC = FakeEncoder(DIM)

RANKERS: dict[str, Callable[[], Ranker]] = {
    "popularity": Popularity,
    "recent_popularity": RecentPopularity,
    "cooccurrence": CoOccurrence,
    "biased_mf": lambda: BiasedMF(n_factors=4, seed=1),
    "content": lambda: Content(DIM),
    "xlrec": lambda: EngineRanker(Recommender(MemoryStore(DIM), ENC, seed=1)),
}
TOPICS = ["space ship stars", "farm cows harvest", "zombie horror dark", "racing cars speed"]


def _stream(n_users: int = 30, seed: int = 0) -> list[Interaction]:
    """Users stick to one topic; items 0-3 of each topic; reviews mention the topic."""
    rng = np.random.default_rng(seed)
    events = []
    ts = 1.5e9
    for step in range(4):
        for u in range(n_users):
            topic = u % len(TOPICS)
            item = f"{topic}-{(u + step) % 4}"
            ts += 60
            events.append(Interaction(f"e{step}-{u}", f"u{u}", item, ts, "review",
                                      bool(rng.random() < 0.9), ["en", "de"][u % 2],
                                      ENC.encode([TOPICS[topic]])[0]))
    return events


@pytest.fixture(params=sorted(RANKERS))
def ranker(request: pytest.FixtureRequest) -> Ranker:
    return RANKERS[request.param]()


def _items(events: list[Interaction]) -> list[NewItem]:
    seen: dict[str, NewItem] = {}
    for e in events:
        topic = TOPICS[int(e.item_id.split("-")[0])]
        seen.setdefault(e.item_id, NewItem(e.item_id, e.ts - 1, f"{topic} {e.item_id}", None,
                                           topic, ENC.encode([topic])[0]))
    return list(seen.values())


def test_empty_ranker_recommends_nothing(ranker: Ranker) -> None:
    assert ranker.recommend("nobody", 10, 1.5e9) == []


def test_recommends_known_items_only_and_respects_exclude(ranker: Ranker) -> None:
    events = _stream()
    for item in _items(events):
        ranker.add_item(item)
    for e in events:
        ranker.learn(e)
    recs = ranker.recommend("u0", 5, events[-1].ts + 60, exclude={"0-0", "0-1"})
    ids = [i for i, _ in recs]
    assert 0 < len(ids) <= 5 and len(set(ids)) == len(ids)
    assert not {"0-0", "0-1"} & set(ids)
    known = {i.item_id for i in _items(events)}
    assert set(ids) <= known
    ranker.remove_item(ids[0])
    again = [i for i, _ in ranker.recommend("u0", 5, events[-1].ts + 60, exclude={"0-0", "0-1"})]
    assert ids[0] not in again


def test_deterministic(ranker: Ranker) -> None:
    name = next(n for n, f in RANKERS.items() if type(f()) is type(ranker) or
                (n == "xlrec" and isinstance(ranker, EngineRanker)))
    other = RANKERS[name]()
    events = _stream()
    for r in (ranker, other):
        for item in _items(events):
            r.add_item(item)
        for e in events:
            r.learn(e)
    now = events[-1].ts + 60
    assert ranker.recommend("u3", 10, now) == other.recommend("u3", 10, now)
