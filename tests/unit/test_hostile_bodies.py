"""Hostile telemetry bodies, through the operator's real HTTP handler (aiohttp's test client).

Every body here is refused with a 400 and counted before any token is looked at; none may reach the
registry or the authenticator, and none may raise: the README promises no 5xx for any body.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from carbontrack.api.wire import WireError, parse_batch
from carbontrack.state import metrics
from carbontrack.telemetry.server import TelemetryServer
from tests.cases.bodies import GOOD, HOSTILE, body_of


class Untouchable:
    """Stands for the registry and the authenticator: a hostile body must never get this far."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a refused body reached {name}")


def _count(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value("carbontrack_telemetry_rejected_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(("name", "body", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_body_is_a_counted_400(name: str, body: bytes, reason: str) -> None:
    async def scenario() -> tuple[int, dict[str, Any]]:
        server = TelemetryServer(Untouchable(), Untouchable(), max_body_bytes=1 << 20)  # type: ignore[arg-type]
        async with TestClient(TestServer(server.app)) as http:
            resp = await http.post("/v1/telemetry", data=body, headers={"Authorization": "Bearer t"})
            return resp.status, await resp.json()

    before = _count(reason)
    status, ack = asyncio.run(scenario())
    assert (status, ack["accepted"]) == (400, False), ack
    assert _count(reason) == before + 1
    assert len(ack["message"]) < 2000


def test_the_good_body_parses() -> None:
    """The table's bodies are refused for the reason they name, not because GOOD itself is wrong."""
    assert parse_batch(body_of(GOOD)).energy_joules == 5.0


@pytest.mark.parametrize(("name", "body", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_parse_batch_names_the_reason(name: str, body: bytes, reason: str) -> None:
    with pytest.raises(WireError) as err:
        parse_batch(body)
    assert err.value.reason == reason
