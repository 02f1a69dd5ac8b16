"""`streams.worker.user_record.UserRecord`, the users-table value: replays recognised by offset,
the user's partition, waiting review texts bounded, and the stored value (version 2, compact
binary; version 1 JSON still read; unknown versions refused) read back as the same record."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from faust.serializers import codecs

from ranking.profile import apply_event
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


def busy_profile(n: int = 20) -> dict:
    """A profile as `ranking.profile.apply_event` leaves a busy user's (two 384-d vectors)."""
    rng = np.random.default_rng(1)
    profile = None
    for i in range(n):
        profile = apply_event(profile, user_id="76561197982964370", event_id=f"steam-{954345 + i}",
                              item_id=str(33120 + i), ts=1_287_203_010.0 + i, kind="review", positive=i % 3 > 0,
                              lang=("en", "de", "pt")[i % 3], item_vector=rng.standard_normal(384),
                              review_vector=rng.standard_normal(384))
    assert profile is not None
    return profile


def version_1_bytes(record: UserRecord) -> bytes:
    """A value as version 1 wrote it (plain JSON)."""
    return orjson.dumps({**record.to_json(), "v": 1})


def test_version_2_reads_back_as_the_same_record() -> None:
    for record in (UserRecord(busy_profile(), {"clicks:2": 7, "reviews:2": 3}, "steam-954364", 1_700_000_000.25, (3,)),
                   UserRecord(busy_profile(1)), UserRecord(PROFILE, {"clicks:0": 1}, "e1", 2.0, ()),
                   UserRecord({"interest": "not base64!", "own": "AAE=", "n": 1}, {}, None, 0.0, ())):
        raw = record.to_bytes()
        assert raw[0] == RECORD_VERSION == 2
        assert UserRecord.from_bytes(raw) == record
        assert UserRecord.index_fields(raw) == (record.applied_at, bool(record.waiting_texts))
        # The users table's codec writes exactly these bytes and reads them back as the record.
        assert codecs.dumps(RECORD_CODEC, record) == raw
        assert codecs.loads(RECORD_CODEC, raw) == record


def test_version_2_is_smaller_than_version_1() -> None:
    record = UserRecord(busy_profile(), {"clicks:2": 7, "reviews:2": 3}, "steam-954364", 1_700_000_000.25, (3,))
    old, new = version_1_bytes(record), record.to_bytes()
    assert len(old) > 1900 and len(new) < 0.7 * len(old), (len(old), len(new))


def test_version_1_values_still_read() -> None:
    record = UserRecord(busy_profile(5), {"clicks:2": 7, "reviews:2": 3}, "e1", 1_700_000_000.25, (3,))
    raw = version_1_bytes(record)
    assert UserRecord.from_bytes(raw) == record
    assert UserRecord.index_fields(raw) == (1_700_000_000.25, True)
    assert codecs.loads(RECORD_CODEC, raw) == record
    assert UserRecord.from_json(orjson.loads(raw)) == record


def test_a_value_without_a_version_reads_as_version_1() -> None:
    """Values written before the version field (the envelopes of `streams.worker.agents`)."""
    old = {"p": PROFILE, "o": {"clicks:0": 4}, "e": "e1", "at": 9.0}
    assert UserRecord.from_json(old) == UserRecord(PROFILE, {"clicks:0": 4}, "e1", 9.0, ())
    assert UserRecord.from_bytes(orjson.dumps({**old, "t": [2]})).waiting_texts == (2,)
    # The codec also accepts such a dict for writing (it writes the current version).
    assert codecs.dumps(RECORD_CODEC, old)[0] == RECORD_VERSION


def test_a_value_of_an_unknown_version_is_refused() -> None:
    newer = {"v": 3, "p": PROFILE, "o": {}, "e": None, "at": 0.0}
    with pytest.raises(UnknownRecordVersion, match="version 3"):
        UserRecord.from_json(newer)
    with pytest.raises(UnknownRecordVersion, match="version 3"):
        UserRecord.from_bytes(orjson.dumps(newer))
    v2 = UserRecord(PROFILE, {"clicks:0": 1}, "e1", 2.0, ()).to_bytes()
    for raw in (b"\x03" + v2[1:], b"\x00" + v2[1:], b""):
        with pytest.raises(UnknownRecordVersion):
            UserRecord.from_bytes(raw)
        with pytest.raises(UnknownRecordVersion):
            UserRecord.index_fields(raw)
