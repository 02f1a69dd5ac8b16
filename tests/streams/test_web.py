"""`streams.worker.web`: the latest recommendations kept for HTTP are bounded; the worker's web
app serves only xlrec's own routes (Faust's table and router views are off), binds to
`XLREC_WEB_HOST` and, with `XLREC_WEB_TOKEN`, asks for the token on every route but `/metrics`
and the health routes. The aiohttp app is served by a test server: no broker needed."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from streams.contracts.settings import Settings
from streams.worker import web
from streams.worker.app import build_app
from streams.worker.web import LatestRecommendations


def test_latest_recommendations_are_bounded() -> None:
    latest = LatestRecommendations(max_users=2)
    for user in ("a", "b", "a", "c"):
        latest.put(user, user.encode())
    assert (latest.get("a"), latest.get("b"), latest.get("c")) == (b"a", None, b"c")


async def _item(item_id: str) -> dict[str, Any] | None:
    return {"item_id": item_id} if item_id == "i1" else None


def get_all(settings: Settings, requests: list[tuple[str, dict[str, str]]]) -> list[int]:
    """Statuses of GETs on a worker's web app (built as the worker builds it) with a users table."""
    app = build_app(settings)
    app.Table("users", default=dict, partitions=settings.partitions)
    latest = LatestRecommendations()
    latest.put("u1", b'{"user_id": "u1"}')
    web.register(app, latest.get, _item)
    app.web.init_server()

    async def run() -> list[int]:
        async with TestServer(app.web.web_app) as server, ClientSession() as session:  # type: ignore[attr-defined]
            statuses = []
            for path, headers in requests:
                async with session.get(server.make_url(path), headers=headers) as response:
                    statuses.append(response.status)
            return statuses

    return asyncio.run(run())


def test_faust_table_and_router_views_are_off(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path)
    paths = ["/table/", "/table/users/", "/table/users/u1/", "/router/", "/router/users/",
             "/router/users/u1/", "/graph/", "/assignment/", "/performance/"]
    assert get_all(settings, [(p, {}) for p in paths]) == [404] * len(paths)
    assert get_all(settings, [("/users/u1/recommendations", {}), ("/items/i1", {}), ("/metrics", {}),
                              ("/health/live", {}), ("/health/ready", {})]) == [200] * 5


def test_bind_address_is_a_setting(tmp_path: Any) -> None:
    assert Settings.model_fields["web_host"].default == "127.0.0.1"
    assert build_app(Settings(data_dir=tmp_path)).conf.web_bind == "127.0.0.1"
    assert build_app(Settings(data_dir=tmp_path, web_host="0.0.0.0")).conf.web_bind == "0.0.0.0"


def test_token_is_required_accepted_and_not_needed_for_metrics_and_health(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, web_token="s3cret")
    good = {"Authorization": "Bearer s3cret"}
    bad = {"Authorization": "Bearer wrong"}
    statuses = get_all(settings, [
        ("/users/u1/recommendations", {}), ("/users/u1/recommendations", bad),
        ("/users/u1/recommendations", {"Authorization": "s3cret"}), ("/items/i1", {}),
        ("/users/u1/recommendations", good), ("/items/i1", good),
        ("/metrics", {}), ("/health/live", {}),
    ])
    assert statuses == [401, 401, 401, 401, 200, 200, 200, 200]
