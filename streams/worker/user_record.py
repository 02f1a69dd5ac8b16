"""The users-table value: one typed, versioned record per user, stored as compact JSON.

This module is the only place that knows the stored keys. A record holds the user's profile
(`ranking.profile`, plain JSON), the last applied offset per source partition (so a message
redelivered after a crash changes nothing), the last applied event, when it was applied, and
the offsets of the user's reviews whose text still waits for the encoder (`review_text_lane`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from ranking.engine import Profile

RECORD_VERSION = 1
MAX_WAITING_TEXTS = 32   # per user; older ones are dropped (a bounded value)


class UnknownRecordVersion(ValueError):
    """A users-table value written by a newer xlrec: refuse it rather than misread it."""


def source_key(kind: str, partition: int) -> str:
    """The key of a source partition in `UserRecord.offsets` (`clicks:3`)."""
    return f"{kind}:{partition}"


@dataclass(frozen=True, slots=True)
class UserRecord:
    profile: Profile
    offsets: Mapping[str, int] = field(default_factory=dict)
    last_event_id: str | None = None
    applied_at: float = 0.0
    waiting_texts: tuple[int, ...] = ()

    # ---- what the worker asks of a record ------------------------------------------------
    def applied(self, kind: str, partition: int, offset: int) -> bool:
        """True for a message at or below the last offset applied from its partition (a replay)."""
        return offset <= self.offsets.get(source_key(kind, partition), -1)

    @property
    def partition(self) -> int | None:
        """The user's partition, from the source partitions the record names."""
        for key in self.offsets:
            return int(key.rsplit(":", 1)[1])
        return None

    def after_event(self, profile: Profile, kind: str, partition: int, offset: int, event_id: str,
                    applied_at: float, *, text_waits: bool = False) -> UserRecord:
        """The record once one event is applied; `text_waits` adds its review text's offset."""
        waiting = (*self.waiting_texts, offset)[-MAX_WAITING_TEXTS:] if text_waits else self.waiting_texts
        return UserRecord(profile, {**self.offsets, source_key(kind, partition): offset}, event_id,
                          applied_at, waiting)

    def with_profile(self, profile: Profile, waiting_texts: Iterable[int]) -> UserRecord:
        """The record with review texts folded in: a new profile and the offsets still waiting."""
        return replace(self, profile=profile, waiting_texts=tuple(waiting_texts))

    # ---- storage -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Compact keys: a busy user's value is written on every event."""
        out: dict[str, Any] = {"v": RECORD_VERSION, "p": self.profile, "o": dict(self.offsets),
                               "e": self.last_event_id, "at": self.applied_at}
        if self.waiting_texts:
            out["t"] = list(self.waiting_texts)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UserRecord:
        """Read a stored value; values of before the version field are version 1."""
        version = data.get("v", 1)
        if version != RECORD_VERSION:
            raise UnknownRecordVersion(f"users-table value of version {version!r}; this xlrec reads "
                                       f"version {RECORD_VERSION}")
        return cls(data["p"], data.get("o", {}), data.get("e"), data.get("at", 0.0), tuple(data.get("t", ())))

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_json(), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_bytes(cls, data: bytes) -> UserRecord:
        return cls.from_json(orjson.loads(data))
