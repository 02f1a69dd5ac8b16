"""The Recommender the agents call: items, events, reasons, feedback, snapshot/restore."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from ranking import profile as P
from ranking.engine import Recommender
from ranking.hybrid import HybridConfig
from ranking.memory_store import MemoryStore
from streams.contracts.schemas import ClickEvent, ItemEvent, ReviewEvent
from tests.ranking.fakes import FakeEncoder

T0 = 1.6e9
ITEMS = {  # item_id: (title, lang, theme words)
    "s-de": ("Sternenflotte", "de", "space ship stars galaxy"),
    "s-ko": ("우주 함대", "ko", "space ship stars galaxy"),
    "s-fr": ("Flotte stellaire", "fr", "space ship stars galaxy"),
    "f-en": ("Happy Farm", "en", "farm cows harvest tractor"),
    "f-ja": ("のうじょう", "ja", "farm cows harvest tractor"),
    "z-en": ("Zombie Night", "en", "zombie horror dark blood"),
}


def _engine(seed: int = 0, **config) -> Recommender:
    rec = Recommender(MemoryStore(32), FakeEncoder(32), seed=seed, config=HybridConfig(**config))
    rec.upsert_items([ItemEvent(item_id=i, title=t, lang=lang, description=words, ts=T0)
                      for i, (t, lang, words) in ITEMS.items()])
    return rec


def _review(n: int, user: str, item: str, lang: str = "de", up: bool = True) -> ReviewEvent:
    return ReviewEvent(event_id=f"r{n}", user_id=user, item_id=item, ts=T0 + 60 * n,
                       text=ITEMS[item][2] if item in ITEMS else "text", lang=lang, voted_up=up)


def _feed(rec: Recommender, events) -> dict[str, dict]:
    profiles: dict[str, dict] = {}
    for e in events:
        profiles[e.user_id] = rec.observe(profiles.get(e.user_id), e)
    return profiles


def test_same_theme_in_other_languages_ranks_first_with_a_reason() -> None:
    rec = _engine()
    profiles = _feed(rec, [_review(1, "de-user", "s-de")])
    items = rec.recommend("de-user", profiles["de-user"], k=3, now=T0 + 3600)
    ids = [i.item_id for i in items]
    assert "s-de" not in ids                        # seen items are never recommended
    assert set(ids[:2]) == {"s-ko", "s-fr"}
    assert all(i.reason for i in items)
    assert items[0].title in ("우주 함대", "Flotte stellaire")
    assert items[0].lang in ("ko", "fr")


def test_duplicate_event_changes_nothing() -> None:
    rec = _engine()
    e = _review(1, "u", "s-de")
    p1 = rec.observe(None, e)
    state = pickle.dumps((rec.catalog, rec.trend, rec.cooc, rec.scorer.pairs))
    p2 = rec.observe(p1, e)
    assert p2 == p1
    assert pickle.dumps((rec.catalog, rec.trend, rec.cooc, rec.scorer.pairs)) == state


def test_an_unknown_item_is_recommended_only_once_named_and_deleted_items_disappear() -> None:
    """Issue 16, point 3: events on an item no item event named count for the profile and the
    item's trend, but the item (no title: a phantom) is recommended only once it is named."""
    rec = _engine()
    profiles = _feed(rec, [_review(1, "a", "new-1", "en"), _review(2, "b", "s-de"),
                           _review(3, "d", "new-1", "en")])
    assert rec.unknown_item_events == 2 and profiles["a"]["events"][-1:] and rec.catalog.index.row("new-1") is not None
    ids = [i.item_id for i in rec.recommend("c", None, k=10, now=T0 + 600)]
    assert "new-1" not in ids
    rec.upsert_item(ItemEvent(item_id="new-1", title="Newcomer", ts=T0 + 650))
    ranked = rec.recommend("c", None, k=10, now=T0 + 660)
    assert ranked[0].item_id == "new-1" and ranked[0].title == "Newcomer"   # trending: its events counted
    assert rec.unknown_item_events == 2
    rec.upsert_item(ItemEvent(item_id="s-ko", title="x", ts=T0 + 700, deleted=True))
    ids = [i.item_id for i in rec.recommend("b", profiles["b"], k=10, now=T0 + 800)]
    assert "s-ko" not in ids


