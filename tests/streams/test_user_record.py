"""`streams.worker.user_record.UserRecord`, the users-table value: replays recognised by offset,
the user's partition, waiting review texts bounded, and the stored JSON (versioned, plain, with
the documented keys v/p/o/e/at/t) read back as the same record."""

from __future__ import annotations

import orjson
import pytest
from faust.serializers import codecs

from streams.worker.user_record import (MAX_WAITING_TEXTS, RECORD_VERSION, UnknownRecordVersion, UserRecord,
                                        source_key)
from streams.worker.users_table import RECORD_CODEC

PROFILE = {"events": ["e1"], "n": 1}


def test_offsets_make_replays_idempotent() -> None:
    assert not UserRecord(PROFILE).applied("clicks", 3, 10)     # nothing applied yet
    assert UserRecord(PROFILE, {"clicks:3": 10}).applied("clicks", 3, 10)
    assert UserRecord(PROFILE, {"clicks:3": 10}).applied("clicks", 3, 4)   # at or below
    assert not UserRecord(PROFILE, {"clicks:3": 9}).applied("clicks", 3, 10)
    assert not UserRecord(PROFILE, {"reviews:3": 99}).applied("clicks", 3, 10)   # another topic
    assert not UserRecord(PROFILE, {"clicks:2": 99}).applied("clicks", 3, 10)    # another partition
    assert source_key("clicks", 3) == "clicks:3"


def test_the_partition_is_the_one_its_offsets_name() -> None:
    assert UserRecord(PROFILE).partition is None
    assert UserRecord(PROFILE, {"reviews:3": 1}).partition == 3
    assert UserRecord(PROFILE, {"clicks:12": 0, "reviews:12": 4}).partition == 12


def test_after_event_records_the_offset_the_event_and_the_time() -> None:
    first = UserRecord(PROFILE)
    second = first.after_event({"events": ["e1", "e2"], "n": 2}, "clicks", 2, 7, "e2", 123.5)
    assert second == UserRecord({"events": ["e1", "e2"], "n": 2}, {"clicks:2": 7}, "e2", 123.5, ())
    third = second.after_event({"n": 3}, "reviews", 2, 4, "r3", 124.0, text_waits=True)
    assert third.offsets == {"clicks:2": 7, "reviews:2": 4} and third.waiting_texts == (4,)
    assert third.last_event_id == "r3" and third.applied_at == 124.0 and third.profile == {"n": 3}
    assert first == UserRecord(PROFILE) and second.waiting_texts == ()   # records are values


def test_after_event_keeps_at_most_the_newest_waiting_texts() -> None:
    record = UserRecord(PROFILE)
    for offset in range(MAX_WAITING_TEXTS + 5):
        record = record.after_event(PROFILE, "reviews", 0, offset, f"r{offset}", 1.0, text_waits=True)
    assert record.waiting_texts == tuple(range(5, MAX_WAITING_TEXTS + 5))
    record = record.after_event(PROFILE, "clicks", 0, 99, "c", 2.0)   # no text: the list stays
    assert record.waiting_texts == tuple(range(5, MAX_WAITING_TEXTS + 5))


def test_with_profile_sets_the_waiting_texts_exactly_and_keeps_the_rest() -> None:
    record = UserRecord(PROFILE, {"reviews:1": 8}, "r8", 5.0, (3, 8))
    folded = record.with_profile({"reviewed": True}, [8])
    assert folded == UserRecord({"reviewed": True}, {"reviews:1": 8}, "r8", 5.0, (8,))
    assert folded.with_profile(PROFILE, []).waiting_texts == ()
    # no "t" when none wait (small values), the list when some do
    assert "t" not in folded.with_profile(PROFILE, []).to_json()
    assert folded.to_json()["t"] == [8]


def test_the_stored_json_is_plain_with_the_documented_keys_and_reads_back() -> None:
    record = UserRecord({"events": ["e1"], "n": 1, "recent": [["i1", 1.5]]}, {"clicks:2": 7, "reviews:2": 3},
                        "e1", 1_700_000_000.25, (3,))
    raw = record.to_bytes()
    stored = orjson.loads(raw)
    assert stored == {"v": RECORD_VERSION, "p": record.profile, "o": {"clicks:2": 7, "reviews:2": 3},
                      "e": "e1", "at": 1_700_000_000.25, "t": [3]}
    assert UserRecord.from_bytes(raw) == record == UserRecord.from_json(stored)
    # The users table's codec writes exactly these bytes and reads them back as the record.
    assert codecs.dumps(RECORD_CODEC, record) == raw
    assert codecs.loads(RECORD_CODEC, raw) == record


def test_a_value_without_a_version_reads_as_version_1() -> None:
    """Values written before the version field (the envelopes of `streams.worker.agents`)."""
    assert RECORD_VERSION == 1
    old = {"p": PROFILE, "o": {"clicks:0": 4}, "e": "e1", "at": 9.0}
    assert UserRecord.from_json(old) == UserRecord(PROFILE, {"clicks:0": 4}, "e1", 9.0, ())
    assert UserRecord.from_bytes(orjson.dumps({**old, "t": [2]})).waiting_texts == (2,)
    # The codec also accepts such a dict for writing (it writes the current version).
    assert orjson.loads(codecs.dumps(RECORD_CODEC, old))["v"] == RECORD_VERSION


def test_a_value_of_a_newer_version_is_refused() -> None:
    newer = {"v": 2, "p": PROFILE, "o": {}, "e": None, "at": 0.0}
    with pytest.raises(UnknownRecordVersion, match="version 2"):
        UserRecord.from_json(newer)
    with pytest.raises(UnknownRecordVersion):
        UserRecord.from_bytes(orjson.dumps(newer))
