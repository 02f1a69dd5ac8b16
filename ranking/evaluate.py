"""Prequential (test-then-train) evaluation of every model on one event stream, in-process.

For each user event with ts >= eval_from whose user has an earlier event, every model is
first asked for the user's top 10 among the items it knows, minus the user's earlier items
(a hit if the event's item is there), and only then learns from the event. Items become
known from item events (at their ts) or at their first event, after it is evaluated, so
nothing leaks from the future. Titles (item_id -> title) only name items.

The harness reads no files: it replays events already read and validated (`EvalData`);
`xlrec evaluate` (streams.tools.evaluate_cli) reads Steam TSVs and JSON lines into them.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from encoders.base import Encoder
from encoders.languages import base_language
from ranking.base import Interaction, NewItem, Ranker
from ranking.baselines import BiasedMF, CoOccurrence, Content, Popularity, RecentPopularity
from ranking.engine import Recommender, item_text
from ranking.events import AnyEvent, Click, Item, ItemEvent, Review, UserEvent
from ranking.memory_store import MemoryStore
from ranking.offline_metrics import Stats, coverage, hit_rank

K = 10
WEEK = 7 * 86400.0
BASELINES = ("popularity", "recent_popularity", "cooccurrence", "biased_mf", "content")
ALL_MODELS = BASELINES + ("xlrec",)
ABLATIONS = ("xlrec-no-diversity", "xlrec-no-exploration")
SLICES = ("all", "cross_lingual", "same_lingual", "cold_item", "non_english")
COLD_EVENTS = 3
DEFAULT_DIM = 384


# ---- inputs -------------------------------------------------------------------------------
class _Timed(Protocol):
    @property
    def ts(self) -> float: ...
    @property
    def type(self) -> str: ...


Timed = TypeVar("Timed", bound=_Timed)


def time_order(events: Iterable[Timed]) -> list[Timed]:
    """Events in time order, item events before user events of the same ts (stable)."""
    return sorted(events, key=lambda e: (e.ts, e.type != "item"))


@dataclass
class EvalData:
    """What the harness replays, already read and validated.

    `events`: the stream (user events, possibly item events among them), in time order;
    `item_events`: the catalog, replayed at their ts along with `events`;
    `titles`: item_id -> title, for items that no item event introduces;
    `bad_lines`: what the reader skipped, reported as str(line) in the run details.
    """

    events: Sequence[AnyEvent]
    item_events: Sequence[ItemEvent] = ()
    titles: dict[str, str] = field(default_factory=dict)
    bad_lines: Sequence[object] = ()


# ---- models -------------------------------------------------------------------------------
class EngineRanker:
    """The production `Recommender` behind the Ranker protocol, with the harness keeping the
    profiles as the users table would. Also yields the lists without diversity/exploration."""

    name = "xlrec"

    def __init__(self, engine: Recommender) -> None:
        self.engine = engine
        self.profiles: dict[str, dict] = {}
        self.variants: dict[str, list[str]] = {}

    def add_item(self, item: NewItem) -> None:
        """Every item is named as an item event would name it (the worker recommends only
        those); one without a title or text vector is known by its events alone."""
        untitled = not item.title and item.text_vector is None   # nothing to embed
        self.engine.upsert_items(
            [Item(item_id=item.item_id, title=item.title or "", ts=item.ts, lang=item.lang,
                  description=None, text=item.text, deleted=False)],
            vectors=[None] if untitled else None if item.text_vector is None else [item.text_vector])

    def remove_item(self, item_id: str) -> None:
        self.engine.delete_item(item_id)

    def learn(self, event: Interaction) -> None:
        if event.kind == "click":
            ev: UserEvent = Click(event.event_id, event.user_id, event.item_id, event.ts, event.lang)
        else:
            ev = Review(event.event_id, event.user_id, event.item_id, event.ts, event.positive,
                        event.lang, text="")
        self.profiles[event.user_id] = self.engine.observe(
            self.profiles.get(event.user_id), ev, review_vector=event.review_vector)

    def recommend(self, user_id: str, k: int, now: float,
                  exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        ranking = self.engine.rank(user_id, self.profiles.get(user_id), k, now=now,
                                   exclude=exclude)
        self.variants = {"xlrec-no-diversity": ranking.by_score,
                         "xlrec-no-exploration": ranking.diversified}
        return [(r.item_id, r.score) for r in ranking.items]


class ShardedRanker:
    """One model as a consumer group of N workers runs it: N copies, each of which gets every
    item (every worker reads the whole items topic) and only the events and rankings of the
    users whose partition its worker owns (`worker_of`). Nothing else is shared between the
    copies, as nothing else is shared between the workers today."""

    def __init__(self, shards: list[Ranker], worker_of: Callable[[str], int]) -> None:
        self.name = shards[0].name
        self.shards = shards
        self.worker_of = worker_of
        self._last: Ranker = shards[0]

    @property
    def variants(self) -> dict[str, list[str]]:
        """The variants of the last ranking (EngineRanker's lists before diversity and exploration)."""
        return getattr(self._last, "variants", {})

    @property
    def engine(self) -> Recommender:
        """The first worker's engine (its learnt weights go into the run details)."""
        return self.shards[0].engine  # type: ignore[attr-defined]

    def add_item(self, item: NewItem) -> None:
        for shard in self.shards:
            shard.add_item(item)

    def remove_item(self, item_id: str) -> None:
        for shard in self.shards:
            shard.remove_item(item_id)

    def learn(self, event: Interaction) -> None:
        self.shards[self.worker_of(event.user_id)].learn(event)

    def recommend(self, user_id: str, k: int, now: float,
                  exclude: Collection[str] = ()) -> list[tuple[str, float]]:
        self._last = self.shards[self.worker_of(user_id)]
        return self._last.recommend(user_id, k, now, exclude)


def build_models(names: list[str], encoder: Encoder | None, seed: int, *, workers: int = 1,
                 worker_of: Callable[[str], int] | None = None) -> dict[str, Ranker]:
    """The named models; with `workers` > 1 each is a `ShardedRanker` of that many copies."""
    dim = encoder.dim if encoder is not None else DEFAULT_DIM
    factories: dict[str, Callable[[], Ranker]] = {
        "popularity": Popularity, "recent_popularity": RecentPopularity,
        "cooccurrence": CoOccurrence, "biased_mf": lambda: BiasedMF(seed=seed),
        "content": lambda: Content(dim),
        "xlrec": lambda: EngineRanker(Recommender(MemoryStore(dim), encoder, seed=seed)),
    }
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(ALL_MODELS)}")
    if "content" in names and encoder is None:
        raise ValueError("the content model needs an encoder")
    if workers == 1:
        return {n: factories[n]() for n in names}
    if worker_of is None:
        raise ValueError("several workers need worker_of (user_id -> worker)")
    return {n: ShardedRanker([factories[n]() for _ in range(workers)], worker_of) for n in names}


