"""The worker's Kafka consumer: Faust's aiokafka consumer, except that a fetch in flight never
returns the records of partitions that are paused, and that a fetch waits a little for records
to batch (`XLREC_FETCH_WAIT_MS`).

Batching fetches: Faust asks aiokafka for fetches that return as soon as one byte is ready. At
200 events/s that is a fetch round trip for nearly every event, each one a request and a
response for every assigned partition encoded and decoded in Python on the consumer's thread,
which takes the GIL from the event loop and the engine: 0.21 of a core at 200 events/s, and
freshness p50 / p99 about 200 / 400-500 ms on the 2-core machine. A fetch that waits up to
25 ms for 64 KiB (it returns at once under a backlog) takes 0.07 of a core, and freshness fell
to 65-90 / 175-230 ms in the same benchmark (`xlrec bench pipeline --events 20000 --rates 200`).

Faust hands aiokafka's `Fetcher.fetched_records` its live set of active partitions, and the
fetch reads that set each time records arrive while it waits (up to a second). aiokafka takes
an empty set for "every partition". At the end of a table recovery the set does empty while a
fetch waits: the changelog partitions are paused once read, and the stream partitions are still
paused for their seek (`streams.worker.recovery`). That fetch then drains the fetched records of
every assigned partition, the paused stream partitions' too, and aiokafka's positions move past
them; Faust drops them (their partition is not active). When that happens after a partition
was sought (its records fetched again from the committed offset), nothing reads them again:
once the stream partitions are resumed, the next record looks like a jump and Faust's gap
handling counts the dropped ones as processed, so they are committed unread. This fits the
changelog-recovery fault test's failure (a restarted worker answered 8 of 20 requests, and
8 is exactly the requests of some whole partitions). Traced in workers restarted against a committed group, 3 in 23
times a fetch returned the paused request partitions' records between the start of the seek
and the resume, aiokafka's positions then past every request (there the seeks came after and
rewound them).

Here the fetch sees the live set through `ActivePartitions`, which follows it but never reads as
empty, so a fetch only returns partitions that are active while it runs, as Faust means it to.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import faust
from faust.transport import by_url
from faust.transport.drivers import aiokafka as aiokafka_driver


class ActivePartitions:
    """The consumer's active partitions as a fetch in flight sees them: membership follows the
    live set, and the view is never falsy, so an emptied set means "none", not "every one"."""

    __slots__ = ("_live",)

    def __init__(self, live: set[Any]) -> None:
        self._live = live

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self._live

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._live))

    def __repr__(self) -> str:
        return f"ActivePartitions({self._live!r})"


# Under a backlog a fetch has this much at once and returns; below it, it waits for the fetch wait.
FETCH_MIN_BYTES = 64 * 1024
FETCH_WAIT_MS = 25


class ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer batches fetches (see the module doc)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes a fixed fetch_max_wait_ms and no fetch_min_bytes; aiokafka reads both
        # when the consumer starts (aiokafka is pinned: tests/streams/test_worker_app.py checks it).
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_wait_ms", FETCH_WAIT_MS)
        return consumer


class Consumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer whose fetches see the active partitions as `ActivePartitions`
    and wait for records to batch (`ConsumerThread`)."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:
        if active_partitions is not None:
            # aiokafka only asks the view whether it is empty and whether it holds a partition
            return await super()._getmany(cast(set[Any], ActivePartitions(active_partitions)), timeout)
        return await super()._getmany(None, timeout)


class Transport(aiokafka_driver.Transport):
    """Faust's aiokafka transport with `Consumer`."""

    Consumer = Consumer


class XlrecApp(faust.App):
    """`faust.App` whose consumer is `Consumer` when the broker is Kafka (aiokafka)."""

    fetch_wait_ms: int = FETCH_WAIT_MS   # the longest a fetch waits for records to batch

    def _new_transport(self) -> Any:
        if by_url(self.conf.broker_consumer[0]) is aiokafka_driver.Transport:
            return Transport(self.conf.broker_consumer, self)
        return super()._new_transport()
