"""The users table: one `UserRecord` per user, backed by a compacted changelog topic.

Writes name their changelog partition (the user's source partition, which recovery and the
partition assignor rely on), and are remembered until the broker acknowledged them, so a
batch is acknowledged only once its table writes are durable.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any

import faust
from faust.serializers import codecs
from faust.types.tuples import FutureMessage

from streams.contracts.settings import Settings
from streams.worker.app import changelog_name
from streams.worker.user_record import UserRecord

RECORD_CODEC = "xlrec-user-record"

_changelog_partition: ContextVar[int | None] = ContextVar("xlrec_changelog_partition", default=None)


class UserRecordCodec(codecs.Codec):
    """Table values as `UserRecord` in memory and its compact JSON on the changelog."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.to_bytes() if isinstance(obj, UserRecord) else UserRecord.from_json(obj).to_bytes()

    def _loads(self, data: bytes) -> UserRecord:
        return UserRecord.from_bytes(data)


codecs.register(RECORD_CODEC, UserRecordCodec())


class UsersTable(faust.Table):
    """A Faust table of `UserRecord`s whose writes name their changelog partition.

    Faust writes a key's changelog to the partition of the *current* event; batches from
    `take_events` mix partitions, so the writer says which one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_serializer = "raw"            # user_id as UTF-8, like the input topics' keys
        self.value_serializer = RECORD_CODEC
        self._unacked: list[asyncio.Future[Any]] = []

    def send_changelog(self, *args: Any, **kwargs: Any) -> FutureMessage:
        """Faust's changelog write, remembered until the broker acknowledged it (`acked`)."""
        write = super().send_changelog(*args, **kwargs)
        self._unacked.append(write)
        return write

    async def acked(self) -> None:
        """Until the broker acknowledged (acks=all) every changelog write made so far; a
        write that failed raises, and its batch is then never acknowledged."""
        while self._unacked:
            writes, self._unacked = self._unacked, []
            await asyncio.gather(*writes)

    def partition_for_key(self, key: Any) -> int | None:
        partition = _changelog_partition.get()
        return partition if partition is not None else super().partition_for_key(key)

    def record(self, user_id: str) -> UserRecord | None:
        return self.get(user_id)

    def put(self, user_id: str, record: UserRecord, partition: int) -> None:
        token = _changelog_partition.set(partition)
        try:
            self[user_id] = record
        finally:
            _changelog_partition.reset(token)


def users_table(app: faust.App, settings: Settings) -> UsersTable:
    """Declare the users table and its changelog (compacted, on the source partitions)."""
    changelog = app.topic(changelog_name(settings, "users"), key_type=str, value_type=None,
                          key_serializer="raw", value_serializer=RECORD_CODEC,
                          partitions=settings.partitions, internal=True, compacting=True,
                          deleting=False, acks=False, maxsize=131_072, allow_empty=True)
    table = UsersTable(app, name="users", key_type=str, partitions=settings.partitions,
                       changelog_topic=changelog, beacon=app.tables.beacon,
                       help="User records (streams.worker.user_record)")
    return app.tables.add(table)  # type: ignore[return-value]
