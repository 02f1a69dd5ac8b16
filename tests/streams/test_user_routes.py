"""Regression (issue 16, point 6): `GET /users/{id}/recommendations` and `/profile` answered only on
the worker that owned the user's partition (404 elsewhere), the old owner kept serving its stale
list after a rebalance moved the partition away, and after a restart the recommendations route
answered 404 until the user's next event. Now any worker answers: the holder of the user's
partition itself, another by forwarding to the holder that Faust's assignor names (same bearer
token, one hop, 503 with a JSON error when nobody holds it or the holder does not answer); a
revoked partition's lists are dropped; and a holder with no list in memory ranks the user from
the users table. Two fake workers serve real aiohttp test servers; no broker."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from faust.types import TP

from streams.contracts.settings import Settings
from streams.ops.broker import free_port
from streams.worker import web
from streams.worker.app import build_app
from streams.worker.owners import Owners
from streams.worker.users_table import guess_partition
from streams.worker.wiring import Worker
from tests.streams.fake_engine import FakeEngine, catalog
from tests.streams.fake_worker import click, consumed, fake_worker, recommendations

pytestmark = pytest.mark.anyio

PARTITIONS = 4
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = time.time()


def home(user: str) -> int:
    return guess_partition(user, PARTITIONS)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    """Two workers of one deployment, each with its own web port; neither holds a partition yet."""
    with contextlib.ExitStack() as stack:
        pair = tuple(stack.enter_context(fake_worker(FakeEngine(items=catalog(5)), tmp_path / name, reroute=True,
                                                     own_all=False, partitions=PARTITIONS, rank_interval_s=0.0,
                                                     top_k=3, web_port=free_port(), web_token=TOKEN))
                     for name in ("a", "b"))
        yield pair  # type: ignore[misc]


def url(worker: Worker) -> str:
    return f"http://127.0.0.1:{worker.ctx.settings.web_port}"


def assign(workers: tuple[Worker, ...], holders: dict[int, Worker | str]) -> None:
    """What the last assignment told every worker: partition -> the worker (or URL) holding it;
    a worker owns (its table recovered) the partitions given to it."""
    distribution: dict[str, dict[str, list[int]]] = {}
    for partition, holder in holders.items():
        where = holder if isinstance(holder, str) else url(holder)
        topic = workers[0].ctx.users.changelog_topic.get_topic_name()
        distribution.setdefault(where, {}).setdefault(topic, []).append(partition)
    for w in workers:
        w.ctx.app.assignor.changelog_distribution = distribution  # type: ignore[attr-defined]
        w.ctx.owned = {p for p, h in holders.items() if h is w}


@contextlib.asynccontextmanager
async def serving(*workers: Worker) -> AsyncIterator[ClientSession]:
    """Each worker's routes on its own port, registered as the worker registers them."""
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(ClientSession())
        for worker in workers:
            app = build_app(worker.ctx.settings)
            web.register(app, worker.latest.get, None, profile=worker.erasure.profile,
                         owners=Owners(worker.ctx), rank=worker.ranking.rank_stored)
            app.http_client = session
            app.web.init_server()
            await stack.enter_async_context(TestServer(app.web.web_app, port=worker.ctx.settings.web_port))  # type: ignore[attr-defined]
        yield session


