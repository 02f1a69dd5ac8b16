"""Prometheus metrics of the xlrec worker, in one registry that `/metrics` renders.

The pipeline imports the metric objects from here so that names, labels and buckets are
defined once, and the dashboard, Grafana and tests all rely on the same names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

# A registry of our own (not prometheus_client's global one) so that importing a library
# that registers metrics globally cannot add or clash with names on the worker's /metrics.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Latency buckets: encoding a batch takes milliseconds to seconds on CPU, ranking one user
# a few milliseconds, and an event reaches its recommendation within well under a minute.
ENCODER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RANKING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
END_TO_END_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

EVENTS_PROCESSED = Counter(
    "xlrec_events_processed", "Input events processed by the worker, per topic.",
    ["topic"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "xlrec_dead_letters", "Events sent to the dead-letter topic, per reason "
    "(e.g. invalid_json, schema, encoder_error, ranking_error).",
    ["reason"], registry=REGISTRY)
EVENTS_UNKNOWN_ITEM = Counter(
    "xlrec_events_unknown_item", "Clicks and reviews on items no item event named (or deleted): "
    "applied to the profile and the item's counts, not recommended until an item event names the item.",
    registry=REGISTRY)
EVENTS_REROUTED = Counter(
    "xlrec_events_rerouted", "User events that arrived on another partition than their user's "
    "(a producer that does not partition by murmur2 of the user_id, e.g. librdkafka's default "
    "crc32) and were forwarded to it through the repartition topic, per input topic.",
    ["topic"], registry=REGISTRY)
USERS_FORGOTTEN = Counter(
    "xlrec_users_forgotten", "Users erased on request (xlrec forget, EventProducer.forget).",
    registry=REGISTRY)
EVENTS_BEFORE_ERASURE = Counter(
    "xlrec_events_before_erasure", "User events and requests dropped because they were produced "
    "before their user's erasure and read after it (streams.worker.privacy).", registry=REGISTRY)
PROFILE_UPDATES = Counter(
    "xlrec_profile_updates", "Click and review events applied to user profiles.", registry=REGISTRY)
RANKER_LEARNING_SKIPPED = Counter(
    "xlrec_ranker_learning_skipped", "User events applied to profiles that the ranker did not "
    "learn from, because the worker had a backlog (streams.worker.engine_runner.LEARN_PER_BATCH).",
    registry=REGISTRY)
RECOMMENDATIONS_REFRESHED = Counter(
    "xlrec_recommendations_refreshed", "Recommendations (counted in xlrec_recommendations too) "
    "re-ranked only because a review's text was folded into the user's profile.", registry=REGISTRY)
RECOMMENDATIONS_ON_READ = Counter(
    "xlrec_recommendations_on_read", "Recommendations (counted in xlrec_recommendations too) "
    "ranked because GET /users/{id}/recommendations asked for a user held here with no latest "
    "list in memory, e.g. after a restart (streams.worker.web).",
    registry=REGISTRY)
RANKINGS_PENDING = Gauge(
    "xlrec_rankings_pending", "Users who wait for their coalesced ranking after an event.",
    registry=REGISTRY)
REVIEW_TEXTS_EMBEDDED = Counter(
    "xlrec_review_texts_embedded", "Review texts embedded and folded into items and profiles.",
    registry=REGISTRY)
REVIEW_TEXTS_SKIPPED = Counter(
    "xlrec_review_texts_skipped", "Review texts dropped from this worker's queue: the backlog was "
    "full, or their partition moved to another worker first (which reads them again).",
    registry=REGISTRY)
REVIEW_TEXTS_READ_AGAIN = Counter(
    "xlrec_review_texts_read_again", "Waiting review texts read again from Kafka after a restart "
    "or a rebalance (their offsets were in the users table).", registry=REGISTRY)
REVIEW_TEXT_BACKLOG = Gauge(
    "xlrec_review_text_backlog", "Review texts applied to profiles and waiting for the encoder.",
    registry=REGISTRY)
REVIEW_TEXT_OLDEST_WAIT = Gauge(
    "xlrec_review_text_oldest_wait_seconds", "How long the oldest review text in the queue has "
    "waited for the encoder since it was queued (0 when none waits): the text lane's own lag.",
    registry=REGISTRY)
ENCODER_BATCH_SECONDS = Histogram(
    "xlrec_encoder_batch_seconds", "Wall time of one encoder batch (tokenise + inference).",
    buckets=ENCODER_BUCKETS, registry=REGISTRY)
ENCODER_BATCH_SIZE = Histogram(
    "xlrec_encoder_batch_size", "Texts per encoder batch.",
    buckets=BATCH_SIZE_BUCKETS, registry=REGISTRY)
ITEM_UPSERTS = Counter(
    "xlrec_item_upserts", "Item vectors written to the vector store.", registry=REGISTRY)
RANKING_SECONDS = Histogram(
    "xlrec_ranking_seconds", "Time to rank one user's recommendations.",
    buckets=RANKING_BUCKETS, registry=REGISTRY)
SNAPSHOT_PIECE_SECONDS = Histogram(
    "xlrec_snapshot_piece_seconds", "Engine-thread time to take one piece of the engine snapshot "
    "(what a snapshot holds the engine for at a time).", buckets=RANKING_BUCKETS, registry=REGISTRY)
SNAPSHOT_SECONDS = Gauge(
    "xlrec_snapshot_seconds", "Wall time of the last engine snapshot, all pieces written.",
    registry=REGISTRY)
RECOMMENDATIONS = Counter(
    "xlrec_recommendations", "Recommendation messages written to the output topic.",
    registry=REGISTRY)
EVENT_TO_RECOMMENDATION_SECONDS = Histogram(
    "xlrec_event_to_recommendation_seconds",
    "From an input event's timestamp to the recommendation it triggered being produced.",
    buckets=END_TO_END_BUCKETS, registry=REGISTRY)
ONLINE_SLICES = ("all", "cross_lingual", "non_english")
ONLINE_KS = (1, 5, 10)
_ONLINE_SLICE_HELP = ("slice: all; cross_lingual (the event's language differs from its item's main "
                      "language); non_english (the event's language is set and not English).")
ONLINE_EVENTS = Counter(
    "xlrec_online_events", "Clicks and reviews applied while their user had a latest recommendation "
    "from this worker, sent before the event (the denominator of online HR@K). " + _ONLINE_SLICE_HELP,
    ["slice"], registry=REGISTRY)
ONLINE_HITS = Counter(
    "xlrec_online_hits", "Of xlrec_online_events, those whose item was among the first k items of "
    "that latest recommendation: HR@k = xlrec_online_hits{k} / xlrec_online_events. " + _ONLINE_SLICE_HELP,
    ["slice", "k"], registry=REGISTRY)
ONLINE_NO_LIST = Counter(
    "xlrec_online_no_list", "Clicks and reviews applied while their user had no recommendation from "
    "this worker yet (not counted as misses). " + _ONLINE_SLICE_HELP, ["slice"], registry=REGISTRY)
for _slice in ONLINE_SLICES:   # every series exists at 0, so ratios and rates do from the start
    ONLINE_EVENTS.labels(slice=_slice)
    ONLINE_NO_LIST.labels(slice=_slice)
    for _k in ONLINE_KS:
        ONLINE_HITS.labels(slice=_slice, k=str(_k))
USERS = Gauge(
    "xlrec_users", "Users in this worker's profile table (its assigned partitions).",
    registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "xlrec_consumer_lag", "Messages between the group's committed offset and the log end.",
    ["group", "topic", "partition"], registry=REGISTRY)
CONSUMER_LAG_UPDATED = Gauge(
    "xlrec_consumer_lag_last_update_timestamp_seconds",
    "Unix time at which xlrec_consumer_lag was last refreshed from Kafka.", registry=REGISTRY)


class LagLike(Protocol):
    """What `record_consumer_lag` needs from a lag row (streams.ops.lag.PartitionLag fits)."""

    group: str
    topic: str
    partition: int
    lag: int


def record_consumer_lag(rows: Iterable[LagLike], now: float) -> None:
    """Replace every xlrec_consumer_lag sample with `rows`.

    Partitions that disappeared (group deleted, reassigned topic) are dropped instead of
    staying frozen at their last value.
    """
    CONSUMER_LAG.clear()
    for row in rows:
        CONSUMER_LAG.labels(group=row.group, topic=row.topic, partition=str(row.partition)).set(row.lag)
    CONSUMER_LAG_UPDATED.set(now)


def render(accept: str | None = None, registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The exposition body and its Content-Type for a `/metrics` handler.

    Pass the request's Accept header: Prometheus may ask for OpenMetrics; without one the
    classic text format 0.0.4 is returned, which every Prometheus version parses.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
