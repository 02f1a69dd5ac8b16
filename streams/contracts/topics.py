"""Create xlrec's topics idempotently with the configured partitions and replication."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.contracts.settings import TOPIC_NAMES, Settings

ADMIN_TIMEOUT_S = 10.0
# The broker check's own librdkafka log: its retries would print a line every 300 ms when the
# application logs at warning level; `check_broker` reports the outcome in one line instead.
_CHECK_LOG = logging.getLogger("xlrec.kafka.check")
_CHECK_LOG.addHandler(logging.NullHandler())
_CHECK_LOG.propagate = False


class BrokerUnavailable(RuntimeError):
    """The Kafka bootstrap servers did not answer in time."""


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({**settings.connection().librdkafka(), "socket.connection.setup.timeout.ms": 5000})


def check_broker(settings: Settings, timeout_s: float = 5.0) -> None:
    """Fail within `timeout_s` with a clear message when no broker answers, or when it
    refuses the SASL credentials (named by user, never by password)."""
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**settings.connection().librdkafka(), "socket.connection.setup.timeout.ms": 5000,
                            "error_cb": errors.append, "logger": _CHECK_LOG}
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0.1)  # serves error_cb, which tells a refused login from a silent broker
        refused = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        if refused:
            raise BrokerUnavailable(
                f"Kafka at {settings.bootstrap} refused the credentials of user "
                f"{settings.sasl_username!r} ({settings.sasl_mechanism}); check XLREC_SASL_USERNAME "
                f"and XLREC_SASL_PASSWORD: {refused[0].str()}") from None
        raise BrokerUnavailable(
            f"no Kafka broker answers at {settings.bootstrap} within {timeout_s:.0f}s "
            f"(start one with `xlrec kafka start` or set XLREC_BOOTSTRAP): {exc.args[0].str()}"
        ) from None


def create_topics(settings: Settings, internal: Sequence[str] = ()) -> dict[str, str]:
    """Create every xlrec topic, and the `internal` topics named (the worker's repartition
    topic), with the same partitions; returns topic -> 'created' | 'exists'."""
    check_broker(settings)
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    wanted = [settings.topic(name) for name in TOPIC_NAMES] + list(internal)
    result = {topic: "exists" for topic in wanted if topic in existing}
    new = [NewTopic(topic, num_partitions=settings.partitions, replication_factor=settings.replication,
                    config=_topic_config(topic, settings))
           for topic in wanted if topic not in existing]
    if new:
        for topic, future in admin.create_topics(new, operation_timeout=ADMIN_TIMEOUT_S).items():
            try:
                future.result()
                result[topic] = "created"
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
                result[topic] = "exists"
    return result


def _topic_config(topic: str, settings: Settings) -> dict[str, str]:
    # Dead letters keep the original bytes of poison messages, which may be large.
    if topic == settings.topic("dlq"):
        return {"max.message.bytes": str(16 * 1024 * 1024)}
    return {}
