"""Right of access and erasure.

Access: `GET /users/{id}/profile` answers with what the worker holds about a user (`profile_view`):
the counts, languages and recent items of the profile, its vectors as stored (int8, base64), the
latest event ids, and how many review texts wait for the encoder.

Erasure: a `ForgetUser` message (`xlrec forget USER_ID`, `EventProducer.forget`) travels on the
user's event path (the `requests` topic, keyed by user_id, re-routed to the user's partition like
any user event) and the users agent applies it in order with the user's events (`Erasure.erase`):
the users-table record is deleted with a tombstone on its changelog partition (compaction removes
the user's earlier records from the topic), and the worker drops the user's latest recommendation,
impressions, queued requests, pending ranking, review texts waiting for the encoder and the
engine's per-user state. Afterwards `/users/{id}/profile` and `/users/{id}/recommendations` answer
404, until the user sends events again.

Ordering. The forget is applied after the user's events that the worker read before it. Events
of the user produced before the forget but read after it (they were on another topic or partition
the worker was behind on, or on their way through the repartition topic) are dropped rather than
applied to a new profile: for `FENCE_S` after an erasure the worker drops the user's events and
requests whose Kafka timestamp is not after the forget's (`Erasure.before`; a re-routed copy keeps
its original timestamp). Producer timestamps come from the producers' clocks: `EventProducer.forget`
flushes the producer's earlier events first, so their timestamps and offsets precede the forget's.
The fence is kept in memory only (a user id for at most `FENCE_S`): a worker that restarts in that
window applies late events of before the forget again, as it would without the fence.

What is not erased: the events themselves in the input topics (they age out with the topics'
retention), the item-level aggregates the user's events contributed to (trends, co-occurrence,
review-blended item vectors: no user can be read back from them), and the dead-letter topic.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any

from faust.types.tuples import Message

from ranking.profile import languages
from streams.worker import metrics
from streams.worker.context import WorkerContext
from streams.worker.feedback import ImpressionTracker
from streams.worker.online_quality import OnlineQuality
from streams.worker.review_text_lane import ReviewTextLane
from streams.worker.user_record import UserRecord
from streams.worker.web import LatestRecommendations


def profile_view(user_id: str, record: UserRecord) -> dict[str, Any]:
    """What xlrec holds about a user, as JSON (`GET /users/{id}/profile`)."""
    p: dict[str, Any] = dict(record.profile) if isinstance(record.profile, dict) else {}
    recent = [r[0] for r in p.get("recent", ()) if r]
    return {
        "user_id": user_id,
        "events": int(p.get("n", 0)),
        "clicks": int(p.get("n_click", 0)),
        "positive_reviews": int(p.get("n_pos", 0)),
        "negative_reviews": int(p.get("n_neg", 0)),
        "recent_items": recent[::-1],
        "languages": languages(p),
        "languages_read": dict(p.get("read", {})),
        "languages_written": dict(p.get("written", {})),
        "first_ts": p.get("first_ts"),
        "last_ts": p.get("last_ts"),
        "latest_event_ids": list(p.get("events", ())),
        "last_event_id": record.last_event_id,
        "updated_at": record.applied_at,
        "review_texts_waiting": len(record.waiting_texts),
        "interest_vector": p.get("interest"),
        "review_text_vector": p.get("own"),
    }


FENCE_S = 600.0          # how long events of before an erasure are dropped
MAX_FENCES = 100_000


class Erasure:
    """Erases a user from the users table and from everything the worker keeps in memory."""

    def __init__(self, ctx: WorkerContext, lane: ReviewTextLane, impressions: ImpressionTracker,
                 requests: deque[Any], latest: LatestRecommendations, quality: OnlineQuality) -> None:
        self.ctx = ctx
        self.lane = lane
        self.impressions = impressions
        self.requests = requests
        self.latest = latest
        self.quality = quality
        # user -> (the forget's Kafka timestamp, monotonic time the fence ends), oldest first
        self.fences: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def profile(self, user_id: str) -> dict[str, Any] | None:
        record = self.ctx.users.record(user_id)
        return None if record is None else profile_view(user_id, record)

    def before(self, user_id: str, message: Message) -> bool:
        """Whether this message of the user was produced before the user's erasure, and read
        after it (streams.worker.privacy, "Ordering"): it is then dropped."""
        fence = self.fences.get(user_id)
        if fence is None:
            return False
        if fence[1] < time.monotonic():
            del self.fences[user_id]
            return False
        stamp = message.timestamp
        dropped = stamp is not None and stamp <= fence[0]
        if dropped:
            metrics.EVENTS_BEFORE_ERASURE.inc()
        return dropped

    async def erase(self, user_id: str, partition: int, stamp: float | None = None) -> None:
        """Erase the user, asked for by a message of Kafka timestamp `stamp` (the caller then
        waits for the tombstone's acknowledgement)."""
        ctx = self.ctx
        now = time.monotonic()
        while self.fences and (len(self.fences) >= MAX_FENCES or next(iter(self.fences.values()))[1] < now):
            self.fences.popitem(last=False)
        if stamp is not None:
            self.fences[user_id] = (stamp, now + FENCE_S)
            self.fences.move_to_end(user_id)
        ctx.users.erase(user_id, partition)
        ctx.note_erased(user_id)
        ctx.scheduler.forget(user_id)
        self.latest.forget(user_id)
        self.quality.forget(user_id)
        self.impressions.forget(user_id)
        self.lane.forget(user_id)
        kept = [r for r in self.requests if r[0].user_id != user_id]
        self.requests.clear()
        self.requests.extend(kept)
        await ctx.runner.forget_user(user_id)
        metrics.USERS_FORGOTTEN.inc()
