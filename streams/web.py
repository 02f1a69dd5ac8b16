"""HTTP on the worker's web port (Faust's built-in aiohttp server):
`GET /users/{user_id}/recommendations` (the latest recommendation sent for the user, exactly
the JSON written to the topic; 404 when this worker has none) and `GET /metrics`.

The latest recommendations are kept by the worker that owns the user's partition; with
several workers, ask the one that owns it (or consume the `recommendations` topic).
"""

from __future__ import annotations

from collections.abc import Callable

import faust
from faust.web import Request, Response, View

from streams import metrics

RECOMMENDATIONS_PATH = "/users/{user_id}/recommendations"


def register(app: faust.App, latest: Callable[[str], bytes | None]) -> None:
    """Add the pages to `app`; `latest(user_id)` returns the JSON bytes last sent, or None."""

    @app.page(RECOMMENDATIONS_PATH, name="user_recommendations")
    async def user_recommendations(web: View, request: Request, user_id: str) -> Response:
        body = latest(user_id)
        if body is None:
            return web.json({"error": "not_found",
                             "detail": f"no recommendation for user {user_id[:128]!r} on this worker"},
                            status=404)
        return web.bytes(body, content_type="application/json")

    @app.page("/metrics", name="metrics")
    async def prometheus(web: View, request: Request) -> Response:
        body, content_type = metrics.render()
        # aiohttp refuses parameters (charset, version) in `content_type`; a header keeps them.
        return web.bytes(body, headers={"Content-Type": content_type})
