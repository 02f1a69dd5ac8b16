"""Consumed messages: batches of them from a stream, and decoding one into an event (the
check every agent makes first)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import cast

import faust
from faust.types import EventT
from faust.types.tuples import Message

from streams.contracts.forget import parse_request
from streams.contracts.schemas import Event, parse_event
from streams.worker.dlq import KeyMismatch


def decode(kind: str, message: Message) -> Event:
    """Validate one raw message (the requests topic also carries `ForgetUser`); user events must
    be keyed by their user_id (their state partition), else the profile would be split across
    workers."""
    raw = message.value if isinstance(message.value, bytes) else b""
    event: Event = parse_request(raw) if kind == "requests" else parse_event(kind, raw)
    if kind != "items":
        key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None
        user_id = event.user_id  # type: ignore[attr-defined]
        if key != user_id:
            shown = "no key" if key is None else f"key {key[:64]!r}"
            raise KeyMismatch(f"{kind} must be keyed by user_id; got {shown} for user {user_id!r}")
    return event


def batches(stream: faust.StreamT, size: int, within_s: float) -> AsyncIterator[Sequence[EventT]]:
    """Up to `size` events at a time, or fewer after `within_s`; events keep their message
    (offset, partition, raw bytes), which the agents need for dedup and dead letters."""
    return cast(faust.Stream, stream).take_events(size, within=within_s)
