"""Review texts folded in after the event (the worker's review-text lane) give the same item
and own-text vectors as embedding them with the event."""

from __future__ import annotations

import numpy as np

from ranking import profile as P
from ranking.engine import Recommender
from ranking.memory_store import MemoryStore
from streams.contracts.schemas import ItemEvent, ReviewEvent
from tests.ranking.fakes import FakeEncoder

T0 = 1.6e9


def _engine() -> Recommender:
    rec = Recommender(MemoryStore(32), FakeEncoder(32), seed=1)
    rec.upsert_items([ItemEvent(item_id="a", title="Star fleet", lang="en", ts=T0),
                      ItemEvent(item_id="b", title="Happy farm", lang="en", ts=T0)])
    return rec


def _reviews() -> list[ReviewEvent]:
    return [ReviewEvent(event_id=f"r{i}", user_id="u", item_id=item, ts=T0 + 3600 * i, text=text,
                        lang="de", voted_up=True)
            for i, (item, text) in enumerate([("a", "space ships and stars"), ("b", "cows and tractors")], 1)]


def test_text_folded_in_later_matches_text_with_the_event() -> None:
    now, later = _engine(), _engine()
    p_now: dict | None = None
    p_later: dict | None = None
    for event in _reviews():
        p_now = now.observe(p_now, event)
        p_later = later.observe(p_later, event, text_later=True)
        assert later.catalog.n_reviews.sum() < now.catalog.n_reviews.sum()   # not embedded yet
        p_later = later.add_review_text(p_later, event, later.encoder.encode([event.text])[0])
    assert p_now is not None and p_later is not None
    np.testing.assert_allclose(P.own_review_vector(p_now), P.own_review_vector(p_later), atol=1e-6)
    assert abs(p_now["own_w"] - p_later["own_w"]) < 1e-4
    np.testing.assert_allclose(now.catalog.vectors([0, 1]), later.catalog.vectors([0, 1]), atol=1e-6)
    assert later.add_review_text(None, _reviews()[0], np.ones(32, np.float32)) is None


def test_a_late_text_is_decayed_to_the_profile_time() -> None:
    p = P.apply_event(None, user_id="u", event_id="e1", item_id="a", ts=T0, kind="review",
                      positive=True, lang="en", item_vector=None, review_vector=None)
    p = P.apply_event(p, user_id="u", event_id="e2", item_id="b", ts=T0 + 30 * 86400, kind="click",
                      positive=True, lang="en", item_vector=None, review_vector=None)
    v = np.zeros(8, np.float32)
    v[0] = 1.0
    folded = P.add_review_vector(p, v, T0)          # written one half-life before the profile's time
    assert abs(folded["own_w"] - 0.5) < 1e-6 and p["own"] is None   # the input is not mutated
    again = P.add_review_vector(folded, v, T0 + 30 * 86400)   # then one at the profile's time
    assert abs(again["own_w"] - 1.5) < 1e-2 and again["own_ts"] == T0 + 30 * 86400


def test_exact_content_candidates_match_the_vector_store() -> None:
    """Small catalogs take content candidates from the scores the features hold; the store's
    search (used past `exact_search_items`) finds the same items."""
    from ranking.hybrid import HybridConfig

    events = _reviews()
    rankings = []
    for limit in (20_000, 0):
        rec = Recommender(MemoryStore(32), FakeEncoder(32), seed=1, config=HybridConfig(exact_search_items=limit))
        rec.upsert_items([ItemEvent(item_id=f"i{i}", title=f"game {i} " + "space farm"[i % 2 * 6:],
                                    lang="en", ts=T0) for i in range(40)]
                         + [ItemEvent(item_id=i, title=t, lang="en", ts=T0)
                            for i, t in (("a", "Star fleet"), ("b", "Happy farm"))])
        p = rec.observe(None, events[0])
        rankings.append([r.item_id for r in rec.recommend("u", p, k=10, now=T0 + 7200)])
    assert rankings[0] == rankings[1]


def test_the_first_text_a_fresh_engine_embeds_keeps_its_direction() -> None:
    """A fresh engine has no language mean yet: its first item's text and its first review text
    must not be centred to nothing (the mean of one vector is that vector), which left the item
    with no text vector and the review's author with no own-text vector."""
    engine = Recommender(MemoryStore(32), FakeEncoder(32), seed=1)
    first = _reviews()[0]
    profile = engine.observe(None, first, text_later=True)
    profile = engine.add_review_text(profile, first, engine.encoder.encode([first.text])[0])
    assert profile is not None and profile["own"] is not None and profile["own_w"] > 0.5
    engine = Recommender(MemoryStore(32), FakeEncoder(32), seed=1)
    engine.upsert_items([ItemEvent(item_id="a", title="Star fleet", lang="en", ts=T0)])
    assert np.linalg.norm(engine.catalog.text_vec[0]) > 0.5