# ---- bookkeeping --------------------------------------------------------------------------
@dataclass
class ModelResult:
    slices: dict[str, Stats] = field(default_factory=lambda: {s: Stats() for s in SLICES})
    per_language: dict[str, Stats] = field(default_factory=lambda: defaultdict(Stats))
    weekly: dict[int, Stats] = field(default_factory=lambda: defaultdict(Stats))
    shown: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def add(self, recs: list[str], item_id: str, tags: list[str], lang: str, week: int) -> None:
        rank = hit_rank(recs, item_id)
        for tag in tags:
            self.slices[tag].add(rank, K)
        self.per_language[lang].add(rank, K)
        self.weekly[week].add(rank, K)
        self.shown.update(recs)

    def to_dict(self, catalog_size: int) -> dict[str, Any]:
        out: dict[str, Any] = {s: self.slices[s].to_dict(K) for s in SLICES}
        out["per_language"] = {lang: st.to_dict(K) for lang, st in
                               sorted(self.per_language.items(), key=lambda kv: -kv[1].n)}
        out[f"coverage@{K}"] = round(coverage(self.shown, catalog_size), 6)
        out["seconds"] = round(self.seconds, 2)
        return out


def _main(counts: Counter) -> str | None:
    return max(counts, key=counts.__getitem__) if counts else None


@dataclass
class EvalOptions:
    eval_from: float | None = None
    models: list[str] = field(default_factory=lambda: list(ALL_MODELS))
    seed: int = 0
    workers: int = 1                                 # a consumer group of this many workers
    worker_of: Callable[[str], int] | None = None    # user_id -> its worker (0..workers-1)


