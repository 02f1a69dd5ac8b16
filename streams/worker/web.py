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

The latest recommendations are kept by the worker that owns the user's partition; with
several workers, ask the one that owns it (or consume the `recommendations` topic).
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiohttp import web as aiohttp_web
from aiohttp.typedefs import Handler, Middleware
from faust.web import Request, Response, View

from streams.worker import metrics

RECOMMENDATIONS_PATH = "/users/{user_id}/recommendations"
PROFILE_PATH = "/users/{user_id}/profile"
ITEM_PATH = "/items/{item_id}"
MAX_LATEST = 200_000   # users whose latest recommendation is kept
# Scrapers and orchestrator probes carry no token; these routes reveal nothing about users.
OPEN_PATHS = frozenset({"/metrics", "/health/live", "/health/ready"})


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
    """The latest recommendation per user, as sent (JSON bytes), LRU-bounded."""

    def __init__(self, max_users: int = MAX_LATEST) -> None:
        self.max_users = max_users
        self._data: OrderedDict[str, bytes] = OrderedDict()

    def put(self, user_id: str, body: bytes) -> None:
        self._data[user_id] = body
        self._data.move_to_end(user_id)
        while len(self._data) > self.max_users:
            self._data.popitem(last=False)

    def get(self, user_id: str) -> bytes | None:
        return self._data.get(user_id)

    def forget(self, user_id: str) -> None:
        self._data.pop(user_id, None)


def register(app: faust.App, latest: Callable[[str], bytes | None],
             item: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
             profile: Callable[[str], dict[str, Any] | None] | None = None) -> None:
    """Add the pages to `app`; `latest(user_id)` returns the JSON bytes last sent, or None;
    `item(item_id)` the searchable item's payload, or None; `profile(user_id)` what the worker
    holds about the user (streams.worker.privacy.profile_view), or None."""

    @app.page(RECOMMENDATIONS_PATH, name="user_recommendations")
    async def user_recommendations(web: View, request: Request, user_id: str) -> Response:
        body = latest(user_id)
        if body is None:
            return web.json({"error": "not_found",
                             "detail": f"no recommendation for user {user_id[:128]!r} on this worker"},
                            status=404)
        return web.bytes(body, content_type="application/json")

    if profile is not None:
        @app.page(PROFILE_PATH, name="user_profile")
        async def user_profile(web: View, request: Request, user_id: str) -> Response:
            held = profile(user_id)
            if held is None:
                return web.json({"error": "not_found",
                                 "detail": f"no profile of user {user_id[:128]!r} on this worker"},
                                status=404)
            return web.json(held)

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
