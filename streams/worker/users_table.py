"""The users table: one `UserRecord` per user, backed by a compacted changelog topic and stored
on disk (Faust's RocksDB store, `rocksdict` driver) or, by setting, in memory.

Writes name their changelog partition (the user's source partition, which recovery and the
partition assignor rely on), reach the Kafka client in the order they were made (one sender,
`send_outbox`: a user's older record never lands after a newer one), and are remembered until
the broker acknowledged them, so a batch is acknowledged only once its table writes are durable.

The local store is never ahead of the changelog. A write is first held in memory (`_pending`,
what reads see) and sent; once the broker acknowledged it, the same bytes go to the store and
then the changelog offset goes next to them (`persisted_offset`), once every earlier write to
that partition is stored as well (a write that could not be stored holds the offset before
it). A worker killed at any point therefore restarts with a store that equals the changelog up
to its persisted offsets, and recovers only what was written after them: a write the broker
never took is not in the store either, so its event is applied again rather than skipped as done.

The worker asks two questions of all its users after a rebalance (which were active lately,
which wait for review texts); `UsersIndex` answers them from memory instead of reading every
record: it sees every write (ours, and others' through changelog recovery) and, once per
process, the values a RocksDB store already held when the worker started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import faust
from aiokafka.partitioner import murmur2
from faust.serializers import codecs
from faust.stores import rocksdb as faust_rocksdb
from faust.types import EventT
from faust.types.tuples import FutureMessage

from streams.contracts.settings import Settings
from streams.worker.app import changelog_name
from streams.worker.user_record import UnknownRecordVersion, UserRecord

log = logging.getLogger(__name__)

RECORD_CODEC = "xlrec-user-record"
RECENT_S = 300.0            # users written this recently are "recent" (re-ranked after a rebalance)
MAX_RECENT = 200_000        # at most this many of them are remembered (the most recent)
SCAN_CHUNK = 5_000          # values read from disk between two yields to the event loop
# RocksDB per partition: small memtables (Faust's default is 3 x 64 MiB per partition), a bloom
# filter of 10 bits per key (a user looked up in a partition that does not hold it costs no
# read), and a block cache of `users_cache_mb` shared out over the partitions.
ROCKSDB_OPTIONS: dict[str, Any] = {"write_buffer_size": 8 << 20, "max_write_buffer_number": 2,
                                   "target_file_size_base": 32 << 20, "bloom_filter_size": 10}

_changelog_partition: ContextVar[int | None] = ContextVar("xlrec_changelog_partition", default=None)


class UserRecordCodec(codecs.Codec):
    """Table values as `UserRecord` in memory and its compact bytes on the changelog and disk."""

    def _dumps(self, obj: Any) -> bytes:
        return obj.to_bytes() if isinstance(obj, UserRecord) else UserRecord.from_json(obj).to_bytes()

    def _loads(self, data: bytes) -> UserRecord:
        return UserRecord.from_bytes(data)


codecs.register(RECORD_CODEC, UserRecordCodec())


def guess_partition(user_id: str | bytes, partitions: int) -> int:
    """The partition the SDK producer (murmur2, like Java clients and aiokafka) sends a user to."""
    key = user_id.encode() if isinstance(user_id, str) else user_id
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class UsersStore(faust_rocksdb.Store):
    """Faust's RocksDB store (one database per partition) for the users table.

    Faust's store puts and looks up a key in the database of the *current event's* partition;
    the users agent takes batches that mix partitions and the review-text lane writes outside
    any event, so here a write names its partition (`UsersTable.put`, through the changelog
    acknowledgement) and a read finds the database that holds the key."""

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = _changelog_partition.get()
        if partition is None:
            super()._set(key, value)
            return
        self.put_raw(partition, key, value)

    def put_raw(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Store the changelog's bytes for a key in its partition's database (None deletes)."""
        elsewhere = self._key_index.get(key)
        if elsewhere is not None and elsewhere != partition and elsewhere in self._dbs:
            self._dbs[elsewhere].delete(key)   # one copy per user, like the memory store
        db = self._db_for_partition(partition)
        if value is None:
            db.delete(key)
            self._key_index.pop(key, None)
        else:
            db.put(key, value)
            self._key_index[key] = partition

    def partition_path(self, partition: int) -> Path:
        """A partition's database, in a directory of its changelog topic's own. A persisted
        offset means something only for the changelog it was read from: Faust's one directory
        per data dir let a deployment with another topic prefix or group (or a recreated
        changelog) resume reading at a foreign offset, skip its own first records, and find
        another deployment's users."""
        topic = self.table.changelog_topic.get_topic_name()
        return self.path / topic / f"{self.basename}-{partition}.db"

    def _open_for_partition(self, partition: int) -> Any:
        self.partition_path(partition).parent.mkdir(parents=True, exist_ok=True)
        return super()._open_for_partition(partition)

    def _get(self, key: bytes) -> bytes | None:
        if key not in self._key_index and self._dbs:
            guess = guess_partition(key, self.table.partitions or 1)
            db = self._dbs.get(guess)
            if db is not None and db.key_may_exist(key):
                value = db.get(key)
                if value is not None:
                    self._key_index[key] = guess
                    return value
        found = self._get_bucket_for_key(key)
        return found.value if found is not None else None

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None

    def partition_values(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) the partition's database holds (Faust's offset key left out)."""
        yield from self._visible_items(self._db_for_partition(partition))

    def estimated_keys(self, partitions: Iterable[int]) -> int:
        """RocksDB's estimate of the keys in these partitions (no scan)."""
        total = 0
        for partition in partitions:
            db = self._dbs.get(partition)
            if db is not None:
                total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        return total


