"""Event contracts: the JSON that apps write to and read from xlrec topics.

Strict on purpose: a malformed event is rejected at the edge with a message naming the
field, so the worker never learns from garbage and the app learns what to fix.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

import orjson
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints,
                      ValidationError, model_validator)

from encoders.languages import normalize_language

MAX_ID_CHARS = 128
MAX_TITLE_CHARS = 1_000
MAX_TEXT_CHARS = 200_000
MAX_CATEGORIES = 64
MIN_TS = 946_684_800.0            # 2000-01-01: older clocks are wrong, not old events
MAX_FUTURE_SKEW_S = 24 * 3600.0   # events from more than a day in the future are rejected

_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]+$")


def _check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"{value[:40]!r} may contain only letters, digits and . _ : @ / + = -")
    return value


Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_check_id),
               Field(json_schema_extra={"pattern": _ID.pattern})]
LangTag = Annotated[str, AfterValidator(normalize_language)]


def _check_ts(value: float) -> float:
    if value < MIN_TS:
        raise ValueError(f"timestamp {value} is before 2000-01-01; send unix seconds")
    if value > time.time() + MAX_FUTURE_SKEW_S:
        raise ValueError(f"timestamp {value} is more than a day in the future; send unix seconds")
    return value


Timestamp = Annotated[float, AfterValidator(_check_ts)]


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|[\ud800-\udfff]")


def _clean_text(value: Any) -> Any:
    """Drop control characters and lone surrogates: they carry no meaning and break encoders."""
    return _CONTROL.sub("", value) if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_clean_text), StringConstraints(max_length=MAX_TEXT_CHARS)]
Title = Annotated[str, BeforeValidator(_clean_text),
                  StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS)]


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
    deleted: bool = False

    @property
    def key(self) -> str:
        return self.item_id


class ClickContext(BaseModel):
    """Where the click came from: set `recommendation_id` when the user clicked a recommendation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    recommendation_id: Id | None = None
    position: int | None = Field(None, ge=0, le=1000)
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
    rating: float | None = Field(None, ge=1, le=5)
    voted_up: bool | None = None

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
    k: int = Field(10, ge=1, le=100)
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


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every message type, as `xlrec schema` prints it."""
    return {model.__name__: model.model_json_schema() for model in
            (ItemEvent, ClickEvent, ReviewEvent, RecommendationRequest, Recommendation)}
