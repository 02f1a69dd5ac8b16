"""Event contracts: valid events pass, invalid ones fail with a message naming the field."""

from __future__ import annotations

import json
import time

import pytest

from encoders.languages import base_language, normalize_language
from streams.contracts.schemas import (MAX_ID_CHARS, MAX_TEXT_CHARS, ClickEvent, InvalidEvent, ItemEvent,
                             Recommendation, ReviewEvent, json_schemas, parse_event)

NOW = time.time()
REVIEW = {"event_id": "e-1", "user_id": "u-1", "item_id": "i-1", "ts": 1_500_000_000,
          "text": "Sehr gutes Spiel", "lang": "de", "voted_up": True}


def test_valid_review_roundtrips_through_json() -> None:
    event = parse_event("reviews", json.dumps(REVIEW).encode())
    assert isinstance(event, ReviewEvent)
    assert event.positive and event.key == "u-1"
    assert parse_event("reviews", event.to_json()) == event


@pytest.mark.parametrize("change, field", [
    ({"user_id": ""}, "user_id"),
    ({"user_id": "x" * (MAX_ID_CHARS + 1)}, "user_id"),
    ({"user_id": "bad id\n"}, "user_id"),
    ({"item_id": 42}, "item_id"),
    ({"ts": "yesterday"}, "ts"),
    ({"ts": NOW + 10 * 86400}, "ts"),
    ({"ts": 12}, "ts"),
    ({"lang": "klingon!"}, "lang"),
    ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "text"),
    ({"rating": 9}, "rating"),
    ({"surprise": 1}, "surprise"),
])
def test_invalid_review_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_event("reviews", {**REVIEW, **change})
    assert f"field '{field}'" in err.value.reason


def test_missing_required_field_is_named() -> None:
    data = dict(REVIEW)
    del data["item_id"]
    with pytest.raises(InvalidEvent, match="field 'item_id': Field required"):
        parse_event("reviews", data)


def test_review_needs_a_verdict() -> None:
    data = {k: v for k, v in REVIEW.items() if k != "voted_up"}
    with pytest.raises(InvalidEvent, match="voted_up"):
        parse_event("reviews", data)
    assert not parse_event("reviews", {**data, "rating": 2}).positive


@pytest.mark.parametrize("raw, message", [
    (b"\xff\xfe not json", "not valid UTF-8 JSON"),
    (b'{"truncated": ', "not valid UTF-8 JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"type": "purchase"}', "unknown event type 'purchase'"),
])
def test_undecodable_messages_get_a_reason(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        parse_event("clicks", raw)


def test_unknown_kind() -> None:
    with pytest.raises(InvalidEvent, match="unknown event kind"):
        parse_event("purchases", b"{}")


def test_control_characters_and_lone_surrogates_are_removed_from_text() -> None:
    event = parse_event("reviews", {**REVIEW, "text": "ok\x00\x07 fine\ud800 ✓ مرحبا"})
    assert event.text == "ok fine ✓ مرحبا"


@pytest.mark.parametrize("given, tag", [
    ("en", "en"), ("zh-hans", "zh-Hans"), ("PT-br", "pt-BR"), ("schinese", "zh-Hans"),
    ("koreana", "ko"), ("brazilian", "pt-BR"), ("es-419", "es-419"),
])
def test_language_tags_are_normalised(given: str, tag: str) -> None:
    assert normalize_language(given) == tag


def test_base_language_keeps_chinese_script() -> None:
    assert base_language("pt-BR") == "pt"
    assert base_language("zh-Hant") == "zh-Hant"


def test_item_and_click_models() -> None:
    item = ItemEvent(item_id="g-1", title="Stardew Valley", lang="en", ts=1_500_000_000,
                     categories=["farming"], attributes={"price": 14.99})
    assert item.key == "g-1" and not item.deleted
    click = ClickEvent(event_id="c-1", user_id="u-1", item_id="g-1", ts=1_500_000_001,
                       context={"recommendation_id": "r-1", "position": 2})
    assert click.context is not None and click.context.position == 2
    with pytest.raises(InvalidEvent, match="field 'title'"):
        parse_event("items", {"item_id": "g-2", "title": "", "ts": 1_500_000_000})


def test_recommendation_defaults() -> None:
    rec = Recommendation(user_id="u-1", model_version="test", items=[
        {"item_id": "g-1", "score": 0.9, "reason": "popular with German readers"}])
    assert rec.recommendation_id and rec.created_ts > NOW - 5
    assert parse_event("recommendations", rec.to_json()) == rec


def test_json_schemas_cover_every_message() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"ItemEvent", "ClickEvent", "ReviewEvent", "RecommendationRequest",
                            "Recommendation"}
    assert "user_id" in schemas["ClickEvent"]["required"]
