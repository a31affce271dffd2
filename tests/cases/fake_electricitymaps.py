"""A local HTTP server speaking Electricity Maps' v3 API shape, for the carbon-aware start's tests.

GET /v3/carbon-intensity/latest?zone=Z   -> {"zone", "carbonIntensity", "datetime", "updatedAt"}
GET /v3/carbon-intensity/forecast?zone=Z -> {"zone", "forecast": [{"carbonIntensity", "datetime"}],
                                            "updatedAt"}
Both need the `auth-token` header. Standard library only, in a thread: the unit tests (asyncio) and the
integration tests (an operator process) both reach it over real HTTP. `down` answers 503, as an outage.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class FakeElectricityMaps:
    api_key: str = "test-key"
    intensity: float = 450.0
    forecast: list[tuple[dt.datetime, float]] = field(default_factory=list)
    down: bool = False
    calls: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _answer(self, path: str, zone: str, token: str) -> tuple[int, dict[str, Any]]:
        self.calls.append(path)
        if self.down:
            return 503, {"error": "service unavailable"}
        if token != self.api_key:
            return 401, {"error": "invalid auth-token"}
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        if path == "/v3/carbon-intensity/latest":
            return 200, {"zone": zone, "carbonIntensity": self.intensity, "datetime": now, "updatedAt": now}
        if path == "/v3/carbon-intensity/forecast":
            points = [
                {"carbonIntensity": v, "datetime": at.isoformat().replace("+00:00", "Z")}
                for at, v in self.forecast
            ]
            return 200, {"zone": zone, "forecast": points, "updatedAt": now}
        return 404, {"error": "not found"}

    def start(self) -> FakeElectricityMaps:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                zone = parse_qs(parts.query).get("zone", [""])[0]
                status, body = fake._answer(parts.path, zone, self.headers.get("auth-token", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
