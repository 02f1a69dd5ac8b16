"""A realistic event stream without the Steam data: `realistic_events` replays the Steam reviews
when `../shared/data/steam` (or `$XLREC_STEAM_DIR`) is there, else `generated_events`.

`generated_events` is deterministic for a seed and as long as asked for: the demo catalog's 194
items (12 languages) and hand-written review texts (streams/tools/demo_catalog/), spread over
generated users. Each user has a home language (their reviews are the catalog's reviews in it,
verdict included), two or three favourite themes (most of their events), and a weight: a few
users are heavy, most have one to three events, as in the Steam stream (1,200 Steam reviews:
589 users, the busiest with 23). Every item is sent
(once, like `replay_events` does for Steam games) just before the first event that names it,
so a consumer that reads the items first finds each one.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from streams.contracts.schemas import ClickEvent, Event, ItemEvent, ReviewEvent

DEMO_DIR = Path(__file__).resolve().parent / "demo_catalog"
BASE_TS = 1_700_000_000.0   # 2023-11-14: generated events are in the past, one every ~30 s
CLICK_SHARE = 0.35
ACTIVE_USERS = 300          # users come and go: only the latest ones send events


@lru_cache(maxsize=1)
def _catalog() -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
    """(items, reviews) of the demo catalog as dicts."""
    def read(name: str) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in (DEMO_DIR / name).read_bytes().splitlines() if line.strip()]

    reviews = [e for e in read("events.jsonl") if e.get("type") == "review" and e.get("text")]
    return tuple(read("items.jsonl")), tuple(reviews)


def generated_events(n: int, seed: int = 0, click_share: float = CLICK_SHARE) -> Iterator[Event]:
    """n user events (clicks and reviews with text, in 12 languages) and the items they name,
    in send order. The same (n, seed, click_share) always gives the same events; a smaller n
    gives a prefix of a larger one's user events."""
    items, reviews = _catalog()
    rng = random.Random(seed)
    by_theme: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_theme[item["categories"][0]].append(item)
    themes = sorted(by_theme)
    texts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for review in reviews:
        texts[review["lang"]].append(review)
    languages = sorted(texts)
    # Users are drawn as the stream goes (so that n events are a prefix of more): a new user
    # for almost every other event, else one of the last ACTIVE_USERS by a heavy-tailed weight.
    users: list[tuple[str, str, list[str]]] = []
    weights: list[float] = []
    published: set[str] = set()
    for i in range(n):
        if not users or rng.random() < 0.45:
            lang = rng.choice(languages)
            users.append((f"gen-u{len(users):05d}-{lang.lower()}", lang, rng.sample(themes, rng.choice((2, 3)))))
            weights.append(min(rng.paretovariate(1.2), 40.0))
            user_id, lang, favourites = users[-1]
        else:
            user_id, lang, favourites = rng.choices(users[-ACTIVE_USERS:], weights[-ACTIVE_USERS:])[0]
        theme = rng.choice(favourites) if rng.random() < 0.8 else rng.choice(themes)
        item = rng.choice(by_theme[theme])
        ts = BASE_TS + 30.0 * i + rng.random() * 20.0
        if item["item_id"] not in published:
            published.add(item["item_id"])
            yield ItemEvent(**{**item, "ts": ts - 1.0})
        event_id = f"gen-{seed}-{i:06d}"
        if rng.random() < click_share:
            yield ClickEvent(event_id=event_id, user_id=user_id, item_id=item["item_id"], ts=ts, lang=lang)
            continue
        # Some reviews are two of the language's texts in one: longer texts, more distinct ones.
        first, *more = rng.sample(texts[lang], 2 if rng.random() < 0.3 else 1)
        text = " ".join([first["text"], *(m["text"] for m in more)])
        verdict = {k: first[k] for k in ("rating", "voted_up") if first.get(k) is not None}
        yield ReviewEvent(event_id=event_id, user_id=user_id, item_id=item["item_id"], ts=ts, lang=lang,
                          text=text, **verdict)


def realistic_events(n: int, seed: int = 0, click_share: float = CLICK_SHARE,
                     steam_dir: Path | None = None) -> tuple[str, Iterator[Event]]:
    """(where they come from, the events): the first n Steam reviews and their games when the
    Steam data is there (reviews only: Steam has no clicks), else `generated_events`."""
    from streams.tools.steam import (DEFAULT_STEAM_DIR, STEAM_EVENTS_FILE, STEAM_GAMES_FILE, replay_events,
                                     steam_available)

    steam_dir = steam_dir or DEFAULT_STEAM_DIR
    if steam_available(steam_dir):
        return (f"Steam reviews from {steam_dir}",
                replay_events(steam_dir / STEAM_EVENTS_FILE, steam_dir / STEAM_GAMES_FILE, limit=n))
    return (f"generated events (seed {seed}, demo catalog texts; no Steam data in {steam_dir})",
            generated_events(n, seed=seed, click_share=click_share))
