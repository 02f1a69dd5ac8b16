"""Event contracts: valid events pass, invalid ones fail with a message naming the field."""

from __future__ import annotations

import json
import re
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


@pytest.mark.parametrize("ts, message", [
    (NOW * 1000, "looks like unix milliseconds; send unix seconds (divide by 1,000)"),
    (NOW * 1_000_000, "looks like unix microseconds"),
    (12, "is before 2000-01-01 (946684800); send unix seconds"),
    (NOW + 10 * 86400, "more than a day in the future"),
])
def test_a_timestamp_out_of_bounds_says_which_unit_to_send(ts: float, message: str) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(message)):
        parse_event("reviews", {**REVIEW, "ts": ts})


@pytest.mark.parametrize("change, message", [
    ({"ts": "1700000000"}, "field 'ts': expected a number, got the string '1700000000'; send the number "
                           "without quotes"),
    ({"voted_up": "yes"}, "field 'voted_up': expected true or false, got the string 'yes'"),
    ({"voted_up": 1}, "field 'voted_up': expected true or false, got 1"),
    ({"voted_up": None, "rating": "5"}, "field 'rating': expected a number, got the string '5'"),
    ({"voted_up": None, "rating": True}, "field 'rating': expected a number, got true"),
])
def test_look_alike_values_are_rejected_not_coerced(change: dict, message: str) -> None:
    """A string that looks like a number or a flag is an error: the published schema says number or
    boolean, and a silent `"yes"` -> true or `true` -> 1 star would hide a producer's bug."""
    with pytest.raises(InvalidEvent, match=re.escape(message)):
        parse_event("reviews", {**REVIEW, **change})


def test_length_messages_count_characters() -> None:
    with pytest.raises(InvalidEvent, match="field 'text': String should have at most 200000 characters$"):
        parse_event("reviews", {**REVIEW, "text": "x" * (MAX_TEXT_CHARS + 1)})
    with pytest.raises(InvalidEvent, match="field 'title': String should have at most 1000 characters$"):
        parse_event("items", {"item_id": "g", "title": "t" * 1001, "ts": 1_500_000_000})
    with pytest.raises(InvalidEvent, match="field 'title': String should have at least 1 character$"):
        parse_event("items", {"item_id": "g", "title": "\x00", "ts": 1_500_000_000})


def test_event_language_is_a_bcp47_tag_stored_in_canonical_case() -> None:
    assert parse_event("reviews", {**REVIEW, "lang": "ZH-hans"}).lang == "zh-Hans"  # type: ignore[attr-defined]
    assert parse_event("reviews", {**REVIEW, "lang": "pt-br"}).lang == "pt-BR"  # type: ignore[attr-defined]
    for tag in ("english", "en_US", " en", "en\n"):
        with pytest.raises(InvalidEvent, match="field 'lang': .* is not a BCP-47 language tag"):
            parse_event("reviews", {**REVIEW, "lang": tag})


def test_the_schema_publishes_the_rules_the_validator_enforces() -> None:
    review = json_schemas()["ReviewEvent"]
    ts = review["properties"]["ts"]
    assert ts["type"] == "number" and ts["minimum"] == 946_684_800 and ts["x-maxSecondsAfterNow"] == 86_400
    assert "unix seconds" in ts["description"] and "millisecond" in ts["description"]
    lang = review["properties"]["lang"]["anyOf"][0]
    assert lang["pattern"].startswith("^[A-Za-z]{2,3}") and "BCP-47" in lang["description"]
    assert {tuple(rule["required"]) for rule in review["anyOf"]} == {("voted_up",), ("rating",)}
    assert review["properties"]["rating"]["anyOf"][0] == {"type": "number", "minimum": 1, "maximum": 5}
