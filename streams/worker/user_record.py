"""The users-table value: one typed, versioned record per user, stored in a compact binary form.

This module is the only place that knows the stored layout. A record holds the user's profile
(`ranking.profile`, plain JSON), the last applied offset per source partition (so a message
redelivered after a crash changes nothing; a re-routed event is named by the partition and offset
it arrived on, and its copy's by `repartition:<partition>`, streams.worker.reroute), the last
applied event, when it was applied, and the offsets of the user's reviews whose text still waits
for the encoder (`review_text_lane`; -(offset + 1) for a re-routed review's copy).

Stored forms (`to_bytes` writes version 2; `from_bytes` reads both):

- version 1: JSON `{"v": 1, "p": profile, "o": offsets, "e": last_event_id, "at": applied_at,
  "t": waiting_texts}` (values written before the version field read as version 1); about 2 KB
  for a busy user, most of it the profile's two base64 vectors and its JSON keys.
- version 2: a fixed header `<B version=2><f64 applied_at><B flags><u32 body length>`, then the
  body `[profile without its vectors, offsets, last_event_id, waiting_texts, vectors]` as JSON,
  zlib compressed when `flags & COMPRESSED`, then the profile's vectors as raw bytes (their base64
  decoded; the body names them and their lengths). `flags & WAITS` says that review texts wait,
  so the users table can index a value from its header alone (`index_fields`).

A stored value always starts with `{` (version 1, JSON) or with its version byte, so a value
of a version this xlrec does not know is refused (`UnknownRecordVersion`), never misread.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from ranking.engine import Profile

RECORD_VERSION = 2
READ_VERSIONS = (1, 2)
_HEADER = struct.Struct("<BdBI")        # version, applied_at, flags, body length
WAITS, COMPRESSED = 1, 2                # header flags
VECTOR_FIELDS = ("interest", "own")     # profile fields held as base64 (ranking.vectors)
COMPRESS_LEVEL = 1                      # zlib: ~8 us for a busy user's body, half its bytes
MAX_WAITING_TEXTS = 32   # per user; older ones are dropped (a bounded value)
REPARTITION_KIND = "repartition"   # offsets key of the repartition topic (streams.worker.reroute)


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
        """The user's partition, from the source partitions the record names: the repartition
        topic's when the user's events were re-routed (the other keys of re-routed events name
        the partition they arrived on), else any, all being the user's partition."""
        for key in self.offsets:
            if key.startswith(f"{REPARTITION_KIND}:"):
                return int(key.rsplit(":", 1)[1])
        for key in self.offsets:
            return int(key.rsplit(":", 1)[1])
        return None

    def after_event(self, profile: Profile, kind: str, partition: int, offset: int, event_id: str,
                    applied_at: float, *, text_waits: bool = False,
                    via: tuple[int, int] | None = None) -> UserRecord:
        """The record once one event is applied, the event named by where it arrived (`kind`,
        `partition`, `offset`); `via` is the (user's partition, offset) of its re-routed copy in
        the repartition topic (streams.worker.reroute). `text_waits` adds its review text's
        entry: its offset, or -(offset + 1) of the re-routed copy."""
        offsets = dict(self.offsets)
        entry = offset
        if via is not None:
            offsets[source_key(REPARTITION_KIND, via[0])] = via[1]
            entry = -(via[1] + 1)
        offsets[source_key(kind, partition)] = offset
        waiting = (*self.waiting_texts, entry)[-MAX_WAITING_TEXTS:] if text_waits else self.waiting_texts
        return UserRecord(profile, offsets, event_id, applied_at, waiting)

    def with_profile(self, profile: Profile, waiting_texts: Iterable[int]) -> UserRecord:
        """The record with review texts folded in: a new profile and the offsets still waiting."""
        return replace(self, profile=profile, waiting_texts=tuple(waiting_texts))

    # ---- storage -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The record as one JSON object (the version 1 layout, with the current version)."""
        out: dict[str, Any] = {"v": RECORD_VERSION, "p": self.profile, "o": dict(self.offsets),
                               "e": self.last_event_id, "at": self.applied_at}
        if self.waiting_texts:
            out["t"] = list(self.waiting_texts)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UserRecord:
        """Read a stored value; values of before the version field are version 1."""
        version = data.get("v", 1)
        if version not in READ_VERSIONS:
            raise _unknown(version)
        return cls(data["p"], data.get("o", {}), data.get("e"), data.get("at", 0.0), tuple(data.get("t", ())))

    def to_bytes(self) -> bytes:
        """The version 2 bytes (see the module's docstring)."""
        profile: Any = self.profile
        vectors: list[list[Any]] = []
        blobs: list[bytes] = []
        if isinstance(profile, Mapping):
            for name in VECTOR_FIELDS:
                raw = _raw_vector(profile.get(name))
                if raw is not None:
                    vectors.append([name, len(raw)])
                    blobs.append(raw)
            if vectors:
                profile = {k: v for k, v in profile.items() if k not in {n for n, _ in vectors}}
        body = orjson.dumps([profile, self.offsets, self.last_event_id, self.waiting_texts, vectors],
                            option=orjson.OPT_SERIALIZE_NUMPY)
        flags = WAITS if self.waiting_texts else 0
        packed = zlib.compress(body, COMPRESS_LEVEL)
        if len(packed) < len(body):
            body, flags = packed, flags | COMPRESSED
        return b"".join((_HEADER.pack(RECORD_VERSION, self.applied_at, flags, len(body)), body, *blobs))

    @classmethod
    def from_bytes(cls, data: bytes) -> UserRecord:
        if data[:1] == b"{":
            return cls.from_json(orjson.loads(data))
        version = data[0] if data else None
        if version != 2:
            raise _unknown(version)
        _, applied_at, flags, size = _HEADER.unpack_from(data)
        start = _HEADER.size
        body = data[start:start + size]
        if flags & COMPRESSED:
            body = zlib.decompress(body)
        profile, offsets, last_event_id, waiting, vectors = orjson.loads(body)
        if vectors:
            at = start + size
            for name, length in vectors:
                profile[name] = base64.b64encode(data[at:at + length]).decode("ascii")
                at += length
        return cls(profile, offsets, last_event_id, applied_at, tuple(waiting))

    @staticmethod
    def index_fields(data: bytes) -> tuple[float, bool]:
        """(applied_at, whether review texts wait) of a stored value, from its header alone
        (version 2; a version 1 value is parsed)."""
        if data[:1] == b"{":
            record = UserRecord.from_bytes(data)
            return record.applied_at, bool(record.waiting_texts)
        if data[:1] != b"\x02":
            raise _unknown(data[0] if data else None)
        _, applied_at, flags, _ = _HEADER.unpack_from(data)
        return applied_at, bool(flags & WAITS)


def _unknown(version: Any) -> UnknownRecordVersion:
    return UnknownRecordVersion(f"users-table value of version {version!r}; this xlrec reads "
                                f"versions {', '.join(map(str, READ_VERSIONS))}")


def _raw_vector(value: Any) -> bytes | None:
    """The bytes of a base64 vector that encode back to exactly the same text, else None
    (the field is then kept in the JSON body as it is)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == value else None
