"""The items agent: validates item messages once for the group and dead-letters poison.

Every worker's `CatalogFeed` reads the whole items topic itself and applies the valid items to
its own full catalog and vector store; this agent only guards the topic.
"""

from __future__ import annotations

from collections.abc import Sequence

import faust
from faust.types import EventT

from streams.contracts.schemas import ItemEvent
from streams.worker import metrics
from streams.worker.context import WorkerContext
from streams.worker.messages import batches, decode

ITEM_BATCH, ITEM_WITHIN_S = 64, 0.05    # a new item is searchable well within 1 s


class ItemEvents:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    async def process(self, stream: faust.StreamT) -> None:
        async for events in batches(stream, ITEM_BATCH, ITEM_WITHIN_S):
            await self.handle(events)

    async def handle(self, events: Sequence[EventT]) -> None:
        for ev in events:
            try:
                decode("items", ev.message)
            except Exception as exc:
                await self.ctx.dlq.send(ev.message, exc)
        metrics.EVENTS_PROCESSED.labels(topic="items").inc(len(events))

    def applied(self, items: list[ItemEvent]) -> None:
        """The catalog feed applied these items: event time moves on."""
        self.ctx.saw(max(item.ts for item in items))