def embed_inputs(events: Sequence[AnyEvent], item_events: Sequence[ItemEvent], titles: dict[str, str],
                 encoder: Encoder | None, progress: Callable[[int, int], None] | None = None,
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Vectors of every review (by event_id) and item text (by item_id), computed up front in
    one batched pass: each depends only on its own text, so this leaks nothing."""
    if encoder is None:
        return {}, {}
    reviews = [e for e in events if e.type == "review" and e.text.strip()]
    item_texts = {e.item_id: item_text(e) for e in item_events if not e.deleted}
    item_ids = {e.item_id for e in events if e.type != "item"}
    for item_id in sorted(item_ids):
        if item_id in titles and item_id not in item_texts:
            item_texts[item_id] = titles[item_id]
    texts = [e.text[:2000] for e in reviews] + list(item_texts.values())
    total = len(texts)
    vecs = np.empty((0, encoder.dim), np.float32)
    if texts:
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)
        encode: Any = encoder.encode   # a CachedEncoder's encode also reports progress
        vecs = encode(texts, progress=tick) if hasattr(encoder, "lookup") else encode(texts)
    review_vecs = {e.event_id: vecs[i] for i, e in enumerate(reviews)}
    item_vecs = {item_id: vecs[len(reviews) + j] for j, item_id in enumerate(item_texts)}
    return review_vecs, item_vecs


def evaluate(data: EvalData, options: EvalOptions, encoder: Encoder | None, *,
             on_progress: Callable[[int, int, float], None] | None = None,
             on_embed: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the prequential evaluation; returns (metrics as in metrics.json, run details)."""
    titles, item_events, events = data.titles, list(data.item_events), list(data.events)
    started = time.perf_counter()
    review_vecs, item_vecs = embed_inputs(events, item_events, titles, encoder, on_embed)
    embed_seconds = time.perf_counter() - started
    models = build_models(options.models, encoder, options.seed, workers=options.workers,
                          worker_of=options.worker_of)
    results = {name: ModelResult() for name in models}
    if "xlrec" in models:
        results.update({name: ModelResult() for name in ABLATIONS})
    lead = "xlrec" if "xlrec" in models else next(iter(models))
    eval_from = options.eval_from if options.eval_from is not None else float("-inf")

    stream: list[AnyEvent] = sorted([*item_events, *events], key=lambda e: (e.ts, e.type != "item"))
    known: set[str] = set()
    user_items: dict[str, set[str]] = defaultdict(set)
    user_langs: dict[str, Counter] = defaultdict(Counter)
    item_langs: dict[str, Counter] = defaultdict(Counter)
    item_events_n: Counter = Counter()
    first_eval_ts: float | None = None
    n_eval = n_total = 0
    replay_started = time.perf_counter()

    for event in stream:
        if event.type == "item":
            for name, model in models.items():
                t = time.perf_counter()
                if event.deleted:
                    model.remove_item(event.item_id)
                    known.discard(event.item_id)
                else:
                    model.add_item(NewItem(event.item_id, event.ts, event.title, event.lang,
                                           item_text(event), item_vecs.get(event.item_id)))
                    known.add(event.item_id)
                results[name].seconds += time.perf_counter() - t
            continue
        n_total += 1
        user, item = event.user_id, event.item_id
        if user_items[user] and event.ts >= eval_from:
            first_eval_ts = event.ts if first_eval_ts is None else first_eval_ts
            n_eval += 1
            user_main = _main(user_langs[user])
            item_main = _main(item_langs[item])
            tags = ["all"]
            if item_main is not None and user_main is not None:
                tags.append("cross_lingual" if user_main != item_main else "same_lingual")
            if item_events_n[item] < COLD_EVENTS:
                tags.append("cold_item")
            if user_main is not None and base_language(user_main) != "en":
                tags.append("non_english")
            lang = user_main or "und"
            week = int((event.ts - first_eval_ts) // WEEK)
            for name, model in models.items():
                t = time.perf_counter()
                recs = [i for i, _ in model.recommend(user, K, event.ts, user_items[user])]
                results[name].seconds += time.perf_counter() - t
                results[name].add(recs, item, tags, lang, week)
                for variant, variant_recs in getattr(model, "variants", {}).items():
                    results[variant].add(variant_recs, item, tags, lang, week)
        interaction = Interaction(
            event.event_id, user, item, event.ts,
            "review" if event.type == "review" else "click",
            event.positive if event.type == "review" else True, event.lang,
            review_vecs.get(event.event_id))
        new_item = item not in known
        for name, model in models.items():
            t = time.perf_counter()
            if new_item:
                model.add_item(NewItem(item, event.ts, titles.get(item), None, titles.get(item),
                                       item_vecs.get(item)))
            model.learn(interaction)
            results[name].seconds += time.perf_counter() - t
        known.add(item)
        user_items[user].add(item)
        if event.lang:
            user_langs[user][event.lang] += 1
            if event.type == "review":
                item_langs[item][event.lang] += 1
        item_events_n[item] += 1
        if on_progress:
            on_progress(n_total, n_eval, results[lead].slices["all"].hr)

    for name in ABLATIONS:
        if name in results:
            results[name].seconds = results["xlrec"].seconds
    catalog_size = len(known)
    metrics = {"eval_from": options.eval_from, "events_total": n_total, "events_evaluated": n_eval,
               "seed": options.seed,
               "models": {name: r.to_dict(catalog_size) for name, r in results.items()}}
    if options.workers > 1:   # only then: the file's schema is a contract of the one-worker run
        metrics["workers"] = options.workers
    details: dict[str, Any] = {
        "bad_lines": [str(b) for b in data.bad_lines], "catalog_size": catalog_size,
        "embedding_seconds": round(embed_seconds, 2),
        "replay_seconds": round(time.perf_counter() - replay_started, 2),
        "encoder": getattr(encoder, "name", None),
        "cache": {"hits": getattr(encoder, "hits", None), "misses": getattr(encoder, "misses", None)},
        "weekly": {name: {str(w): s.to_dict(K) for w, s in sorted(r.weekly.items())}
                   for name, r in results.items()},
        "first_eval_ts": first_eval_ts,
    }
    if "xlrec" in models:
        engine = models["xlrec"].engine  # type: ignore[attr-defined]
        details["xlrec_weights"] = {k: round(v, 4) for k, v in engine.feature_weights().items()}
        details["xlrec_pairs"] = engine.scorer.pairs
    return metrics, details
