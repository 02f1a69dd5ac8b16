"""The Faust app of the xlrec worker, built from `Settings`.

aiokafka transport (`kafka://`): Faust's `confluent://` transport is experimental. Input topics
carry raw bytes (`value_serializer="raw"`) so that the agents decode and validate every
message themselves and can dead-letter the ones that fail, instead of Faust crashing or
silently skipping them in its own deserialiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.contracts.settings import Settings
from streams.worker.fetch import XlrecApp
from streams.worker.recovery import XlrecTableManager
from streams.worker.web import require_token

# Faust's default commit interval (2.8 s) is what a crash may replay; the users table is
# idempotent by Kafka offset and event_id, so replays are harmless, only wasted work.
COMMIT_INTERVAL_S = 1.0
# The producer's request limit; dead letters, once the largest records written, are now cut to
# 900 KiB (streams.worker.dlq) so that they fit a dlq topic at the broker's default size too.
MAX_REQUEST_BYTES = 16 * 1024 * 1024 + 64 * 1024


@dataclass(frozen=True)
class Topics:
    """The worker's Faust topics, all with raw bytes keys and values."""

    items: faust.TopicT
    clicks: faust.TopicT
    reviews: faust.TopicT
    requests: faust.TopicT
    recommendations: faust.TopicT
    dlq: faust.TopicT
    repartition: faust.TopicT
    """Internal: user events forwarded to their user's partition (streams.worker.reroute)."""


def build_app(settings: Settings, **overrides: Any) -> faust.App:
    """A Faust app for these settings; `overrides` reach `faust.App` (tests)."""
    connection = settings.connection()
    token = settings.web_token.get_secret_value() if settings.web_token else ""
    conf: dict[str, Any] = dict(
        broker=connection.faust_broker_urls(),
        broker_credentials=connection.faust_credentials(),
        broker_commit_interval=COMMIT_INTERVAL_S,
        store=f"{settings.users_store}://",
        table_standby_replicas=settings.standby_replicas,
        datadir=str(settings.data_dir / "faust"),   # per worker: the RocksDB tables live here
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=MAX_REQUEST_BYTES,
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        # What the partition assignor tells the other workers (streams.worker.owners): Faust's
        # default, http://<host name>:<port>, is not reached where the server binds 127.0.0.1.
        canonical_url=settings.advertised_web_url(),
        # Faust's own views publish table values (/table/users/<id>/), the cluster's URLs
        # (/router/) and internals without a login; the worker serves only streams.worker.web.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        web_application_options={"middlewares": [require_token(token)]} if token else {},
        web_in_thread=False,
        autodiscover=False,
        stream_recovery_delay=0.0,
        table_cleanup_interval=60.0,
        TableManager=XlrecTableManager,
    )
    conf.update(overrides)
    app = XlrecApp(settings.group_id, **conf)
    app.fetch_wait_ms = settings.fetch_wait_ms
    return app


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Faust handles of the topics `streams.contracts.topics.create_topics` made (same names, prefix)."""

    def topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions)

    return Topics(items=topic("items"), clicks=topic("clicks"), reviews=topic("reviews"),
                  requests=topic("requests"), recommendations=topic("recommendations"),
                  dlq=topic("dlq"),
                  repartition=app.topic(repartition_name(settings), key_type=bytes, value_type=bytes,
                                        key_serializer="raw", value_serializer="raw",
                                        partitions=settings.partitions, internal=True))


def changelog_name(settings: Settings, table: str) -> str:
    """Table changelog topics share the topic prefix, so deployments on one broker stay apart."""
    return f"{settings.topic_prefix}{settings.group_id}-{table}-changelog"


def repartition_name(settings: Settings) -> str:
    """The internal topic that user events on the wrong partition are forwarded through (one
    per consumer group, like a Kafka Streams repartition topic; streams.worker.reroute)."""
    return f"{settings.topic_prefix}{settings.group_id}-users-repartition"