class UsersIndex:
    """What the worker asks of all its users, kept as they are written: who was written lately
    (user -> (applied_at, partition), oldest write first, bounded) and whose review texts wait
    (user -> partition)."""

    def __init__(self, recent_s: float = RECENT_S, max_recent: int = MAX_RECENT) -> None:
        self.recent_s = recent_s
        self.max_recent = max_recent
        self.recent: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.waiting: dict[str, int] = {}

    def note(self, user_id: str, partition: int, applied_at: float, waits: bool, *, if_new: bool = False) -> None:
        """A value written (or, `if_new`, found on disk: then only users not noted already)."""
        if if_new and (user_id in self.recent or user_id in self.waiting):
            return
        if applied_at >= time.time() - self.recent_s:
            self.recent[user_id] = (applied_at, partition)
            self.recent.move_to_end(user_id)
            while len(self.recent) > self.max_recent:
                self.recent.popitem(last=False)
        else:
            self.recent.pop(user_id, None)
        if waits:
            self.waiting[user_id] = partition
        else:
            self.waiting.pop(user_id, None)

    def forget(self, user_id: str) -> None:
        self.recent.pop(user_id, None)
        self.waiting.pop(user_id, None)

    def prune(self) -> None:
        horizon = time.time() - self.recent_s
        while self.recent:
            user_id, (applied_at, _) = next(iter(self.recent.items()))
            if applied_at >= horizon:
                break
            del self.recent[user_id]

    def recent_users(self, since: float, partitions: set[int]) -> list[str]:
        self.prune()
        return [u for u, (at, p) in self.recent.items() if at >= since and p in partitions]

    def waiting_users(self, partitions: set[int]) -> list[str]:
        return [u for u, p in self.waiting.items() if p in partitions]

    def partition_of(self, user_id: str) -> int | None:
        hit = self.recent.get(user_id)
        return hit[1] if hit else self.waiting.get(user_id)


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
        # user -> [record, partition, writes in flight]: written, not yet acknowledged
        self._pending: dict[str, list[Any]] = {}
        self._in_flight: dict[int, UserRecord | None] = {}   # id(FutureMessage) -> the record it carries
        # Writes not yet handed to the Kafka client, sent in this order by one sender at a time.
        self._outbox: deque[FutureMessage] = deque()
        self._send_lock = asyncio.Lock()
        self._sender: asyncio.Future[None] | None = None
        # partition -> its writes in the order sent, until stored; partition -> id(write) ->
        # changelog offset of a write acknowledged and stored. The persisted offset passes only
        # stored writes; a partition with a write that could not be stored keeps its offset
        # (`_frozen`) for the rest of this process (a recovery of it starts there).
        self._unstored: dict[int, deque[Any]] = {}
        self._stored: dict[int, dict[int, int]] = {}
        self._frozen: set[int] = set()
        self.index = UsersIndex()
        self._indexed: set[int] = set()              # partitions whose local values are indexed

    @property
    def on_disk(self) -> bool:
        return isinstance(self.data, UsersStore)

    def _new_store_by_url(self, url: Any) -> Any:
        if str(url).startswith("rocksdb:"):
            return UsersStore(url, self.app, self, table_name=self.name, key_type=self.key_type,
                              key_serializer=self.key_serializer, value_serializer=self.value_serializer,
                              value_type=self.value_type, loop=self.loop, options=self.options)
        return super()._new_store_by_url(url)

    # ---- writes ---------------------------------------------------------------------------
    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None) -> FutureMessage:
        """A changelog write, handed to the Kafka client in the order written (`send_outbox`)
        and remembered until the broker acknowledged it (`acked`).

        Not through Faust's producer buffer: its background sender and the users agent's
        flush (`UserEvents.changelog_durable`) both took writes from it, and a write the
        background sender held while the partition's batch was full reached the client
        *after* a later write of the same user that the flush sent meanwhile. The changelog
        (and the store, which follows the acknowledgements) then ended with the older record,
        and the user's next event was applied to it: the events in between were lost."""
        write = self.changelog_topic.as_future_message(
            key=key, value=value, partition=partition,
            key_serializer=self.key_serializer if key_serializer is None else key_serializer,
            value_serializer=self.value_serializer if value_serializer is None else value_serializer,
            callback=self._on_changelog_sent, eager_partitioning=True)
        self._outbox.append(write)
        self._unacked.append(write)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self.send_outbox())
        return write

    async def send_outbox(self) -> None:
        """Hand the written records to the Kafka client, one at a time and in order (the client
        appends each to its partition's batch before the next is handed over)."""
        async with self._send_lock:
            while self._outbox:
                write = self._outbox.popleft()
                try:
                    await write.message.channel.publish_message(write, wait=False)
                except Exception as exc:  # the client refused it: whoever waits for it learns why
                    if not write.done():
                        write.set_exception(exc)
                    log.error("users-table changelog write not sent: %s: %s", type(exc).__name__, exc)

    async def acked(self) -> None:
        """Until the broker acknowledged (acks=all) every changelog write made so far; a
        write that failed raises, and its batch is then never acknowledged."""
        while self._unacked:
            if getattr(self, "_outbox", None):   # (tables built bare in tests have none)
                await self.send_outbox()
            writes, self._unacked = self._unacked, []
            await asyncio.gather(*writes)

    def partition_for_key(self, key: Any) -> int | None:
        partition = _changelog_partition.get()
        return partition if partition is not None else super().partition_for_key(key)

    def put(self, user_id: str, record: UserRecord, partition: int) -> None:
        """Write a user's record to the changelog partition named; reads see it at once, the
        local store once the broker acknowledged it (`_on_changelog_sent`)."""
        pending = self._pending.get(user_id)
        if pending is None:
            self._pending[user_id] = [record, partition, 1]
        else:
            pending[0], pending[1], pending[2] = record, partition, pending[2] + 1
        self.index.note(user_id, partition, record.applied_at, bool(record.waiting_texts))
        write = self.send_changelog(partition, user_id, record)
        self._in_flight[id(write)] = record
        if partition not in self._frozen:
            self._unstored.setdefault(partition, deque()).append(write)

    def erase(self, user_id: str, partition: int) -> None:
        """Delete a user's record: a tombstone on the changelog partition named (compaction then
        removes the user's records from the topic); reads see no record at once, the local
        store deletes it once the broker acknowledged the tombstone."""
        pending = self._pending.get(user_id)
        if pending is None:
            self._pending[user_id] = [None, partition, 1]
        else:
            pending[0], pending[1], pending[2] = None, partition, pending[2] + 1
        self.index.forget(user_id)
        write = self.send_changelog(partition, user_id, None, value_serializer="raw")
        self._in_flight[id(write)] = None
        if partition not in self._frozen:
            self._unstored.setdefault(partition, deque()).append(write)

    def _on_changelog_sent(self, fut: FutureMessage) -> None:
        """The broker has the write: its bytes go to the local store, then its offset, once
        every earlier write to the partition is stored too (`_persist_stored`).

        A write that could not be stored (say its partition's database could not be opened
        again after a revoke) stays in `_pending`, so reads still see it, and holds the
        partition's persisted offset before it: a restart recovers it from the changelog.
        Faust set the offset of every acknowledged write, so the next write stored moved it
        past the one that was not, and a restart skipped that one for good."""
        record = self._in_flight.pop(id(fut), None)
        res = fut.result()
        key = fut.message.key
        user_id = key.decode() if isinstance(key, bytes) else str(key)
        partition = res.topic_partition.partition
        try:
            value = fut.message.value
            if isinstance(self.data, UsersStore) and (value is None or isinstance(value, bytes)):
                self.data.put_raw(partition, user_id.encode(), value)
            elif value is None:   # a tombstone (`erase`) in the memory store
                token = _changelog_partition.set(partition)
                try:
                    self.data.pop(user_id, None)
                finally:
                    _changelog_partition.reset(token)
            elif record is not None:
                token = _changelog_partition.set(partition)
                try:
                    self.data[user_id] = record
                finally:
                    _changelog_partition.reset(token)
        except Exception:
            log.exception("users-table write of %r (changelog partition %d, offset %d) not stored "
                          "locally; the partition's persisted offset stays before it",
                          user_id, partition, res.offset)
            self._frozen.add(partition)
            self._unstored.pop(partition, None)
            self._stored.pop(partition, None)
            return
        pending = self._pending.get(user_id)
        if pending is not None:
            pending[2] -= 1
            if pending[2] <= 0:
                del self._pending[user_id]
        if partition in self._frozen:
            return
        if partition not in self._unstored:   # not written through `put`: Faust's own bookkeeping
            super()._on_changelog_sent(fut)
            return
        self._stored.setdefault(partition, {})[id(fut)] = res.offset
        self._persist_stored(partition, res.topic_partition)

    def _persist_stored(self, partition: int, tp: Any) -> None:
        """Move the partition's persisted offset over the writes stored, in the order sent,
        up to the first one not stored yet (never past a write the store does not hold). A
        write the broker refused is not in the changelog: it holds nothing back."""
        queue = self._unstored[partition]
        stored = self._stored.setdefault(partition, {})
        offset = None
        while queue:
            head = queue[0]
            if id(head) in stored:
                offset = stored.pop(id(queue.popleft()))
            elif isinstance(head, asyncio.Future) and head.done() and not head.cancelled() \
                    and head.exception() is not None:
                queue.popleft()
            else:
                break
        if offset is None:
            return
        if self.app.in_transaction:
            self.app.tables.persist_offset_on_commit(self.data, tp, offset)
        else:
            self.data.set_persisted_offset(tp, offset)

    # ---- reads ----------------------------------------------------------------------------
    def record(self, user_id: str) -> UserRecord | None:
        pending = self._pending.get(user_id)
        if pending is not None:
            return pending[0]
        return self.get(user_id)

    def __getitem__(self, user_id: Any) -> Any:
        pending = self._pending.get(user_id)
        return pending[0] if pending is not None else super().__getitem__(user_id)

    def partition_of(self, user_id: str) -> int | None:
        """The partition of a user's record, also when its partition was revoked (from the
        index of recent writes): None for a user this worker has no trace of."""
        pending = self._pending.get(user_id)
        if pending is not None:
            return pending[1]
        hint = self.index.partition_of(user_id)
        if hint is not None:
            return hint
        record = self.get(user_id)
        return record.partition if record else None

    def recent_users(self, since: float, partitions: set[int]) -> list[str]:
        """The users of these partitions written at or after `since`, from the index alone (a
        restart finds every user of the last minutes there: reading their records would cost
        a read and a decode each before the worker takes any event)."""
        return self.index.recent_users(since, partitions)

    def waiting_records(self, partitions: set[int]) -> list[UserRecord]:
        """The records of these partitions' users whose review texts wait."""
        out = []
        for user_id in self.index.waiting_users(partitions):
            record = self.record(user_id)
            if record is not None and record.waiting_texts:
                out.append(record)
        return out

    def count(self, partitions: set[int]) -> int:
        """Users held for these partitions (RocksDB: its estimate, no scan)."""
        if isinstance(self.data, UsersStore):
            return self.data.estimated_keys(partitions)
        return len(self)

    # ---- the index: recovery and the state on disk at start -------------------------------
    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Changelog records recovered (others' writes, or ours before a restart) are indexed
        and stored; those of a partition this worker writes, past the highwater its recovery
        read up to, are not: they are this worker's own writes since (the store has them, or a
        newer value), and Faust applies the ones it fetched past the highwater only with a
        later batch, when it would put back a user's older record over a newer one."""
        events = self._not_ours(list(batch))
        for event in events:
            message = event.message
            key = message.key.decode() if isinstance(message.key, bytes) else str(message.key)
            if message.value is None:
                self.index.forget(key)
                continue
            try:
                applied_at, waits = _index_fields(message.value)
            except (UnknownRecordVersion, ValueError) as exc:
                log.warning("users-table value of %r not indexed: %s", key, exc)
                continue
            self.index.note(key, message.partition, applied_at, waits)
        super().apply_changelog_batch(events)

    def _not_ours(self, events: list[EventT]) -> list[EventT]:
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]  # (TableManager's, not in TableManagerT)
        active, highwaters = recovery.active_tps, recovery.active_highwaters
        if not active:
            return events
        kept = []
        for event in events:
            message = event.message
            highwater = highwaters.get(message.tp) if message.tp in active else None
            if highwater is not None and highwater >= 0 and message.offset > highwater:
                continue
            kept.append(event)
        return kept

    async def index_local_state(self, partitions: set[int]) -> int:
        """Once per process and partition: index the values a RocksDB store held before this
        worker started (recovery only replays what came after them). Reads the partition's
        values once, in chunks that let the event loop run. Returns the values read."""
        store = self.data
        todo = partitions - self._indexed
        if not isinstance(store, UsersStore):
            self._indexed |= todo
            return 0
        read = 0
        for partition in sorted(todo):
            self._indexed.add(partition)
            for key, value in store.partition_values(partition):
                try:
                    applied_at, waits = _index_fields(value)
                except (UnknownRecordVersion, ValueError):
                    continue
                self.index.note(key.decode(), partition, applied_at, waits, if_new=True)
                read += 1
                if read % SCAN_CHUNK == 0:
                    await asyncio.sleep(0)
        return read


def _index_fields(value: Any) -> tuple[float, bool]:
    if isinstance(value, UserRecord):
        return value.applied_at, bool(value.waiting_texts)
    return UserRecord.index_fields(value)


def users_table(app: faust.App, settings: Settings) -> UsersTable:
    """Declare the users table and its changelog (compacted, on the source partitions)."""
    changelog = app.topic(changelog_name(settings, "users"), key_type=str, value_type=None,
                          key_serializer="raw", value_serializer=RECORD_CODEC,
                          partitions=settings.partitions, internal=True, compacting=True,
                          deleting=False, acks=False, maxsize=131_072, allow_empty=True)
    options = {**ROCKSDB_OPTIONS,
               "block_cache_size": max(1 << 20, (settings.users_cache_mb << 20) // settings.partitions)}
    table = UsersTable(app, name="users", key_type=str, partitions=settings.partitions,
                       changelog_topic=changelog, beacon=app.tables.beacon, options=options,
                       help="User records (streams.worker.user_record)")
    return app.tables.add(table)  # type: ignore[return-value]
