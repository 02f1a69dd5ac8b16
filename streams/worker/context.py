"""The parts of one worker that its agents, tasks and timers share.

Every part (`user_events`, `ranking_loop`, `review_text_lane`, `feedback`, `rebalance`,
`maintenance`) takes this context instead of a dozen arguments, so the wiring stays short and
each part names what it owns.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import faust

from ranking.engine import Profile
from streams.contracts.settings import Settings
from streams.worker.app import Topics, repartition_name
from streams.worker.dlq import DeadLetterQueue
from streams.worker.engine_runner import EngineRunner
from streams.worker.rank_scheduler import RankScheduler
from streams.worker.users_table import UsersTable, guess_partition

USER_KINDS = ("clicks", "reviews")
MAX_ERASED = 10_000   # erasures remembered for rankings in flight (far more than one batch holds)


@dataclass
class WorkerContext:
    app: faust.App
    settings: Settings
    runner: EngineRunner
    topics: Topics
    dlq: DeadLetterQueue
    users: UsersTable
    scheduler: RankScheduler
    snapshot_path: Path | None = None
    event_time: float = 0.0
    """Newest event time seen: the engine's "now", so replays of old data rank as of then."""
    owned: set[int] = field(default_factory=set)
    """User partitions this worker holds, with their table recovered."""
    profiles_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One read-modify-write of the users table at a time (user events, review texts)."""
    ranking_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    erasures: int = 0
    """Users erased so far (`note_erased`): a ranking computed before one is not sent."""
    erased: OrderedDict[str, int] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.kinds = {self.settings.topic(k): k for k in ("items", "clicks", "reviews", "requests")}
        self.repartition_topic = repartition_name(self.settings)
        self.user_topics = {self.settings.topic(k) for k in USER_KINDS} | {self.repartition_topic}

    def now(self) -> float:
        return self.event_time or time.time()

    def saw(self, ts: float) -> None:
        """Move event time forward to an event's timestamp."""
        if ts > self.event_time:
            self.event_time = ts

    def note_erased(self, user_id: str) -> None:
        self.erasures += 1
        self.erased[user_id] = self.erasures
        self.erased.move_to_end(user_id)
        while len(self.erased) > MAX_ERASED:
            self.erased.popitem(last=False)

    def erased_since(self, user_id: str, erasures: int) -> bool:
        """Whether the user was erased after `erasures` erasures had been made."""
        return self.erased.get(user_id, 0) > erasures

    def wake_ranking(self) -> None:
        self.ranking_wanted.set()

    def profile_of(self, user_id: str) -> Profile | None:
        record = self.users.record(user_id)
        return record.profile if record else None

    def owns(self, user_id: str) -> bool:
        """Whether this worker still holds the user's partition: after a rebalance the old
        owner must not send a ranking that lands after the new owner's fresher one."""
        partition = self.users.partition_of(user_id)
        return partition is None or partition in self.owned

    def home_partition(self, user_id: str) -> int:
        """The partition of the user's profile: where the SDK sends the user's events (murmur2);
        events that arrive elsewhere are re-routed there (streams.worker.reroute)."""
        return guess_partition(user_id, self.settings.partitions)

    def user_partitions(self, tps: set[faust.types.TP]) -> set[int]:
        """The partitions of the user-event topics among these topic-partitions."""
        return {tp.partition for tp in tps if tp.topic in self.user_topics}
