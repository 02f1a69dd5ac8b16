"""Consumer lag of xlrec's consumer groups, read from Kafka's admin API (groups, log ends) and
a non-joining consumer per group (its committed offsets).

Lag is computed exactly as Kafka's own `kafka-consumer-groups.sh` does it: for every
partition a group has a committed offset on, `lag = log-end offset - committed offset`, with
the log end read by `list_offsets(OffsetSpec.latest())` (read-uncommitted high watermark).
Partitions without a committed offset are not shown: their lag is undefined until the group
commits (Kafka's tool prints "-" for them). A selected group that has committed nothing at all is
listed in `LagReport.uncommitted`, so `xlrec lag --max-lag` does not mistake it for "no lag".

Which groups are "xlrec's" when none is named: the worker's group (`settings.group_id`) and
every group whose id starts with it, plus every group with committed offsets on a topic
named with `settings.topic_prefix` (apps reading `xlrec.recommendations`, replays, tests).
The throw-away groups of `xlrec tail` are left out: nobody resumes them, so their lag only
grows and would trip `--max-lag` alerts.

Rates come from successive samples of one `LagMonitor`: `rate_per_s` is how fast the group's
committed offset advances (messages consumed per second) and `eta_s` divides the lag by how
fast the lag shrinks (consumption minus production); it is None while the lag does not shrink.
"""

from __future__ import annotations

import difflib
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from streams.contracts.settings import Settings
from streams.contracts.topics import BrokerUnavailable, admin_client, check_broker

# streams.sdk.consumer names its throw-away tailing groups like this.
EPHEMERAL_GROUP_PREFIX = "xlrec-tail-"
REQUEST_TIMEOUT_S = 10.0
# A broker that just started (or moved a group's coordinator) answers these for a few seconds.
COORDINATOR_STARTING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                        KafkaError.COORDINATOR_LOAD_IN_PROGRESS}
COORDINATOR_RETRIES = 10


class UnknownGroup(LookupError):
    """A group named on the command line does not exist on the cluster."""


@dataclass(frozen=True)
class PartitionLag:
    """One group's position on one partition: the row of `xlrec lag --json`."""

    group: str
    topic: str
    partition: int
    committed: int
    end_offset: int
    lag: int
    rate_per_s: float | None
    eta_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LagTotal:
    """Lag summed over a group's partitions of one topic, or of all its topics (topic None)."""

    group: str
    topic: str | None
    partitions: int
    lag: int
    rate_per_s: float | None
    eta_s: float | None


@dataclass(frozen=True)
class LagReport:
    """Every selected group's lag at one moment (`at` is Unix time); `uncommitted`: the selected
    groups without a single committed offset (their lag is unknown, not zero)."""

    at: float
    rows: list[PartitionLag]
    uncommitted: list[str] = field(default_factory=list)

    @property
    def max_lag(self) -> int:
        return max((row.lag for row in self.rows), default=0)

    def totals(self) -> list[LagTotal]:
        """Per group and topic, then per group; a group catches up when its slowest partition does."""
        by_key: dict[tuple[str, str | None], list[PartitionLag]] = {}
        for row in self.rows:
            by_key.setdefault((row.group, row.topic), []).append(row)
            by_key.setdefault((row.group, None), []).append(row)
        return [_total(group, topic, rows) for (group, topic), rows in sorted(
            by_key.items(), key=lambda item: (item[0][0], item[0][1] is None, item[0][1] or ""))]


def _total(group: str, topic: str | None, rows: list[PartitionLag]) -> LagTotal:
    rates = [row.rate_per_s for row in rows if row.rate_per_s is not None]
    etas = [row.eta_s for row in rows if row.lag > 0]
    eta = 0.0 if not etas else (None if None in etas else max(e for e in etas if e is not None))
    return LagTotal(group=group, topic=topic, partitions=len(rows), lag=sum(row.lag for row in rows),
                    rate_per_s=sum(rates) if rates else None, eta_s=eta)


def is_xlrec_group(group_id: str, topics: Iterable[str], settings: Settings) -> bool:
    """The default selection described in the module docstring."""
    if group_id.startswith(EPHEMERAL_GROUP_PREFIX):
        return False
    return group_id.startswith(settings.group_id) or any(
        topic.startswith(settings.topic_prefix) for topic in topics)


@dataclass
class _Sample:
    t: float
    committed: int
    lag: int


