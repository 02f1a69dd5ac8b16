"""HTTP on the worker's web port (Faust's built-in aiohttp server):
`GET /users/{user_id}/recommendations` (the latest recommendation sent for the user, exactly
the JSON written to the topic; 404 when this worker has none), `GET /users/{user_id}/profile`
(what xlrec holds about the user, streams.worker.privacy; 404 when this worker holds nothing),
`GET /items/{item_id}` (the
item's payload once it is searchable in this worker's vector store, else 404: how an app,
or `xlrec bench pipeline`, learns that a new item can be recommended), `GET /metrics`,
`GET /health/live` (the process answers) and `GET /health/ready` (503 while rebalancing or
recovering tables).

These routes publish user data: the server binds to `XLREC_WEB_HOST` (loopback by default),
Faust's own views (`/table`, `/router`, statistics) are off (streams.worker.app), and with
`XLREC_WEB_TOKEN` every route but `/metrics` and `/health/*` asks for `Authorization: Bearer`.

The user routes answer on any worker (`register`'s `owners`, streams.worker.owners): the worker
that holds the user's partition (its table recovered) answers itself; another forwards the
request to it (Faust's assignor names it and its URL), with the caller's `Authorization` header
and `FORWARDED_HEADER`, and passes its answer on (status, body, and `X-Xlrec-Served-By`: the
URL that answered). When no worker holds the partition now (starting, rebalancing, recovering),
the holder does not answer within FORWARD_TIMEOUT_S, or a forwarded request reaches a worker
that no longer holds the partition (no second hop), the answer is 503 with a JSON error and
`Retry-After`: never another worker's stale copy.

The latest recommendation is the one the holder last sent. A holder that has none in memory
(after a restart; the list lived in memory only) ranks the user's profile from the users table
there and then (`rank`), sends that ranking to the `recommendations` topic like any other (so
the HTTP answer stays exactly what the topic holds) and answers with it: 404 only for a user
the table does not hold. Lists of partitions that moved away are dropped at once.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import faust
from aiohttp import web as aiohttp_web
from aiohttp.typedefs import Handler, Middleware
from faust.web import Request, Response, View
from yarl import URL

from streams.worker import metrics

RECOMMENDATIONS_PATH = "/users/{user_id}/recommendations"
PROFILE_PATH = "/users/{user_id}/profile"
ITEM_PATH = "/items/{item_id}"
MAX_LATEST = 200_000   # users whose latest recommendation is kept
# Scrapers and orchestrator probes carry no token; these routes reveal nothing about users.
OPEN_PATHS = frozenset({"/metrics", "/health/live", "/health/ready"})
FORWARDED_HEADER = "X-Xlrec-Forwarded"   # set on a request forwarded to the partition's holder
SERVED_BY_HEADER = "X-Xlrec-Served-By"   # the URL of the worker that answered a forwarded request
FORWARD_TIMEOUT_S = 5.0                  # the holder's answer to a forwarded request, at most
RETRY_AFTER_S = "1"


def require_token(token: str) -> Middleware:
    """aiohttp middleware: 401 unless `Authorization: Bearer <token>` (but on OPEN_PATHS).
    Compared in constant time, so the answer's timing does not leak the token."""
    expected = f"Bearer {token}".encode()

    @aiohttp_web.middleware
    async def check(request: aiohttp_web.Request, handler: Handler) -> aiohttp_web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return aiohttp_web.json_response(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <XLREC_WEB_TOKEN>"},
                status=401, headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return check


class LatestRecommendations:
    """The latest recommendation per user, as sent (JSON bytes) with the user's partition,
    LRU-bounded."""

    def __init__(self, max_users: int = MAX_LATEST) -> None:
        self.max_users = max_users
        self._data: OrderedDict[str, tuple[int, bytes]] = OrderedDict()

    def put(self, user_id: str, body: bytes, partition: int = 0) -> None:
        self._data[user_id] = (partition, body)
        self._data.move_to_end(user_id)
        while len(self._data) > self.max_users:
            self._data.popitem(last=False)

    def get(self, user_id: str) -> bytes | None:
        held = self._data.get(user_id)
        return held[1] if held is not None else None

    def forget(self, user_id: str) -> None:
        self._data.pop(user_id, None)

    def keep_partitions(self, partitions: Iterable[int]) -> int:
        """Drop the lists of users of every other partition (they moved to another worker);
        returns how many were dropped."""
        kept = set(partitions)
        users = [u for u, (p, _) in self._data.items() if p not in kept]
        for user_id in users:
            del self._data[user_id]
        return len(users)


@dataclass(frozen=True)
class Location:
    """Who answers for a user: this worker (no `url`, no `unavailable`), the worker at `url`, or
    nobody now (`unavailable` says why)."""

    partition: int
    url: str | None = None
    unavailable: str | None = None


class Owners(Protocol):
    """Locates the worker holding a user's partition (streams.worker.owners.Owners)."""

    def locate(self, user_id: str) -> Location: ...


def unavailable(web: View, detail: str) -> Response:
    return web.json({"error": "unavailable", "detail": detail}, status=503,
                    headers={"Retry-After": RETRY_AFTER_S})


async def forward(app: faust.App, web: View, request: Request, where: Location) -> Response:
    """Ask the holder of the user's partition (one hop, with the caller's bearer token) and pass
    its answer on; 503 when it does not answer in time."""
    assert where.url is not None
    url = URL(where.url).with_path(request.url.raw_path, encoded=True)   # the user id as the caller quoted it
    headers = {FORWARDED_HEADER: str(app.conf.canonical_url)}
    token = request.headers.get("Authorization")
    if token is not None:
        headers["Authorization"] = token
    try:
        async with app.http_client.get(url, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)) as response:
            body = await response.read()
            return web.bytes(body, status=response.status, content_type=response.content_type,
                             headers={SERVED_BY_HEADER: where.url})
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return unavailable(web, f"the worker holding partition {where.partition} ({where.url}) did not "
                                f"answer: {type(exc).__name__} {str(exc)[:200]}".rstrip())


