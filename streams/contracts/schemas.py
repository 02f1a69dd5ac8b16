"""Event contracts: the JSON that apps write to and read from xlrec topics.

Strict on purpose: a malformed event is rejected at the edge with a message naming the
field, so the worker never learns from garbage and the app learns what to fix. What the
validator accepts is what `xlrec schema` publishes (tests/streams/test_schema_agreement.py
checks both on one table of examples): numbers are JSON numbers and flags JSON booleans, never
strings that look like them (`"5"`, `"yes"`, `"1700000000"` are rejected, not coerced: an
app in another language validating against the published schema must reach the same verdict,
and other consumers of the topics read the same JSON). The two things the validator does that a
JSON Schema cannot say are written in the field descriptions: language tags are stored in
canonical case (`zh-hans` -> `zh-Hans`), and control characters are removed from texts.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from typing import Annotated, Any, Literal

import orjson
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints,
                      ValidationError, model_validator)

MAX_ID_CHARS = 128
MAX_TITLE_CHARS = 1_000
MAX_TEXT_CHARS = 200_000
MAX_CATEGORIES = 64
MIN_TS = 946_684_800.0            # 2000-01-01: older clocks are wrong, not old events
MAX_FUTURE_SKEW_S = 24 * 3600.0   # events from more than a day in the future are rejected
# JSON Schema keyword (an `x-` extension) for the one bound a static schema cannot hold: ts may
# be at most this many seconds after the receiver's clock.
MAX_FUTURE_KEYWORD = "x-maxSecondsAfterNow"

# Patterns are matched whole (fullmatch), as JSON Schema's ECMA `^...$` does: Python's `$`
# alone would also accept a trailing newline.
_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]+$")
# language[-script][-region]: the subset of BCP-47 that apps actually send, any case.
_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$")


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return orjson.dumps(value).decode()[:40] if isinstance(value, (bool, int, float)) or value is None \
        else type(value).__name__


def _json_number(value: Any, what: str = "a number") -> Any:
    """Numbers are JSON numbers: `"5"` or `true` is an error, not a 5 or a 1."""
    if isinstance(value, (str, bool)):
        hint = "; send the number without quotes" if isinstance(value, str) else ""
        raise ValueError(f"expected {what}, got {_shown(value)}{hint}")
    return value


def _json_integer(value: Any) -> Any:
    return _json_number(value, "an integer")


def _json_bool(value: Any) -> Any:
    """Flags are JSON booleans: `"yes"`, `"false"` or `1` is an error (pydantic would coerce them)."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_shown(value)}")
    return value


# Bounds go between the type and the BeforeValidator (`Annotated[float, Field(ge=1),
# BeforeValidator(_json_number)]`): so they constrain the number and are published as
# minimum/maximum (listed after the validator, pydantic would publish them as `ge`/`le`).
Flag = Annotated[bool, BeforeValidator(_json_bool)]


def _check_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(f"{value[:40]!r} may contain only letters, digits and . _ : @ / + = -")
    return value


def _check_lang(value: str) -> str:
    """A BCP-47 tag (language[-Script][-REGION]) in any case, stored in canonical case."""
    if not _BCP47.fullmatch(value):
        raise ValueError(f"{value[:40]!r} is not a BCP-47 language tag such as 'en', 'zh-Hans' or 'pt-BR'")
    lang, *rest = value.split("-")
    return "-".join([lang.lower(), *(p.title() if len(p) == 4 else p.upper() for p in rest)])


Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_check_id),
               Field(json_schema_extra={"pattern": _ID.pattern})]
LangTag = Annotated[str, AfterValidator(_check_lang), Field(json_schema_extra={
    "pattern": _BCP47.pattern,
    "description": "BCP-47 language tag: language[-Script][-REGION] such as 'en', 'zh-Hans', 'pt-BR' or "
                   "'es-419', in any case; stored in canonical case ('ZH-hans' -> 'zh-Hans')."})]


def _check_ts(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("timestamp must be a finite number of unix seconds")
    latest = time.time() + MAX_FUTURE_SKEW_S
    if MIN_TS <= value <= latest:
        return value
    for unit, scale in (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9)):
        if MIN_TS <= value / scale <= latest:
            raise ValueError(f"timestamp {value:.0f} looks like unix {unit}; send unix seconds "
                             f"(divide by {scale:,.0f})")
    if value < MIN_TS:
        raise ValueError(f"timestamp {value} is before 2000-01-01 ({MIN_TS:.0f}); send unix seconds")
    raise ValueError(f"timestamp {value} is more than a day in the future; send unix seconds")


Timestamp = Annotated[float, BeforeValidator(_json_number), AfterValidator(_check_ts), Field(json_schema_extra={
    "minimum": MIN_TS, MAX_FUTURE_KEYWORD: MAX_FUTURE_SKEW_S,
    "description": "When it happened, in unix seconds (not milliseconds), a JSON number: from "
                   f"{MIN_TS:.0f} (2000-01-01) to at most {MAX_FUTURE_SKEW_S:.0f} s (one day) after the "
                   f"receiver's clock ({MAX_FUTURE_KEYWORD}). A millisecond timestamp is rejected with "
                   "a message saying so."})]


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|[\ud800-\udfff]")
CLEANED = "control characters (other than tab, newline and carriage return) and lone surrogates are removed"


def _clean_text(value: Any) -> Any:
    """Drop control characters and lone surrogates: they carry no meaning and break encoders."""
    return _CONTROL.sub("", value) if isinstance(value, str) else value


