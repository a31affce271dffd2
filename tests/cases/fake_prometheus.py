"""A local HTTP server in the shape of Prometheus's query API, for answers a real Prometheus gives only
by accident: `+Inf`, a redirect, an error page.

GET /api/v1/query?query=Q answers what the test set for Q (`answers[Q]`: status, headers, body), else
404. Standard library only, in a thread; the operator process reaches it over real HTTP as one of its
listed endpoints. Each test uses queries of its own, so one server serves a whole session.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class FakePrometheus:
    answers: dict[str, Answer] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    """Every query asked, in order."""
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def scalar(self, query: str, sample: str) -> None:
        """`query` answers a scalar whose sample is `sample`, as Prometheus writes it ("+Inf", "0.97")."""
        body = {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, sample]}}
        self.answers[query] = (200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def redirect(self, query: str, location: str) -> None:
        self.answers[query] = (302, {"Location": location}, b"")

    def start(self) -> FakePrometheus:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = (parse_qs(parts.query).get("query") or [""])[0]
                fake.queries.append(query)
                missing: Answer = (404, {}, b'{"status": "error", "errorType": "not_found", "error": "no"}')
                status, headers, body = (
                    fake.answers.get(query, missing) if parts.path == "/api/v1/query" else missing
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
