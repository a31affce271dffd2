"""The telemetry server's I/O shell with fakes behind it: aiohttp's own test client, no apiserver.

Each answer of the README's table for the paths that need no Kubernetes: accepted, malformed,
unknown version, unknown job, replay, standby, and a body over the limit, each counted by reason.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from carbontrack.api.wire import ACK_JOB_HEADER
from carbontrack.core.accounting.aggregation import Verdict
from carbontrack.state import metrics
from carbontrack.telemetry.server import TelemetryServer
from tests.cases.telemetry_fakes import FakeAuth, FakeRegistry, body


def rejected(reason: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("carbontrack_telemetry_rejected_total", {"reason": reason}) or 0.0
    )


def exchange(
    requests: list[tuple[Any, str]], active: bool = True, headers: dict[str, str] | None = None
) -> tuple[list[tuple[int, str]], FakeRegistry]:
    """POST each (body, token) in order to a server with fakes behind it; (status, text) of each."""
    registry = FakeRegistry()

    async def run() -> list[tuple[int, str]]:
        server = TelemetryServer(registry, FakeAuth(), max_body_bytes=4096)  # type: ignore[arg-type]
        server.active = active
        async with TestClient(TestServer(server.app)) as client:
            out = []
            for doc, token in requests:
                data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                resp = await client.post(
                    "/v1/telemetry",
                    data=data,
                    headers={"Authorization": f"Bearer {token}", **(headers or {})},
                )
                out.append((resp.status, await resp.text()))
            return out

    return asyncio.run(run()), registry


def test_a_good_batch_is_accepted_and_a_replay_is_a_409_that_changes_nothing() -> None:
    before = rejected("duplicate")
    answers, registry = exchange([(body(1), "good"), (body(2), "good"), (body(1), "good")])
    assert [a[0] for a in answers] == [200, 200, 409]
    assert json.loads(answers[0][1]) == {"accepted": True, "seq": 1, "message": ""}
    assert registry.aggregate.energy_j == 20.0 and rejected("duplicate") == before + 1


def test_the_job_totals_ride_in_the_ack_only_for_a_sidecar_that_asks() -> None:
    asked, registry = exchange([(body(1), "good"), (body(2), "good")], headers={ACK_JOB_HEADER: "1"})
    job = {"emissionsGrams": 20.0 / 3.6e6 * 100.0, "energyJoules": 20.0, "zone": "DE", "gpus": {"": 1}}
    assert [json.loads(text) for _, text in asked] == [
        {"accepted": True, "seq": 1, "message": "", "job": {**job, "emissionsGrams": 10.0 / 3.6e6 * 100.0,
                                                           "energyJoules": 10.0}},
        {"accepted": True, "seq": 2, "message": "", "job": job},
    ]  # fmt: skip
    assert registry.gpu_models == {"": 1}  # counted at the first answer, then by the status writer
    plain, _ = exchange([(body(1), "good")])  # an older sidecar: the ack it has always parsed
    assert json.loads(plain[0][1]) == {"accepted": True, "seq": 1, "message": ""}


def test_malformed_unknown_version_and_unknown_job_are_4xx_and_counted() -> None:
    before = {r: rejected(r) for r in ("malformed", "unknown-version", "unknown-job", "unauthenticated")}
    bad_job = body(job={"namespace": "ns", "name": "nope"})
    answers, registry = exchange(
        [(b"{not json", "good"), (body(version=2), "good"), (bad_job, "good"), (body(), "forged")]
    )
    assert [a[0] for a in answers] == [400, 400, 404, 401]
    for reason in before:
        assert rejected(reason) == before[reason] + 1, reason
    assert registry.aggregate.energy_j == 0.0


def test_a_standby_defers_with_503_and_retry_after() -> None:
    answers, registry = exchange([(body(), "good")], active=False)
    assert answers[0][0] == 503 and "standby" in answers[0][1]
    assert registry.aggregate.energy_j == 0.0


def test_a_body_over_the_limit_is_a_413() -> None:
    answers, _ = exchange([(body(steps=[{"step": 1}] * 500), "good")])
    assert answers[0][0] == 413


def test_a_chunked_body_over_the_limit_is_a_413_though_it_declares_no_length() -> None:
    """No Content-Length to refuse it by: the limit holds while the body is read (server._read_body)."""
    registry = FakeRegistry()
    big = json.dumps(body(steps=[{"step": 1}] * 500)).encode()

    async def chunks() -> Any:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    async def run() -> tuple[int, int]:
        server = TelemetryServer(registry, FakeAuth(), max_body_bytes=4096)  # type: ignore[arg-type]
        async with TestClient(TestServer(server.app)) as client:
            small = await client.post("/v1/telemetry", data=json.dumps(body(1)).encode(),
                                      headers={"Authorization": "Bearer good"})  # fmt: skip
            resp = await client.post("/v1/telemetry", data=chunks(), headers={"Authorization": "Bearer good"})
            return small.status, resp.status

    before = rejected("too-large")
    assert asyncio.run(run()) == (200, 413)
    assert rejected("too-large") == before + 1 and registry.aggregate.energy_j == 10.0


def test_an_absurd_counter_is_a_422_and_verdicts_map_to_statuses() -> None:
    answers, _ = exchange([(body(1), "good"), (body(2, gpus=[{"index": 0, "energyJoules": 5.0}]), "good")])
    assert [a[0] for a in answers] == [200, 422]
    assert Verdict.BACKWARDS.value in answers[1][1] or "went down" in answers[1][1]
