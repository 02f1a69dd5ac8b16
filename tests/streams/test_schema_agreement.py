"""`xlrec schema` is the single truth: on one table of examples, the published JSON Schema
(checked by an independent validator, `jsonschema`) and `parse_event` give the same verdict.
The only keyword outside standard JSON Schema, `x-maxSecondsAfterNow` (a timestamp at most
one day after the receiver's clock), is implemented here as any consumer of the schema would;
and `pattern` is matched as JSON Schema says (ECMA-262, where `$` is the end of the string;
Python's `re`, which `jsonschema` uses, also lets `$` match before a final newline)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from streams.contracts.schemas import (MAX_FUTURE_KEYWORD, MAX_TEXT_CHARS, MAX_TITLE_CHARS, InvalidEvent,
                                       json_schemas, parse_event)

NOW = time.time()
KIND_OF = {"items": "ItemEvent", "clicks": "ClickEvent", "reviews": "ReviewEvent",
           "requests": "RecommendationRequest", "recommendations": "Recommendation"}
ITEM = {"item_id": "g-1", "title": "Stardew Valley", "ts": 1_700_000_000}
CLICK = {"event_id": "c-1", "user_id": "u-1", "item_id": "g-1", "ts": 1_700_000_000}
REVIEW = {**CLICK, "event_id": "r-1", "text": "très bien", "voted_up": True}
REQUEST = {"request_id": "q-1", "user_id": "u-1", "ts": 1_700_000_000}


def _max_after_now(validator: Any, limit: float, instance: Any, schema: Any) -> Iterator[SchemaError]:
    if validator.is_type(instance, "number") and instance > time.time() + limit:
        yield SchemaError(f"{instance} is more than {limit} s after now")


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[SchemaError]:
    if validator.is_type(instance, "string") and not re.search(re.sub(r"\$$", r"\\Z", pattern), instance):
        yield SchemaError(f"{instance!r} does not match {pattern!r}")


Validator = jsonschema.validators.extend(Draft202012Validator, {MAX_FUTURE_KEYWORD: _max_after_now,
                                                                "pattern": _ecma_pattern})


def without(event: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in fields}


EXAMPLES: list[tuple[str, dict[str, Any], bool]] = [
    # timestamps: unix seconds, a JSON number, from 2000-01-01 to one day ahead
    ("clicks", CLICK, True),
    ("clicks", {**CLICK, "ts": 1_700_000_000.25}, True),
    ("clicks", {**CLICK, "ts": 946_684_800}, True),
    ("clicks", {**CLICK, "ts": NOW + 3600}, True),
    ("clicks", {**CLICK, "ts": 946_684_799}, False),
    ("clicks", {**CLICK, "ts": NOW + 3 * 86400}, False),
    ("clicks", {**CLICK, "ts": NOW * 1000}, False),             # milliseconds
    ("clicks", {**CLICK, "ts": "1700000000"}, False),           # a numeric string
    ("clicks", {**CLICK, "ts": True}, False),
    ("clicks", {**CLICK, "ts": None}, False),
    ("clicks", without(CLICK, "ts"), False),
    # ids
    ("clicks", {**CLICK, "user_id": "user@example.org/7"}, True),
    ("clicks", {**CLICK, "user_id": "u 1"}, False),
    ("clicks", {**CLICK, "user_id": "u1\n"}, False),            # a trailing newline
    ("clicks", {**CLICK, "user_id": ""}, False),
    ("clicks", {**CLICK, "user_id": "x" * 129}, False),
    ("clicks", {**CLICK, "user_id": 7}, False),
    # lang: a BCP-47 tag in any case
    ("clicks", {**CLICK, "lang": "en"}, True),
    ("clicks", {**CLICK, "lang": "zh-hans"}, True),
    ("clicks", {**CLICK, "lang": "PT-br"}, True),
    ("clicks", {**CLICK, "lang": "es-419"}, True),
    ("clicks", {**CLICK, "lang": "sr-Latn-RS"}, True),
    ("clicks", {**CLICK, "lang": None}, True),
    ("clicks", {**CLICK, "lang": "english"}, False),            # a Steam language name
    ("clicks", {**CLICK, "lang": "en_US"}, False),
    ("clicks", {**CLICK, "lang": " en"}, False),
    ("clicks", {**CLICK, "lang": "en\n"}, False),
    # click context
    ("clicks", {**CLICK, "context": {"recommendation_id": "r-9", "position": 2, "surface": "home"}}, True),
    ("clicks", {**CLICK, "context": {"position": 2.0}}, True),
    ("clicks", {**CLICK, "context": {"position": 2.5}}, False),
    ("clicks", {**CLICK, "context": {"position": "2"}}, False),
    ("clicks", {**CLICK, "context": {"position": 1001}}, False),
    ("clicks", {**CLICK, "context": {"page": 1}}, False),
    ("clicks", {**CLICK, "type": "click"}, True),
    ("clicks", {**CLICK, "surprise": 1}, False),
    # reviews: voted_up or rating, as JSON boolean and number
    ("reviews", REVIEW, True),
    ("reviews", {**without(REVIEW, "voted_up"), "rating": 4.5}, True),
    ("reviews", {**REVIEW, "voted_up": False, "rating": 1}, True),
    ("reviews", {**REVIEW, "voted_up": None, "rating": 3}, True),
    ("reviews", without(REVIEW, "voted_up"), False),
    ("reviews", {**REVIEW, "voted_up": None}, False),
    ("reviews", {**without(REVIEW, "voted_up"), "rating": None}, False),
    ("reviews", {**REVIEW, "voted_up": "yes"}, False),
    ("reviews", {**REVIEW, "voted_up": "true"}, False),
    ("reviews", {**REVIEW, "voted_up": 1}, False),
    ("reviews", {**without(REVIEW, "voted_up"), "rating": "5"}, False),
    ("reviews", {**without(REVIEW, "voted_up"), "rating": True}, False),
    ("reviews", {**without(REVIEW, "voted_up"), "rating": 0.5}, False),
    ("reviews", {**without(REVIEW, "voted_up"), "rating": 6}, False),
    ("reviews", {**REVIEW, "text": "x" * MAX_TEXT_CHARS}, True),
    ("reviews", {**REVIEW, "text": "x" * (MAX_TEXT_CHARS + 1)}, False),
    ("reviews", {**REVIEW, "text": 5}, False),
    # items
    ("items", ITEM, True),
    ("items", {**ITEM, "lang": "ja", "categories": ["farming"], "attributes": {"price": 14.99, "kind": "game",
                                                                             "new": True}}, True),
    ("items", {**ITEM, "deleted": True}, True),
    ("items", {**ITEM, "deleted": "yes"}, False),
    ("items", {**ITEM, "deleted": 0}, False),
    ("items", {**ITEM, "title": ""}, False),
    ("items", {**ITEM, "title": "t" * MAX_TITLE_CHARS}, True),
    ("items", {**ITEM, "title": "t" * (MAX_TITLE_CHARS + 1)}, False),
    ("items", {**ITEM, "categories": [""]}, False),
    ("items", {**ITEM, "categories": ["c"] * 65}, False),
    ("items", {**ITEM, "attributes": {"a": [1]}}, False),
    ("items", without(ITEM, "title"), False),
    # requests
    ("requests", REQUEST, True),
    ("requests", {**REQUEST, "k": 100, "query": "jeux de ferme", "lang": "fr"}, True),
    ("requests", {**REQUEST, "k": "10"}, False),
    ("requests", {**REQUEST, "k": 0}, False),
    ("requests", {**REQUEST, "k": 101}, False),
    ("requests", {**REQUEST, "query": "q" * 2001}, False),
    # recommendations (written by the worker)
    ("recommendations", {"user_id": "u-1", "model_version": "v1",
                         "items": [{"item_id": "g-1", "score": 0.5, "reason": "new"}]}, True),
    ("recommendations", {"user_id": "u-1", "model_version": "v1", "items": [{"item_id": "g-1"}]}, False),
]


@pytest.mark.parametrize(("kind", "event", "valid"), EXAMPLES,
                         ids=[f"{kind}-{n}" for n, (kind, _, _) in enumerate(EXAMPLES)])
def test_published_schema_and_validator_agree(kind: str, event: dict[str, Any], valid: bool) -> None:
    schema = json_schemas()[KIND_OF[kind]]
    Validator.check_schema(schema)
    schema_errors = [e.message for e in Validator(schema).iter_errors(event)]
    try:
        parse_event(kind, event)
        reason = None
    except InvalidEvent as exc:
        reason = exc.reason
    assert (not schema_errors, reason is None) == (valid, valid), (schema_errors, reason)


def test_every_schema_declares_its_dialect_and_is_valid() -> None:
    for schema in json_schemas().values():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Validator.check_schema(schema)
