"""A Qdrant REST endpoint on 127.0.0.1 for the vector-store outage test.

No Qdrant server can be installed on this machine (no registry ships its binary), so this
serves the few REST calls `ranking.qdrant_store.ServerStore` makes, backed by qdrant-client's
in-process implementation of the same API. The data lives in this process, so `stop()` makes
the endpoint go away (connection refused, as when a server dies) and `start()` brings it back
on the same port with everything still there, as a restarted server with its storage would.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from qdrant_client import QdrantClient, models

VERSION = "1.15.0"


class FakeQdrant:
    """Serves /collections/... for ServerStore; `calls` counts requests that reached it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = QdrantClient(location=":memory:")
        self.calls = 0
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                try:
                    with fake._lock:
                        fake.calls += 1
                        result = fake.handle(self.command, self.path.split("?")[0], body)
                    payload, status = {"result": result, "status": "ok", "time": 0.0}, 200
                except KeyError as exc:
                    payload, status = {"status": {"error": f"Not found: {exc}"}, "time": 0.0}, 404
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _reply

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, method: str, path: str, body: dict[str, Any]) -> Any:
        c = self.client
        if path == "/":
            return {"title": "qdrant - vector search engine", "version": VERSION}
        match = re.fullmatch(r"/collections/([^/]+)(/.*)?", path)
        if not match:
            raise KeyError(path)
        name, rest = match.group(1), match.group(2) or ""
        done = {"operation_id": 0, "status": "completed"}
        if rest == "/exists":
            return {"exists": c.collection_exists(name)}
        if rest == "" and method == "GET":
            if not c.collection_exists(name):
                raise KeyError(name)
            return c.get_collection(name).model_dump(mode="json", exclude_none=True)
        if rest == "" and method == "PUT":
            create = models.CreateCollection.model_validate(body)
            return c.create_collection(name, vectors_config=create.vectors)
        if rest == "/index":
            return done
        if rest == "/points" and method == "PUT":
            points = models.PointsList.model_validate(body).points
            c.upsert(name, points=points)
            return done
        if rest == "/points/delete":
            c.delete(name, points_selector=models.PointIdsList.model_validate(body))
            return done
        if rest == "/points" and method == "POST":
            request = models.PointRequest.model_validate(body)
            return [r.model_dump(mode="json") for r in c.retrieve(
                name, request.ids, with_payload=True, with_vectors=True)]
        if rest == "/points/query":
            request = models.QueryRequest.model_validate(body)
            found = c.query_points(name, query=request.query, limit=request.limit or 10,
                                   query_filter=request.filter, with_payload=True)
            return {"points": [p.model_dump(mode="json") for p in found.points]}
        if rest == "/points/count":
            return {"count": c.count(name, exact=True).count}
        raise KeyError(path)
