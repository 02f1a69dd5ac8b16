"""The demo catalog shipped in streams/tools/demo_catalog/: valid events, many languages, coherent themes.

`make demo` falls back to this catalog when the Steam data is absent, so it must always parse
with the same contracts the worker enforces (no broker needed here: only streams.contracts.schemas).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from streams.contracts.schemas import ClickEvent, ItemEvent, ReviewEvent, parse_event

DEMO_DIR = Path(__file__).resolve().parents[2] / "streams" / "tools" / "demo_catalog"
EVENT_KINDS = {"review": "reviews", "click": "clicks"}


def _lines(name: str) -> list[bytes]:
    return [line for line in (DEMO_DIR / name).read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def items() -> list[ItemEvent]:
    parsed = [parse_event("items", line) for line in _lines("items.jsonl")]
    assert all(isinstance(item, ItemEvent) for item in parsed)
    return parsed


@pytest.fixture(scope="module")
def events() -> list[ClickEvent | ReviewEvent]:
    parsed = []
    for number, line in enumerate(_lines("events.jsonl"), 1):
        kind = EVENT_KINDS.get(json.loads(line).get("type"))
        assert kind, f"events.jsonl line {number}: type must be 'review' or 'click'"
        parsed.append(parse_event(kind, line))
    return parsed


def theme(item: ItemEvent) -> str:
    return item.categories[0]


def test_every_line_validates(items, events):
    # the fixtures parse every line with parse_event; an invalid one raises InvalidEvent there
    assert len(items) == len(_lines("items.jsonl"))
    assert len(events) == len(_lines("events.jsonl"))


def test_sizes(items, events):
    assert len(items) >= 150
    assert len(events) >= 300
    assert sum(isinstance(e, ReviewEvent) for e in events) >= 150
    assert len({e.user_id for e in events}) >= 30


def test_ids_are_unique(items, events):
    assert len({item.item_id for item in items}) == len(items)
    assert len({e.event_id for e in events}) == len(events)


def test_languages(items, events):
    item_langs = Counter(item.lang for item in items)
    review_langs = Counter(e.lang for e in events if isinstance(e, ReviewEvent))
    assert None not in item_langs and None not in review_langs
    assert len(item_langs) >= 6, item_langs
    assert len(review_langs) >= 6, review_langs
    for tag in ("en", "de", "fr", "es", "ru", "zh-Hans", "ja", "ko"):
        assert item_langs[tag] >= 5, tag
        assert review_langs[tag] >= 5, tag


def test_every_item_has_text_and_one_theme(items):
    for item in items:
        assert item.description and item.title.strip()
        assert len(item.categories) == 1 and item.categories[0].islower()
        assert not item.deleted


def test_each_theme_spans_languages(items):
    langs: dict[str, set[str | None]] = defaultdict(set)
    for item in items:
        langs[theme(item)].add(item.lang)
    assert 12 <= len(langs) <= 15, sorted(langs)
    for name, tags in langs.items():
        assert len(tags) >= 3, (name, tags)


def test_events_reference_existing_older_items(items, events):
    born = {item.item_id: item.ts for item in items}
    for e in events:
        assert e.item_id in born, e.event_id
        assert e.ts > born[e.item_id], e.event_id


def test_streams_are_time_ordered(items, events):
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert [i.ts for i in items] == sorted(i.ts for i in items)


def test_reviews_have_text_and_a_verdict(events):
    reviews = [e for e in events if isinstance(e, ReviewEvent)]
    assert all(r.text.strip() for r in reviews)
    negatives = sum(not r.positive for r in reviews)
    assert 0 < negatives < len(reviews) / 2  # mostly positive, some negative


def test_users_stick_to_their_themes(items, events):
    """Most of what each user touches belongs to the one to three themes they love."""
    by_id = {item.item_id: item for item in items}
    touched: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        touched[e.user_id][theme(by_id[e.item_id])] += 1
    for user, counts in touched.items():
        top = sum(n for _, n in counts.most_common(3))
        assert top / sum(counts.values()) >= 0.7, (user, counts)


def test_reviews_cross_languages(items, events):
    """Users review items written in other languages: the point of a cross-lingual demo."""
    lang = {item.item_id: item.lang for item in items}
    reviews = [e for e in events if isinstance(e, ReviewEvent)]
    crossing = sum(lang[r.item_id] != r.lang for r in reviews)
    assert crossing >= len(reviews) / 3
