"""The Faust app of the xlrec worker, built from `Settings`.

aiokafka transport (`kafka://`): Faust's `confluent://` transport is experimental. Input topics
carry raw bytes (`value_serializer="raw"`) so that the agents decode and validate every
message themselves and can dead-letter the ones that fail, instead of Faust crashing or
silently skipping them in its own deserialiser.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.serializers import codecs

from streams.worker.recovery import XlrecTableManager
from streams.contracts.settings import Settings

# Faust's default commit interval (2.8 s) is what a crash may replay; the users table is
# idempotent by Kafka offset and event_id, so replays are harmless, only wasted work.
COMMIT_INTERVAL_S = 1.0
# The dlq topic accepts the original bytes of poison messages up to 16 MiB (streams.contracts.topics).
MAX_REQUEST_BYTES = 16 * 1024 * 1024 + 64 * 1024


class OrjsonCodec(codecs.Codec):
    """Plain JSON for table values: fast, and readable by anything that reads the changelog."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)

    def _loads(self, data: bytes) -> Any:
        return orjson.loads(data)


codecs.register("orjson", OrjsonCodec())


def broker_urls(settings: Settings) -> list[str]:
    """`host1:9092,host2:9092` -> Faust's `kafka://` URLs (aiokafka transport)."""
    return [f"kafka://{host.strip()}" for host in settings.bootstrap.split(",") if host.strip()]


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS context from the same files the confluent clients use."""
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None)


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The aiokafka equivalent of `Settings.kafka_config()` security: SASL and/or TLS."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=settings.sasl_username or "",
        password=settings.sasl_password.get_secret_value() if settings.sasl_password else "",
        mechanism=settings.sasl_mechanism or "PLAIN", ssl_context=context)


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """The same security as `broker_credentials`, as keyword arguments of aiokafka's own
    clients (the worker's catalog feed)."""
    protocol = settings.security_protocol
    conf: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        conf["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL"):
        conf.update(sasl_mechanism=settings.sasl_mechanism or "PLAIN",
                    sasl_plain_username=settings.sasl_username or "",
                    sasl_plain_password=settings.sasl_password.get_secret_value() if settings.sasl_password else "")
    return conf


@dataclass(frozen=True)
class Topics:
    """The worker's Faust topics, all with raw bytes keys and values."""

    items: faust.TopicT
    clicks: faust.TopicT
    reviews: faust.TopicT
    requests: faust.TopicT
    recommendations: faust.TopicT
    dlq: faust.TopicT


def build_app(settings: Settings, **overrides: Any) -> faust.App:
    """A Faust app for these settings; `overrides` reach `faust.App` (tests)."""
    conf: dict[str, Any] = dict(
        broker=broker_urls(settings),
        broker_credentials=broker_credentials(settings),
        broker_commit_interval=COMMIT_INTERVAL_S,
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=MAX_REQUEST_BYTES,
        producer_acks=-1,
        web_enabled=True,
        web_bind="0.0.0.0",
        web_port=settings.web_port,
        web_in_thread=False,
        autodiscover=False,
        stream_recovery_delay=0.0,
        table_cleanup_interval=60.0,
        TableManager=XlrecTableManager,
    )
    conf.update(overrides)
    return faust.App(settings.group_id, **conf)


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Faust handles of the topics `streams.contracts.topics.create_topics` made (same names, prefix)."""

    def topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw",
                         partitions=settings.partitions)

    return Topics(items=topic("items"), clicks=topic("clicks"), reviews=topic("reviews"),
                  requests=topic("requests"), recommendations=topic("recommendations"),
                  dlq=topic("dlq"))


def changelog_name(settings: Settings, table: str) -> str:
    """Table changelog topics share the topic prefix, so deployments on one broker stay apart."""
    return f"{settings.topic_prefix}{settings.group_id}-{table}-changelog"
