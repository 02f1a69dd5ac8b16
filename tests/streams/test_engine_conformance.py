"""What the worker relies on from a recommender (`streams.worker.engine_runner.Engine`), checked
against every implementation with the same tests: the real `ranking.engine.Recommender` (with
an in-memory vector store and a small deterministic encoder) and the tests' `FakeEngine`, so a
worker test that passes with the fake says something about the real engine."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from ranking.engine import RankedItem, Recommender
from ranking.memory_store import MemoryStore
from streams.contracts.schemas import ClickEvent, ItemEvent, ReviewEvent
from streams.worker.engine_runner import Engine
from streams.worker.user_record import UserRecord
from tests.ranking.fakes import FakeEncoder
from tests.streams.fake_engine import FakeEngine

T0 = 1.6e9
ITEMS = [ItemEvent(item_id=item_id, title=title, lang=lang, description=words, ts=T0)
         for item_id, title, lang, words in (
             ("s-de", "Sternenflotte", "de", "space ship stars galaxy"),
             ("s-ko", "우주 함대", "ko", "space ship stars galaxy"),
             ("f-en", "Happy Farm", "en", "farm cows harvest tractor"),
             ("f-ja", "のうじょう", "ja", "farm cows harvest tractor"),
             ("z-en", "Zombie Night", "en", "zombie horror dark blood"))]
ITEM_IDS = {item.item_id for item in ITEMS}


def real_engine() -> Engine:
    return Recommender(MemoryStore(32), FakeEncoder(32), seed=0)


def fake_engine() -> Engine:
    return FakeEngine()


IMPLEMENTATIONS: dict[str, Callable[[], Engine]] = {"Recommender": real_engine, "FakeEngine": fake_engine}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def engine(request: pytest.FixtureRequest) -> Engine:
    """An engine with the catalog upserted, as the catalog feed leaves it."""
    engine = IMPLEMENTATIONS[request.param]()
    engine.upsert_items(ITEMS)
    return engine


def click(n: int, user: str = "u1", item: str = "s-de") -> ClickEvent:
    return ClickEvent(event_id=f"c{n}", user_id=user, item_id=item, ts=T0 + 60 * n)


def review(n: int, user: str = "u1", item: str = "s-de", text: str = "space ship stars") -> ReviewEvent:
    return ReviewEvent(event_id=f"r{n}", user_id=user, item_id=item, ts=T0 + 60 * n, text=text,
                       lang="de", voted_up=True)


def check_ranking(items: list[RankedItem], k: int) -> None:
    assert 0 < len(items) <= k   # the catalog has items for anyone
    for item in items:
        assert isinstance(item, RankedItem)
        assert math.isfinite(item.score), item
        assert item.item_id in ITEM_IDS, item
        assert isinstance(item.reason, str) and item.reason.strip(), item


def test_it_is_an_engine(engine: Engine) -> None:
    assert isinstance(engine, Engine)
    assert isinstance(engine.model_version, str) and engine.model_version


def test_observe_returns_a_profile_and_the_same_event_twice_changes_nothing(engine: Engine) -> None:
    profile = engine.observe(None, click(1), text_later=True)
    profile = engine.observe(profile, review(2), text_later=True)
    assert isinstance(profile, dict)
    version = engine.model_version
    for event in (click(1), review(2)):
        assert engine.observe(profile, event, text_later=True) == profile
    assert engine.model_version == version   # nothing learned from a duplicate


def test_a_profile_read_back_from_the_users_table_still_knows_its_events(engine: Engine) -> None:
    """The worker stores profiles as JSON (`UserRecord`) and applies the next event to the
    profile it reads back, also after a restart."""
    profile = engine.observe(engine.observe(None, click(1), text_later=True), review(2), text_later=True)
    stored = UserRecord.from_bytes(UserRecord(profile).to_bytes()).profile
    assert engine.observe(stored, click(1), text_later=True) == stored
    assert isinstance(engine.observe(stored, click(3, item="f-en"), text_later=True), dict)


def test_observe_applies_events_with_learning_off(engine: Engine) -> None:
    """Under a backlog the runner applies most events with `learn=False`."""
    profile = engine.observe(None, click(1), text_later=True, learn=False)
    assert isinstance(profile, dict) and engine.observe(profile, click(1), text_later=True, learn=False) == profile


@pytest.mark.parametrize("k", [1, 3, 50])
def test_recommend_returns_at_most_k_upserted_items_with_finite_scores_and_reasons(engine: Engine, k: int) -> None:
    check_ranking(engine.recommend("newcomer", None, k, now=T0 + 3600), k)
    profile = engine.observe(None, review(1), text_later=True)
    check_ranking(engine.recommend("u1", profile, k, now=T0 + 3600), k)
    query = engine.embed_query("farm harvest")
    check_ranking(engine.recommend("u1", profile, k, now=T0 + 3600, query_vector=query, lang="en"), k)


def test_a_deleted_item_is_not_recommended(engine: Engine) -> None:
    engine.upsert_items([ItemEvent(item_id="z-en", title="Zombie Night", ts=T0 + 10, deleted=True)])
    engine.flush_store()
    assert "z-en" not in {item.item_id for item in engine.recommend("newcomer", None, 10, now=T0 + 3600)}


def test_embed_reviews_returns_a_vector_per_review_with_text_by_event_id(engine: Engine) -> None:
    vectors = engine.embed_reviews([review(1), review(2, text="   "), review(3, text="farm cows")])
    assert set(vectors) == {"r1", "r3"}
    for vector in vectors.values():
        assert isinstance(vector, np.ndarray) and vector.ndim == 1 and vector.size > 0
        assert np.all(np.isfinite(vector))


def test_add_review_text_returns_the_profile(engine: Engine) -> None:
    event = review(1)
    profile = engine.observe(None, event, text_later=True)
    vector = engine.embed_reviews([event])["r1"]
    folded = engine.add_review_text(profile, event, vector)
    assert isinstance(folded, dict)
    assert engine.observe(folded, event, text_later=True) == folded   # still applied once
    assert engine.add_review_text(None, review(2), vector) is None     # no profile to update
    engine.flush_store()


def test_feedback_accepts_a_click_and_a_non_click(engine: Engine) -> None:
    profile = engine.observe(None, click(1), text_later=True)
    shown = [item.item_id for item in engine.recommend("u1", profile, 3, now=T0 + 3600)]
    assert shown
    engine.feedback("u1", profile, shown, shown[-1], now=T0 + 3700)
    engine.feedback("u1", profile, shown, None, now=T0 + 3800)


def test_item_lang_is_the_declared_language_before_any_event_and_none_for_unknown_items(engine: Engine) -> None:
    assert engine.item_lang("s-ko") == "ko" and engine.item_lang("f-en") == "en"
    assert engine.item_lang("nobody-named-it") is None


def test_snapshot_comes_in_pieces_of_bytes(engine: Engine) -> None:
    engine.observe(None, click(1), text_later=True)
    pieces = list(engine.snapshot_pieces())
    assert pieces and all(isinstance(p, bytes) and p for p in pieces)