def register(app: faust.App, latest: Callable[[str], bytes | None],
             item: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
             profile: Callable[[str], dict[str, Any] | None] | None = None, *,
             owners: Owners | None = None,
             rank: Callable[[str], Awaitable[bytes | None]] | None = None) -> None:
    """Add the pages to `app`; `latest(user_id)` returns the JSON bytes last sent, or None;
    `item(item_id)` the searchable item's payload, or None; `profile(user_id)` what the worker
    holds about the user (streams.worker.privacy.profile_view), or None; `owners` says which
    worker answers for a user (without it, this one answers for everyone: a lone worker's
    tests); `rank(user_id)` ranks a user held here that has no latest recommendation in memory
    and returns the JSON sent, or None when the table does not hold the user."""

    async def for_user(web: View, request: Request, user_id: str,
                       here: Callable[[], Awaitable[Response]]) -> Response:
        where = owners.locate(user_id) if owners is not None else None
        if where is None or (where.url is None and where.unavailable is None):
            return await here()
        if where.unavailable is not None:
            return unavailable(web, where.unavailable)
        if request.headers.get(FORWARDED_HEADER):
            return unavailable(web, f"this worker does not hold partition {where.partition} of user "
                                    f"{user_id[:128]!r} (it moved meanwhile)")
        return await forward(app, web, request, where)

    @app.page(RECOMMENDATIONS_PATH, name="user_recommendations")
    async def user_recommendations(web: View, request: Request, user_id: str) -> Response:
        async def here() -> Response:
            body = latest(user_id)
            if body is None and rank is not None:
                try:
                    body = await rank(user_id)
                except Exception as exc:  # the vector store is away, say: no list rather than a 500
                    return unavailable(web, f"ranking user {user_id[:128]!r} failed: {type(exc).__name__}")
            if body is None:
                return web.json({"error": "not_found",
                                 "detail": f"no recommendation for user {user_id[:128]!r}"}, status=404)
            return web.bytes(body, content_type="application/json")

        return await for_user(web, request, user_id, here)

    if profile is not None:
        @app.page(PROFILE_PATH, name="user_profile")
        async def user_profile(web: View, request: Request, user_id: str) -> Response:
            async def here() -> Response:
                assert profile is not None
                held = profile(user_id)
                if held is None:
                    return web.json({"error": "not_found",
                                     "detail": f"no profile of user {user_id[:128]!r}"}, status=404)
                return web.json(held)

            return await for_user(web, request, user_id, here)

    if item is not None:
        @app.page(ITEM_PATH, name="item")
        async def searchable_item(web: View, request: Request, item_id: str) -> Response:
            payload = await item(item_id)
            if payload is None:
                return web.json({"error": "not_found",
                                 "detail": f"item {item_id[:128]!r} is not searchable on this worker"},
                                status=404)
            return web.json(payload)

    @app.page("/health/live", name="health_live")
    async def live(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/health/ready", name="health_ready")
    async def ready(web: View, request: Request) -> Response:
        busy = [name for name, on in (("rebalancing", app.rebalancing), ("recovering", app.in_recovery)) if on]
        return web.json({"status": busy[0] if busy else "ok"}, status=503 if busy else 200)

    @app.page("/metrics", name="metrics")
    async def prometheus(web: View, request: Request) -> Response:
        body, content_type = metrics.render()
        # aiohttp refuses parameters (charset, version) in `content_type`; a header keeps them.
        return web.bytes(body, headers={"Content-Type": content_type})
