"""Quality measured in the running system: for every click and review, whether its item was in
the user's latest recommendation and at which rank (Prometheus counters, per slice).

Definitions (the README's "Watching quality" says the same):
- An event is measured against the latest recommendation this worker had sent the user when
  it applied the event: a list computed without that event (never one ranked after it). The
  list counts while the worker still holds it as the user's latest (`LatestRecommendations`):
  a list dropped by an erasure, a rebalance or its LRU bound is no list.
- An event is a hit@K when its item is among the first K items of that list (rank 1 = first);
  otherwise a miss. Events of users without a list are counted in `xlrec_online_no_list`,
  not as misses. HR@K = `xlrec_online_hits{k=K}` / `xlrec_online_events`, per slice.
- Slices: `all`; `cross_lingual` when the event's language differs from its item's main
  language just before the event (base languages: pt-BR = pt; events or items without a
  language are in neither); `non_english` when the event's language is set and not English.
  Offline, `ranking.evaluate` slices by the user's main language instead; the two agree in
  spirit, not event by event.

Per event: two dict lookups (the latest body, the list's ranks) and a few integer additions;
the counters are incremented once per batch and label.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from encoders.languages import base_language
from streams.worker import metrics

KS, SLICES = metrics.ONLINE_KS, metrics.ONLINE_SLICES
MAX_USERS = 200_000   # as many as the latest lists kept (streams.worker.web.MAX_LATEST)
NO_LIST = -1          # `ranks_before`: the user had no recommendation
MISS = 0              # `ranks_before`: the item was not in it


class Latest(Protocol):
    """Where the worker keeps each user's latest recommendation (web.LatestRecommendations)."""

    def get(self, user_id: str) -> bytes | None: ...


class OnlineQuality:
    """item -> rank of the latest list sent to each user, checked against the worker's latest."""

    def __init__(self, latest: Latest, max_users: int = MAX_USERS) -> None:
        self.latest = latest
        self.max_users = max_users
        self._lists: OrderedDict[str, tuple[bytes, dict[str, int]]] = OrderedDict()
        self._base: dict[str, str] = {}

    def sent(self, user_id: str, body: bytes, item_ids: Sequence[str]) -> None:
        """A recommendation was sent (`body` is what the worker now holds as the user's latest)."""
        ranks: dict[str, int] = {}
        for rank, item_id in enumerate(item_ids, 1):
            ranks.setdefault(item_id, rank)
        self._lists[user_id] = (body, ranks)
        self._lists.move_to_end(user_id)
        while len(self._lists) > self.max_users:
            self._lists.popitem(last=False)

    def forget(self, user_id: str) -> None:
        self._lists.pop(user_id, None)

    def ranks_before(self, events: Sequence[Any]) -> list[int]:
        """Each event's item rank (1-based) in its user's latest list, `MISS` when not in it,
        `NO_LIST` when the user has none: call before the events are applied."""
        out = []
        latest, lists = self.latest.get, self._lists
        for event in events:
            held = lists.get(event.user_id)
            if held is None or held[0] is not latest(event.user_id):
                out.append(NO_LIST)
            else:
                out.append(held[1].get(event.item_id, MISS))
        return out

    def count(self, events: Sequence[Any], ranks: Sequence[int], item_langs: Sequence[str | None],
              applied: Sequence[bool]) -> None:
        """Add the applied events to the counters (`item_langs`: each item's main language
        before its event, None when unknown or not asked)."""
        n = {s: [0, 0, 0, 0, 0] for s in SLICES}   # no list, events, hits@1, @5, @10
        base = self._base
        for event, rank, item_lang, ok in zip(events, ranks, item_langs, applied):
            if not ok:
                continue
            slices = [n["all"]]
            lang = event.lang
            if lang:
                mine = base.get(lang) or base.setdefault(lang, base_language(lang))
                if mine != "en":
                    slices.append(n["non_english"])
                if item_lang:
                    theirs = base.get(item_lang) or base.setdefault(item_lang, base_language(item_lang))
                    if theirs != mine:
                        slices.append(n["cross_lingual"])
            for row in slices:
                if rank == NO_LIST:
                    row[0] += 1
                    continue
                row[1] += 1
                if rank:
                    row[2] += rank <= 1
                    row[3] += rank <= 5
                    row[4] += rank <= 10
        for name, (no_list, measured, *hits) in n.items():
            if no_list:
                metrics.ONLINE_NO_LIST.labels(slice=name).inc(no_list)
            if measured:
                metrics.ONLINE_EVENTS.labels(slice=name).inc(measured)
            for k, h in zip(KS, hits):
                if h:
                    metrics.ONLINE_HITS.labels(slice=name, k=str(k)).inc(h)