def test_query_and_language_filter() -> None:
    rec = _engine()
    q = rec.embed_query("farm cows")
    items = rec.recommend("anyone", None, k=2, now=T0 + 60, query_vector=q)
    assert {i.item_id for i in items} == {"f-en", "f-ja"}
    assert items[0].reason == "matches your search"
    only_ja = rec.recommend("anyone", None, k=5, now=T0 + 60, query_vector=q, lang="ja")
    assert [i.item_id for i in only_ja] == ["f-ja"]


def test_learns_online_and_feedback_moves_weights() -> None:
    rec = _engine(warmup_pairs=0, learn_batch=1)   # every event moves the weights
    events = [_review(n, f"u{n % 5}", item, "en") for n, item in
              enumerate(["s-de", "s-ko", "s-fr", "f-en", "f-ja", "z-en"] * 5, 1)]
    profiles = _feed(rec, events)
    assert rec.scorer.pairs > 0
    before = rec.feature_weights()
    rec.feedback("u1", profiles["u1"], shown=["z-en", "f-ja"], clicked="z-en", now=T0 + 10_000)
    assert rec.feature_weights() != before
    assert rec.model_version.startswith("xlrec/fake-bow/")


def test_an_event_without_learning_updates_the_profile_not_the_ranker() -> None:
    learning, shedding = _engine(learn_batch=1), _engine(learn_batch=1)
    events = [_review(n, f"u{n % 3}", item, "en") for n, item in
              enumerate(["s-de", "s-ko", "s-fr", "f-en", "f-ja", "z-en"] * 2, 1)]
    learnt = _feed(learning, events)
    shed: dict[str, dict] = {}
    for e in events:
        shed[e.user_id] = shedding.observe(shed.get(e.user_id), e, learn=False)
    assert learning.scorer.pairs > 0 and shedding.scorer.pairs == 0
    assert shed == learnt   # the profiles do not depend on what the ranker learnt


def test_snapshot_restore_round_trip(tmp_path: Path) -> None:
    rec = _engine(seed=3)
    profiles = _feed(rec, [_review(n, f"u{n % 3}", item, "de") for n, item in
                           enumerate(["s-de", "f-en", "s-ko", "z-en", "f-ja"] * 3, 1)])
    path = tmp_path / "state" / "ranker.pkl"
    rec.snapshot(path)
    fresh = Recommender(MemoryStore(32), FakeEncoder(32), seed=3)
    fresh.restore(path)
    assert fresh.store.count() == rec.store.count()
    for user, p in profiles.items():
        assert fresh.recommend(user, p, k=4, now=T0 + 5000) == rec.recommend(user, p, k=4, now=T0 + 5000)
    assert fresh.feature_weights() == rec.feature_weights()
    other = Recommender(MemoryStore(32), None)
    with pytest.raises(ValueError, match="encoder"):
        other.restore(path)


def test_a_restore_defers_what_the_store_already_holds(tmp_path: Path) -> None:
    """A restart on the same disk finds its items in the embedded shard: writing them all
    again at once would leave the whole catalog exactly scanned until the next index build."""
    rec = _engine(seed=3)
    _feed(rec, [_review(n, "u", item, "de") for n, item in enumerate(["s-de", "f-en"], 1)])
    path = tmp_path / "ranker.pkl"
    rec.snapshot(path)
    kept = CountingStore(32)
    kept.upsert(list(rec.store.get(list(ITEMS)).values()))
    kept.written.clear()
    Recommender(kept, FakeEncoder(32), seed=3).restore(path)
    assert sorted(kept.written) == sorted(ITEMS) and kept.deferred == kept.written
    empty = CountingStore(32)
    Recommender(empty, FakeEncoder(32), seed=3).restore(path)
    assert sorted(empty.written) == sorted(ITEMS) and empty.deferred == []


