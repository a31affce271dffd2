"""A local HTTP server speaking Electricity Maps' v3 API shape, for the carbon-aware start's tests.

GET /v3/carbon-intensity/latest?zone=Z   -> {"zone", "carbonIntensity", "datetime", "updatedAt"}
GET /v3/carbon-intensity/forecast?zone=Z -> {"zone", "forecast": [{"carbonIntensity", "datetime"}],
                                            "updatedAt"}
Both need the `auth-token` header. Standard library only, in a thread: the unit tests (asyncio) and the
integration tests (an operator process) both reach it over real HTTP. State is per zone, so one server
serves several tests at once: a zone in `down` answers 503 (an outage); a zone with a forecast follows
it (`latest` is the newest forecast point that has begun), else its `intensity` (default 450).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from http.client import HTTPMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.cases.fake_http import Answer, FakeHttpServer


@dataclass
class FakeElectricityMaps(FakeHttpServer):
    api_key: str = "test-key"
    intensity: dict[str, float] = field(default_factory=dict)
    forecast: dict[str, list[tuple[dt.datetime, float]]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    def _answer(self, path: str, zone: str, token: str) -> tuple[int, dict[str, Any]]:
        self.calls.append(path)
        if zone in self.down:
            return 503, {"error": "service unavailable"}
        if token != self.api_key:
            return 401, {"error": "invalid auth-token"}
        moment = dt.datetime.now(dt.UTC)
        now = moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")
        points = sorted(self.forecast.get(zone, []))
        if path == "/v3/carbon-intensity/latest":
            begun = [v for at, v in points if at <= moment]
            value = begun[-1] if begun else self.intensity.get(zone, 450.0)
            return 200, {"zone": zone, "carbonIntensity": value, "datetime": now, "updatedAt": now}
        if path == "/v3/carbon-intensity/forecast":
            if not points:
                return 404, {"error": f"no forecast for zone {zone}"}
            rows = [
                {"carbonIntensity": v, "datetime": at.isoformat().replace("+00:00", "Z")} for at, v in points
            ]
            return 200, {"zone": zone, "forecast": rows, "updatedAt": now}
        return 404, {"error": "not found"}

    def start(self) -> FakeElectricityMaps:
        self.serve(self._respond)
        return self

    def _respond(self, path: str, headers: HTTPMessage) -> Answer:
        parts = urlsplit(path)
        zone = parse_qs(parts.query).get("zone", [""])[0]
        status, body = self._answer(parts.path, zone, headers.get("auth-token", ""))
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()
