"""A local HTTP server in the shape of Prometheus's query API, for answers a real Prometheus gives only
by accident: `+Inf`, a redirect, an error page.

GET /api/v1/query?query=Q answers what the test set for Q (`answers[Q]`: status, headers, body), else
404. Standard library only, in a thread; the operator process reaches it over real HTTP as one of its
listed endpoints. Each test uses queries of its own, so one server serves a whole session.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.client import HTTPMessage
from urllib.parse import parse_qs, urlsplit

from tests.cases.fake_http import Answer, FakeHttpServer

MISSING: Answer = (404, {}, b'{"status": "error", "errorType": "not_found", "error": "no"}')


@dataclass
class FakePrometheus(FakeHttpServer):
    answers: dict[str, Answer] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    """Every query asked, in order."""

    def scalar(self, query: str, sample: str) -> None:
        """`query` answers a scalar whose sample is `sample`, as Prometheus writes it ("+Inf", "0.97")."""
        body = {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, sample]}}
        self.answers[query] = (200, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def redirect(self, query: str, location: str) -> None:
        self.answers[query] = (302, {"Location": location}, b"")

    def start(self) -> FakePrometheus:
        self.serve(self._answer)
        return self

    def _answer(self, path: str, _headers: HTTPMessage) -> Answer:
        parts = urlsplit(path)
        query = (parse_qs(parts.query).get("query") or [""])[0]
        self.queries.append(query)
        return self.answers.get(query, MISSING) if parts.path == "/api/v1/query" else MISSING