async def get(session: ClientSession, worker: Worker, path: str,
              headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with session.get(url(worker) + path, headers=AUTH if headers is None else headers) as response:
        return response.status, await response.json(), response.headers


async def clicked(worker: Worker, user: str, event_id: str, offset: int) -> None:
    await worker.user_events.handle([consumed("t.clicks", click(event_id, user=user), user, offset,
                                              partition=home(user))])


async def test_any_worker_answers_by_asking_the_holder_with_the_same_token(
        workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    assign(workers, {p: a for p in range(PARTITIONS)})
    await clicked(a, "u1", "e1", 1)
    await clicked(a, "u+1@x", "e2", 2)
    await a.ranking.rank_batch(a.ctx.scheduler.due(10), [])
    async with serving(a, b) as session:
        quoted = await get(session, b, "/users/u%2B1%40x/profile")
        here = await get(session, a, "/users/u1/recommendations")
        there = await get(session, b, "/users/u1/recommendations")
        profile = await get(session, b, "/users/u1/profile")
        unknown = await get(session, b, "/users/nobody/profile")
        no_token = await get(session, b, "/users/u1/profile", headers={})
    assert here[0] == there[0] == 200 and here[1] == there[1] and there[1]["trigger_event_id"] == "e1"
    assert there[2][web.SERVED_BY_HEADER] == url(a)
    assert profile[0] == 200 and profile[1]["events"] == 1 and profile[1]["user_id"] == "u1"
    assert quoted[0] == 200 and quoted[1]["user_id"] == "u+1@x"
    assert unknown[0] == 404                     # the holder's answer, passed on
    assert no_token[0] == 401                    # the token is checked before anything is forwarded


async def test_nobody_holding_the_partition_or_a_silent_holder_is_a_503_not_a_wrong_answer(
        workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    silent = f"http://127.0.0.1:{free_port()}"   # nothing listens there
    assign(workers, {home("u1"): silent})
    b.latest.put("u1", b'{"user_id": "u1", "stale": true}', home("u1"))   # what b held before
    async with serving(a, b) as session:
        unreachable = await get(session, b, "/users/u1/recommendations")
        assign(workers, {})
        unknown = await get(session, b, "/users/u1/profile")
        assign(workers, {home("u1"): b})
        b.ctx.owned = set()                      # assigned here, its table still being recovered
        recovering = await get(session, b, "/users/u1/recommendations")
    for status, body, headers in (unreachable, unknown, recovering):
        assert status == 503 and body["error"] == "unavailable" and headers["Retry-After"]
    assert silent in unreachable[1]["detail"]
    assert "recovered" in recovering[1]["detail"]


async def test_a_forwarded_request_is_answered_or_refused_never_forwarded_again(
        workers: tuple[Worker, Worker]) -> None:
    """Two workers whose assignments disagree for a moment (a rebalance) must not bounce a request."""
    a, b = workers
    assign(workers, {home("u1"): a})
    a.ctx.owned = set()                          # a just lost it; b's map still says a
    async with serving(a, b) as session:
        status, body, _ = await get(session, b, "/users/u1/profile",
                                    headers={**AUTH, web.FORWARDED_HEADER: url(a)})
    assert status == 503 and "moved" in body["detail"]


async def test_a_partition_that_moved_away_is_answered_by_its_new_holder_not_from_here(
        workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    assign(workers, {p: a for p in range(PARTITIONS)})
    await clicked(a, "u1", "e1", 1)
    await a.ranking.rank_batch(a.ctx.scheduler.due(10), [])
    partition = home("u1")
    others = {p for p in range(PARTITIONS) if p != partition}
    kept = next(u for u in (f"k{i}" for i in range(100)) if home(u) in others)
    await clicked(a, kept, "g1", 4)
    await a.ranking.rank_batch(a.ctx.scheduler.due(10), [])
    everything = {TP(t, p) for t in ("t.clicks", "t.reviews") for p in range(PARTITIONS)}
    await a.rebalance.on_partitions_revoked(None, everything)   # eager: a rebalance revokes all first
    async with serving(a) as session:          # revoked (a rebalance starts): not answered from here
        revoked = await get(session, a, "/users/u1/recommendations")
    assert revoked[0] == 503
    await a.rebalance.on_partitions_assigned(None, {TP(t, p) for t in ("t.clicks", "t.reviews") for p in others})
    assert a.latest.get("u1") is None            # the lists of the partition given away are dropped,
    assert a.latest.get(kept) is not None        # those of the partitions assigned here again kept
    # b recovered the partition, and the user's next event was ranked there.
    assign(workers, {p: (b if p == partition else a) for p in range(PARTITIONS)})
    await clicked(b, "u1", "e2", 2)
    await b.ranking.rank_batch(b.ctx.scheduler.due(10), [])
    async with serving(a, b) as session:
        from_a = await get(session, a, "/users/u1/recommendations")
    assert from_a[0] == 200 and from_a[1]["trigger_event_id"] == "e2" and from_a[2][web.SERVED_BY_HEADER] == url(b)


async def test_after_a_restart_the_holder_ranks_the_user_from_the_table(workers: tuple[Worker, Worker]) -> None:
    """The latest list lived in memory: a restarted holder (its table recovered, nothing in
    memory) ranks the stored profile, sends that ranking like any other and answers with it."""
    a, b = workers
    assign(workers, {p: a for p in range(PARTITIONS)})
    await clicked(a, "u1", "e1", 1)
    a.ctx.scheduler.due(10)                      # the ranking after the event never ran (killed)
    assert a.latest.get("u1") is None
    async with serving(a, b) as session:
        asked = await asyncio.gather(*(get(session, w, "/users/u1/recommendations") for w in (a, b, a)))
        unknown = await get(session, b, "/users/nobody/recommendations")
    sent = recommendations(a)
    assert [s for s, _, _ in asked] == [200, 200, 200] and unknown[0] == 404
    assert len(sent) == 1 and all(body == sent[0] for _, body, _ in asked)   # one ranking, sent
    assert sent[0]["user_id"] == "u1" and sent[0]["trigger_event_id"] == "e1" and sent[0]["items"]
    assert orjson.loads(a.latest.get("u1") or b"{}") == sent[0]


async def test_an_erased_user_is_not_ranked_on_read(workers: tuple[Worker, Worker]) -> None:
    a, b = workers
    assign(workers, {p: a for p in range(PARTITIONS)})
    await clicked(a, "u1", "e1", 1)
    recommend = a.ctx.runner.recommend

    async def erased_meanwhile(jobs: Any) -> Any:
        results = await recommend(jobs)
        forget = {"type": "forget", "forget_id": "f1", "user_id": "u1", "ts": NOW}
        await a.user_events.handle([consumed("t.requests", forget, "u1", 2, partition=home("u1"))])
        return results

    with patch.object(a.ctx.runner, "recommend", side_effect=erased_meanwhile):
        async with serving(a) as session:
            status, _, _ = await get(session, a, "/users/u1/recommendations")
    assert status == 404 and recommendations(a) == []


def test_the_url_other_workers_are_told_is_where_this_one_listens(tmp_path: Path) -> None:
    """Faust's default canonical URL is http://<host name>:<port>, not reached where the server
    binds 127.0.0.1 (the default): the assignor tells the group XLREC_WEB_URL or the bind address."""
    def told(**kwargs: Any) -> str:
        return str(build_app(Settings(data_dir=tmp_path, web_port=7001, **kwargs)).conf.canonical_url)

    assert told() == "http://127.0.0.1:7001"
    assert told(web_host="0.0.0.0") == f"http://{socket.gethostname()}:7001"
    assert told(web_host="10.1.2.3") == "http://10.1.2.3:7001"
    assert told(web_host="0.0.0.0", web_url="http://worker-2.xlrec:6066/") == "http://worker-2.xlrec:6066"
