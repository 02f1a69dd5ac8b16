"""The erasure request: `{"type": "forget", "forget_id": ..., "user_id": ..., "ts": ...}` on the
`requests` topic, keyed by user_id like every message of a user's event path, so that the worker
that holds the user's profile erases it after the user's earlier events on that partition
(`xlrec forget USER_ID`, `EventProducer.forget`; streams.worker.erasure).

It shares the requests topic with `RecommendationRequest` and is told apart by its `type`;
`parse_request` reads either."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from streams.contracts.schemas import (Event, Id, InvalidEvent, RecommendationRequest, Timestamp,
                                       describe_validation_error, parse_event)

FORGET_TYPE = "forget"


class ForgetUser(Event):
    """Erase everything xlrec holds about a user (right to erasure)."""

    type: Literal["forget"] = "forget"
    forget_id: Id
    user_id: Id
    ts: Timestamp

    @property
    def key(self) -> str:
        return self.user_id


def forget_request(user_id: str, ts: float) -> ForgetUser:
    """A new erasure request for the user (InvalidEvent for an invalid user_id)."""
    return _forget({"type": FORGET_TYPE, "forget_id": uuid.uuid4().hex, "user_id": user_id, "ts": ts})


def parse_request(raw: bytes | str) -> RecommendationRequest | ForgetUser:
    """A message of the requests topic: a `ForgetUser` when its type says so, else a
    `RecommendationRequest` (InvalidEvent when neither)."""
    if b'"forget"' in (raw.encode() if isinstance(raw, str) else raw):
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("type") == FORGET_TYPE:
            return _forget(data)
    return parse_event("requests", raw)  # type: ignore[return-value]


def _forget(data: dict[str, Any]) -> ForgetUser:
    try:
        return ForgetUser.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc)) from None