# The length check runs on the cleaned text (BeforeValidator listed last runs first); listed
# after the constraints so that pydantic's message counts characters, not "items".
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS), BeforeValidator(_clean_text),
                 Field(description=f"Text in any language; {CLEANED} before the length check.")]
Title = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS), BeforeValidator(_clean_text),
                  Field(description=f"Title in any language; {CLEANED} before the length check.")]


class Event(BaseModel):
    """Base of every message: unknown fields are an error (they are usually typos)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


class ItemEvent(Event):
    """A new or updated catalog item; `deleted: true` removes it from recommendations."""

    type: Literal["item"] = "item"
    item_id: Id
    title: Title
    description: Text | None = None
    text: Text | None = None
    lang: LangTag | None = None
    categories: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=MAX_CATEGORIES)
    ts: Timestamp
    attributes: dict[Annotated[str, StringConstraints(max_length=100)], str | int | float | bool] = Field(
        default_factory=dict, max_length=64)
    deleted: Flag = False

    @property
    def key(self) -> str:
        return self.item_id


class ClickContext(BaseModel):
    """Where the click came from: set `recommendation_id` when the user clicked a recommendation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    recommendation_id: Id | None = None
    position: Annotated[int, Field(ge=0, le=1000), BeforeValidator(_json_integer)] | None = None
    surface: Annotated[str, StringConstraints(max_length=100)] | None = None


class ClickEvent(Event):
    """A user opened, played or bought an item."""

    type: Literal["click"] = "click"
    event_id: Id
    user_id: Id
    item_id: Id
    ts: Timestamp
    lang: LangTag | None = None
    context: ClickContext | None = None

    @property
    def key(self) -> str:
        return self.user_id


class ReviewEvent(Event):
    """A user wrote a review: its text (any language) and a verdict (`voted_up` or `rating`)."""

    type: Literal["review"] = "review"
    event_id: Id
    user_id: Id
    item_id: Id
    ts: Timestamp
    text: Text = ""
    lang: LangTag | None = None
    rating: Annotated[float, Field(ge=1, le=5), BeforeValidator(_json_number)] | None = Field(
        None, description="1 to 5 stars, a JSON number; 3.5 or more counts as liked when voted_up is absent.")
    voted_up: Flag | None = Field(None, description="true or false (a JSON boolean); wins over rating.")

    # The verdict rule, published: a non-null voted_up or a non-null rating.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["voted_up"], "properties": {"voted_up": {"type": "boolean"}}},
        {"required": ["rating"], "properties": {"rating": {"type": "number"}}}]})

    @model_validator(mode="after")
    def _needs_verdict(self) -> ReviewEvent:
        if self.rating is None and self.voted_up is None:
            raise ValueError("a review needs 'voted_up' (true/false) or 'rating' (1-5)")
        return self

    @property
    def positive(self) -> bool:
        """The user liked the item: voted up, or rated 3.5 or more."""
        if self.voted_up is not None:
            return self.voted_up
        return (self.rating or 0) >= 3.5

    @property
    def key(self) -> str:
        return self.user_id


class RecommendationRequest(Event):
    """An app asks for recommendations now, optionally with a free-text query in any language."""

    type: Literal["request"] = "request"
    request_id: Id
    user_id: Id
    k: Annotated[int, Field(ge=1, le=100), BeforeValidator(_json_integer)] = 10
    lang: LangTag | None = None
    query: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    ts: Timestamp

    @property
    def key(self) -> str:
        return self.user_id


class RecommendedItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    item_id: Id
    score: float
    reason: str
    title: str | None = None
    lang: str | None = None


class Recommendation(Event):
    """Fresh top-K for one user, written to the recommendations topic keyed by user_id."""

    type: Literal["recommendation"] = "recommendation"
    recommendation_id: Id = Field(default_factory=lambda: uuid.uuid4().hex)
    user_id: Id
    items: list[RecommendedItem]
    model_version: str
    trigger_event_id: Id | None = None
    request_id: Id | None = None
    created_ts: float = Field(default_factory=time.time)
    latency_ms: float | None = Field(None, description="trigger event produced -> recommendation emitted")

    @property
    def key(self) -> str:
        return self.user_id


EVENT_TYPES: dict[str, type[Event]] = {
    "items": ItemEvent, "clicks": ClickEvent, "reviews": ReviewEvent,
    "requests": RecommendationRequest, "recommendations": Recommendation,
}


class InvalidEvent(ValueError):
    """An event that failed validation; `reason` is one readable line naming the fields."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def describe_validation_error(exc: ValidationError) -> str:
    """`field 'user_id': String should have at most 128 characters; ...`"""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "event"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"field '{loc}': {msg}")
    return "; ".join(parts)


def parse_event(kind: str, raw: bytes | str | dict[str, Any]) -> Event:
    """Decode and validate one message of a topic kind (`items`, `clicks`, ...)."""
    model = EVENT_TYPES.get(kind)
    if model is None:
        raise InvalidEvent(f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_TYPES)}")
    if isinstance(raw, dict):
        data = raw
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(data).__name__}")
    declared = data.get("type")
    expected = model.model_fields["type"].default
    if declared is not None and declared != expected:
        raise InvalidEvent(f"unknown event type {declared!r} on the {kind} topic; expected {expected!r}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc)) from None


JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema (draft 2020-12) of every message type, as `xlrec schema` prints it: what
    `parse_event` accepts, plus the `x-maxSecondsAfterNow` bound on timestamps."""
    return {model.__name__: {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema()} for model in
            (ItemEvent, ClickEvent, ReviewEvent, RecommendationRequest, Recommendation)}
