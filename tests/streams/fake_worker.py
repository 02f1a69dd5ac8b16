"""A whole worker (`streams.worker.wiring.Worker`) on Faust's `test_context()` for unit tests: no
broker, topic sends and changelog writes patched, and a `FakeEngine` that records what the
parts ask of it. Plus the messages the tests feed it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock, patch

import orjson
from faust.types.tuples import Message

from ranking.store import VectorStore
from streams.contracts.settings import Settings
from streams.worker.app import build_app
from streams.worker.engine_runner import EngineRunner
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine

NOW = time.time()


@contextmanager
def fake_worker(engine: FakeEngine, tmp_path: Path, *, store: VectorStore | None = None,
                snapshot_path: Path | None = None, own_all: bool = True, reroute: bool = False,
                **settings: Any) -> Iterator[Worker]:
    """A worker whose catalog is read (no catalog feed runs here: tests/streams/test_catalog_feed.py)
    and, with `own_all`, that owns every partition (as after an assignment of all of them);
    `store` is the vector store its runner probes (`FlakyStore` for outages). Tests put users on
    whatever partition they like: only with `reroute` are events on another partition than
    their user's (murmur2) forwarded (`worker.ctx.topics.repartition.publish_message` patched)."""
    config = Settings(**{"topic_prefix": "t.", "data_dir": tmp_path, **settings})
    app = build_app(config, web_enabled=False)
    runner = EngineRunner(engine, store)
    worker = Worker(app, config, runner, snapshot_path=snapshot_path)
    worker.feed.ready.set()
    app.finalize()
    if own_all:
        worker.ctx.owned = set(range(config.partitions))
    topics = worker.ctx.topics
    try:
        with patch.object(topics.dlq, "send", new=AsyncMock(side_effect=acked)), \
                patch.object(topics.recommendations, "send", new=AsyncMock()), \
                patch.object(worker.ctx.users, "send_changelog", new=MagicMock()), \
                patch.object(topics.repartition, "publish_message", new=AsyncMock(side_effect=published)):
            if not reroute:
                worker.user_events.misplaced = lambda user_id, partition: None  # type: ignore[method-assign]
            yield worker
    finally:
        runner.close()


async def acked(**kwargs: Any) -> Awaitable[None]:
    """A topic send whose message the broker acknowledged at once (the dlq awaits that)."""
    return asyncio.sleep(0)


async def published(future: Any, wait: bool = False) -> Awaitable[None]:
    """`Topic.publish_message` whose message the broker acknowledged at once."""
    return asyncio.sleep(0)


def sent(topic_send: Any) -> list[dict[str, Any]]:
    """The keyword arguments of every send to a patched topic."""
    return [call.kwargs for call in topic_send.await_args_list]


def recommendations(worker: Worker) -> list[dict[str, Any]]:
    """The Recommendation messages sent, as JSON."""
    return [orjson.loads(k["value"]) for k in sent(worker.ctx.topics.recommendations.send)]


def click(event_id: str, user: str = "u1", item: str = "i1", **extra: Any) -> dict[str, Any]:
    return {"type": "click", "event_id": event_id, "user_id": user, "item_id": item, "ts": NOW, **extra}


def review(event_id: str, user: str = "u1", item: str = "i1", text: str = "Sehr gut") -> dict[str, Any]:
    return {"type": "review", "event_id": event_id, "user_id": user, "item_id": item, "ts": NOW,
            "text": text, "lang": "de", "voted_up": True}


def consumed(topic: str, value: dict | bytes, key: str | None, offset: int, partition: int = 0) -> Any:
    """A Faust event as `take_events` yields it."""
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    message = Message(topic=topic, partition=partition, offset=offset, timestamp=time.time(),
                      timestamp_type=0, headers=[], key=key.encode() if key else None, value=raw,
                      checksum=b"")
    event = MagicMock()
    event.message = message
    return event


async def put(agent: Any, topic: str, value: dict | bytes, key: str | bytes | None, *,
              partition: int = 0, offset: int | None = None) -> None:
    """Deliver one message to an agent's test context as if consumed from `topic`
    (test_context names no topic itself)."""
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    raw_key = key.encode() if isinstance(key, str) else key
    if offset is not None:
        agent.sent_offset = offset
    with patch.object(agent, "_get_strtopic", return_value=topic):
        await agent.put(raw, key=raw_key, partition=partition)
