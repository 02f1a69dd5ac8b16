"""Shared fixtures. Integration tests get a real Kafka broker: the one named by XLREC_BOOTSTRAP,
or one that this session starts on a free port in a temporary folder and stops at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from streams.contracts.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`pytest.mark.anyio`) run on asyncio, the loop Faust and aiokafka use."""
    return "asyncio"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a running broker, shared by the whole test session."""
    if bootstrap := os.environ.get("XLREC_BOOTSTRAP"):
        yield bootstrap
        return
    from streams.ops import broker

    data_dir = tmp_path_factory.mktemp("kafka")
    try:
        yield broker.start(port=0, data_dir=data_dir).bootstrap
    finally:  # also after a failed start or failing tests: never leave a JVM behind
        broker.stop(data_dir)


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> Settings:
    """Settings for one test: the session's broker and a topic prefix no other test uses."""
    return Settings(bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")