class LagMonitor:
    """Samples lag repeatedly; keeps `window_s` of history per partition for rates and ETAs."""

    def __init__(self, settings: Settings, group: str | None = None, *, window_s: float = 30.0):
        self.settings = settings
        self.group = group
        self.window_s = window_s
        self._admin = admin_client(settings)
        self._history: dict[tuple[str, str, int], deque[_Sample]] = {}

    def sample(self) -> LagReport:
        """Read committed and end offsets now. Raises BrokerUnavailable or UnknownGroup."""
        for attempt in range(COORDINATOR_RETRIES + 1):
            try:
                selected, committed = self._committed_offsets()
                ends = self._end_offsets({(topic, partition) for _, topic, partition in committed})
                break
            except KafkaException as exc:
                error = exc.args[0]
                if attempt == COORDINATOR_RETRIES or not (error.retriable() or error.code() in COORDINATOR_STARTING):
                    raise BrokerUnavailable(f"Kafka at {self.settings.bootstrap} did not answer: "
                                            f"{error.str()}") from None
                time.sleep(0.5)
        now, at = time.monotonic(), time.time()
        rows = []
        for (group, topic, partition), offset in sorted(committed.items()):
            end = ends.get((topic, partition))
            if end is None:  # topic deleted since the group committed
                continue
            rows.append(self._row(group, topic, partition, offset, end, now))
        self._history = {key: samples for key, samples in self._history.items()
                         if key in committed}
        shown = {row.group for row in rows}
        return LagReport(at=at, rows=rows, uncommitted=[group for group in selected if group not in shown])

    def _row(self, group: str, topic: str, partition: int, committed: int, end: int,
             now: float) -> PartitionLag:
        lag = end - committed
        history = self._history.setdefault((group, topic, partition), deque())
        # Keep the newest sample that is at least window_s old as the window's start.
        while len(history) > 1 and now - history[1].t >= self.window_s:
            history.popleft()
        rate = eta = None
        if history and now - history[0].t > 1e-3:
            first = history[0]
            elapsed = now - first.t
            rate = max(committed - first.committed, 0) / elapsed
            shrink = (first.lag - lag) / elapsed
            eta = lag / shrink if shrink > 0 else None
        if lag <= 0:
            eta = 0.0
        history.append(_Sample(now, committed, lag))
        return PartitionLag(group=group, topic=topic, partition=partition, committed=committed,
                            end_offset=end, lag=lag,
                            rate_per_s=None if rate is None else round(rate, 3),
                            eta_s=None if eta is None else round(eta, 3))

    def _groups(self) -> list[str]:
        result = self._admin.list_consumer_groups(request_timeout=REQUEST_TIMEOUT_S).result()
        known = sorted(listing.group_id for listing in result.valid)
        if self.group is None:
            return known
        if self.group not in known:
            close = difflib.get_close_matches(self.group, known, n=3)
            hint = (f"did you mean {', '.join(map(repr, close))}?" if close else
                    f"{len(known)} groups exist; `xlrec lag` without --group lists xlrec's")
            raise UnknownGroup(f"unknown consumer group {self.group!r} on {self.settings.bootstrap} ({hint})")
        return [self.group]

    def _committed_offsets(self) -> tuple[list[str], dict[tuple[str, str, int], int]]:
        """The selected groups (sorted) and their committed offsets."""
        groups = self._groups()
        metadata = self._admin.list_topics(timeout=REQUEST_TIMEOUT_S)
        partitions = [TopicPartition(name, p) for name, topic in sorted(metadata.topics.items())
                      if not name.startswith("__") for p in topic.partitions]
        offsets: dict[tuple[str, str, int], int] = {}
        selected = []
        for group in sorted(groups):
            found = self._group_committed(group, partitions)
            if self.group is None and not is_xlrec_group(group, {topic for topic, _ in found}, self.settings):
                continue
            selected.append(group)
            for (topic, partition), offset in found.items():
                offsets[(group, topic, partition)] = offset
        return selected, offsets

    def _group_committed(self, group: str, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """A group's committed offsets, asked by a consumer of the group that never subscribes
        (so it never joins the group), not by AdminClient.list_consumer_group_offsets: an
        admin client has no group handle, and librdkafka crashes the process (SIGSEGV in
        rd_kafka_cgrp_op, librdkafka issue #5040) when the answer says "not coordinator", as a
        fresh broker or a moving coordinator does; every worker samples its lag this way."""
        if not partitions:
            return {}
        probe = Consumer({**self.settings.connection().librdkafka(), "group.id": group,
                          "enable.auto.commit": False, "socket.connection.setup.timeout.ms": 5000})
        try:
            found = probe.committed(partitions, timeout=REQUEST_TIMEOUT_S)
        finally:
            probe.close()
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.error is None and tp.offset >= 0}

    def _end_offsets(self, partitions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        futures = self._admin.list_offsets(
            {TopicPartition(topic, partition): OffsetSpec.latest() for topic, partition in partitions},
            request_timeout=REQUEST_TIMEOUT_S)
        ends = {}
        for tp, future in futures.items():
            try:
                ends[(tp.topic, tp.partition)] = future.result().offset
            except KafkaException as exc:
                if exc.args[0].name() not in ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_PARTITION",
                                              "_UNKNOWN_TOPIC"):
                    raise
        return ends


def open_monitor(settings: Settings, group: str | None = None, *, window_s: float = 30.0) -> LagMonitor:
    """A monitor on a broker known to answer: fails fast (BrokerUnavailable) instead of hanging."""
    check_broker(settings)
    return LagMonitor(settings, group, window_s=window_s)