def test_a_snapshot_taken_in_pieces_while_events_arrive_restores(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker takes a snapshot one piece at a time, other work in between: rows added
    after the first piece are left out, and the restored engine ranks and learns."""
    monkeypatch.setattr("ranking.engine.SNAPSHOT_ROWS", 2)
    rec = _engine(seed=3)
    events = [_review(n, f"u{n % 3}", item, "de") for n, item in
              enumerate(["s-de", "f-en", "s-ko", "z-en", "f-ja"] * 3, 1)]
    profiles = _feed(rec, events)
    weights = rec.feature_weights()
    pieces = rec.snapshot_pieces()
    written = [next(pieces), next(pieces)]
    rec.upsert_item(ItemEvent(item_id="late", title="A late item", lang="en", ts=T0 + 100))
    _feed(rec, [_review(99, "u0", "late", "en"), _review(98, "u1", "s-de", "en")])
    written += list(pieces)
    assert len(written) >= 4
    path = tmp_path / "pieces.snapshot"
    path.write_bytes(b"".join(written))
    fresh = Recommender(MemoryStore(32), FakeEncoder(32), seed=3)
    fresh.restore(path)
    assert fresh.catalog.index.row("late") is None and len(fresh.catalog) == len(rec.catalog) - 1
    got = {user: [i.item_id for i in fresh.recommend(user, p, k=4, now=T0 + 5000)] for user, p in profiles.items()}
    assert all(got[u] and set(got[u]) <= set(rec.catalog.index.ids) - {"late"} for u in got)
    assert fresh.feature_weights() == weights            # the ranker as of the first piece
    fresh.observe(profiles["u0"], _review(97, "u0", "f-en", "en"))   # and it goes on learning


def test_click_profile_and_reason_text() -> None:
    rec = _engine()
    click = ClickEvent(event_id="c1", user_id="u", item_id="f-en", ts=T0 + 60, lang="en")
    p = rec.observe(None, click)
    assert P.history(p) == ["f-en"] and p["read"] == {"en": 1}
    reasons = {i.item_id: i.reason for i in rec.recommend("u", p, k=5, now=T0 + 120)}
    assert reasons  # every item carries some text
    assert all(isinstance(r, str) and r for r in reasons.values())
    assert np.isfinite([i.score for i in rec.recommend("u", p, k=5, now=T0 + 120)]).all()


class CountingStore(MemoryStore):
    """MemoryStore that records which items each upsert wrote, and which were deferred."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.written: list[str] = []
        self.deferred: list[str] = []

    def upsert(self, points, *, defer=False) -> None:  # type: ignore[no-untyped-def]
        self.written += [p.item_id for p in points]
        self.deferred += [p.item_id for p in points if defer]
        super().upsert(points)


def test_the_store_is_written_only_when_what_search_reads_changes() -> None:
    """Search reads an item's vector and languages, so a click in a language the item has
    already seen writes nothing; a new language or a review's text does."""
    store = CountingStore(32)
    rec = Recommender(store, FakeEncoder(32))
    rec.upsert_items([ItemEvent(item_id=i, title=t, lang=lang, description=w, ts=T0)
                      for i, (t, lang, w) in ITEMS.items()])
    store.written.clear()
    click = ClickEvent(event_id="c1", user_id="u", item_id="s-fr", ts=T0 + 60, lang="fr")
    profile = rec.observe(None, click)
    rec.flush_store()
    assert store.written == ["s-fr"]                        # its first language from events
    profile = rec.observe(profile, click.model_copy(update={"event_id": "c2", "ts": T0 + 120}))
    rec.flush_store()
    assert store.written == ["s-fr"]                        # nothing new for search
    profile = rec.observe(profile, click.model_copy(update={"event_id": "c3", "ts": T0 + 180, "lang": "de"}))
    rec.flush_store()
    assert store.written == ["s-fr", "s-fr"] and "de" in store.get(["s-fr"])["s-fr"].payload["langs"]
    rec.observe(profile, _review(4, "u", "s-fr", lang="fr"))   # its text is embedded with the event
    rec.flush_store()
    assert store.written == ["s-fr"] * 3
    # none of these is urgent: the store may index them at its next build
    assert store.deferred == store.written
    rec.upsert_items([ItemEvent(item_id="new", title="Brand new", lang="en", ts=T0 + 200)])
    assert store.written[-1] == "new" and store.deferred == ["s-fr"] * 3   # a new item is searchable at once


def test_a_popular_item_is_written_a_few_times_not_once_per_review() -> None:
    """Each write is an unindexed point that every search scans until the index is rebuilt:
    an item is written again once its reviews grew by a tenth since the last write, and the
    stored vector stays close to the one ranking uses."""
    store = CountingStore(32)
    rec = Recommender(store, FakeEncoder(32))
    rec.upsert_items([ItemEvent(item_id=i, title=t, lang=lang, description=w, ts=T0)
                      for i, (t, lang, w) in ITEMS.items()])
    store.written.clear()
    words = ["space", "farm", "zombie", "stars", "cows", "night", "ship", "dark"]
    for n in range(300):
        text = " ".join(words[(n * k) % len(words)] for k in (1, 3, 5))
        rec.observe(None, ReviewEvent(event_id=f"r{n}", user_id=f"u{n}", item_id="s-fr", ts=T0 + n,
                                      text=text, lang="fr", voted_up=True))
        rec.flush_store()
    writes = store.written.count("s-fr")
    assert 10 <= writes <= 70, writes                 # ~log(300) / log(1.1), not 300
    row = rec.catalog.index.row("s-fr")
    stored = store.get(["s-fr"])["s-fr"].vector
    assert float(stored @ rec.catalog.vector(row)) > 0.99


class SearchCountingStore(MemoryStore):
    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.searches = 0

    def search(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.searches += 1
        return super().search(*args, **kwargs)


def test_learning_takes_its_candidates_from_the_last_ranking_and_never_searches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond exact search (a large catalog), a ranking asks the vector store; learning from
    the user's next event reuses that ranking's candidates, and without a recent ranking it
    draws candidates without the store, so an event costs no ANN query."""
    store = SearchCountingStore(32)
    rec = Recommender(store, FakeEncoder(32), seed=0, config=HybridConfig(exact_search_items=0))
    rec.upsert_items([ItemEvent(item_id=i, title=t, lang=lang, description=words, ts=T0)
                      for i, (t, lang, words) in ITEMS.items()])
    profile = rec.observe(None, _review(1, "u", "s-de"))
    assert store.searches == 0
    rec.recommend("u", profile, k=3, now=T0 + 100)
    assert store.searches == 1
    drawn: list[list[int]] = []
    monkeypatch.setattr(rec.rng, "sample", lambda rows, k: drawn.append(list(rows)) or list(rows)[:k])
    rec.observe(profile, _review(2, "u", "s-ko"))
    ranked = rec._last_candidates["u"][1]
    assert store.searches == 1 and drawn == [[r for r in ranked.tolist() if r != rec.catalog.index.row("s-ko")]]
    rec.observe(None, _review(3, "v", "f-en"))            # v was never ranked
    assert store.searches == 1 and len(drawn) == 2


def test_review_texts_go_to_the_review_encoder_of_the_same_model() -> None:
    items, reviews = FakeEncoder(), FakeEncoder()
    rec = Recommender(MemoryStore(items.dim), items, review_encoder=reviews)
    rec.upsert_items([ItemEvent(item_id="g1", title="space shooter", lang="en", ts=T0)])
    texts = [ReviewEvent(event_id=f"r{n}", user_id="u", item_id="g1", ts=T0 + n, text=text, lang="en",
                         voted_up=True) for n, text in ((1, "great space shooter"), (2, " "))]
    vectors = rec.embed_reviews(texts)
    assert list(vectors) == ["r1"] and reviews.calls == 1 and items.calls == 1   # items: the title
    np.testing.assert_allclose(vectors["r1"], items.encode(["great space shooter"])[0], atol=1e-6)

    class OtherModel(FakeEncoder):
        name = "other"

    with pytest.raises(ValueError, match="share a space"):
        Recommender(MemoryStore(items.dim), items, review_encoder=OtherModel())
