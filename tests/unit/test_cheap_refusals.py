"""Refusals that cost the apiserver little: refused tokens remembered briefly, first contacts limited per
client address (telemetry.auth), with a stand-in TokenReview that counts and a clock the test moves."""

from __future__ import annotations

import asyncio
import json
import secrets
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from carbontrack.state import metrics
from carbontrack.telemetry import auth as auth_module
from carbontrack.telemetry.auth import POD_NAME_KEY, POD_UID_KEY, Authenticator, AuthError, FirstContacts
from carbontrack.telemetry.server import TelemetryServer
from tests.cases.telemetry_fakes import FakeRegistry, body


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reviews:
    """The apiserver's TokenReview, counted: "good" is pod ns/p0's token, anything else is refused."""

    def __init__(self) -> None:
        self.calls = 0

    async def create_token_review(self, review: Any) -> Any:
        self.calls += 1
        good = review.spec.token == "good"
        user = SimpleNamespace(
            username="system:serviceaccount:ns:default", extra={POD_NAME_KEY: ["p0"], POD_UID_KEY: ["uid-0"]}
        )
        return SimpleNamespace(
            status=SimpleNamespace(authenticated=good, audiences=["carbontrack"], user=user)
        )


def authenticator(clock: Clock, limit: FirstContacts | None = None) -> tuple[Authenticator, Reviews]:
    auth = Authenticator(None, cache_s=300.0, refused_cache_s=30.0, first_contacts=limit, clock=clock)  # type: ignore[arg-type]
    reviews = Reviews()
    auth.auth = reviews  # type: ignore[assignment]
    return auth, reviews


async def answer(auth: Authenticator, token: str, source: str = "10.0.0.1") -> int:
    """The status the authenticator gives `token` from `source`: 200 when it identifies."""
    try:
        auth.admit(token, source)
        await auth.identify(token)
    except AuthError as exc:
        return exc.status
    return 200


def test_a_refused_token_costs_one_review_until_its_refusal_expires() -> None:
    async def run() -> tuple[list[int], int, int]:
        clock = Clock()
        auth, reviews = authenticator(clock)
        statuses = [await answer(auth, "forged") for _ in range(300)]
        first = reviews.calls
        clock.now += 30.0  # REFUSED_CACHE_S later: reviewed again
        statuses.append(await answer(auth, "forged"))
        return statuses, first, reviews.calls

    statuses, first, later = asyncio.run(run())
    assert statuses == [401] * 301 and (first, later) == (1, 2)


def test_a_token_that_passes_is_kept_its_full_ttl_beside_brief_refusals() -> None:
    async def run() -> tuple[int, int]:
        clock = Clock()
        auth, reviews = authenticator(clock)
        assert await answer(auth, "good") == 200
        clock.now += 299.0
        assert await answer(auth, "good") == 200
        return reviews.calls, await answer(auth, "forged")

    assert asyncio.run(run()) == (1, 401)


def test_refused_tokens_cannot_push_out_the_ones_that_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "MAX_MISSES", 10)

    async def run() -> int:
        auth, reviews = authenticator(Clock())
        await answer(auth, "good")
        for _ in range(25):  # the misses' bound is reached twice over
            await answer(auth, secrets.token_hex(8))
        calls = reviews.calls
        assert await answer(auth, "good") == 200
        return reviews.calls - calls

    assert asyncio.run(run()) == 0  # "good" still cached: no review


def test_random_tokens_from_one_address_cost_a_burst_of_reviews_then_a_429_each() -> None:
    async def run() -> tuple[list[int], int, list[int], list[int], int]:
        clock = Clock()
        auth, reviews = authenticator(clock, FirstContacts(per_s=5.0, burst=20, clock=clock))
        flood = [await answer(auth, secrets.token_hex(16)) for _ in range(300)]
        reviewed = reviews.calls
        elsewhere = [await answer(auth, secrets.token_hex(16), source="10.0.0.2") for _ in range(3)]
        clock.now += 0.2  # one first contact's worth at 5 a second
        later = [await answer(auth, secrets.token_hex(16)) for _ in range(2)]
        return flood, reviewed, elsewhere, later, reviews.calls

    flood, reviewed, elsewhere, later, calls = asyncio.run(run())
    assert flood == [401] * 20 + [429] * 280 and reviewed == 20
    assert elsewhere == [401] * 3  # another address has its own bucket
    assert later == [401, 429] and calls == 20 + 3 + 1


def test_a_known_token_passes_from_an_address_that_used_up_its_first_contacts() -> None:
    async def run() -> list[int]:
        clock = Clock()
        auth, _ = authenticator(clock, FirstContacts(per_s=1.0, burst=2, clock=clock))
        first = await answer(auth, "good")
        await answer(auth, "forged")  # the burst is spent
        return [first, await answer(auth, "good"), await answer(auth, "forged"), await answer(auth, "new")]

    assert asyncio.run(run()) == [200, 200, 401, 429]  # the refused one is known too: a 401, no review


def test_a_first_contact_beyond_the_limit_says_when_to_retry() -> None:
    clock = Clock()
    limit = FirstContacts(per_s=0.5, burst=2, clock=clock)
    waits = [limit.take("a") for _ in range(3)]
    clock.now += 1.0
    waits.append(limit.take("a"))
    clock.now += 1.0
    waits.append(limit.take("a"))
    assert waits == [0.0, 0.0, 2.0, 1.0, 0.0]


def test_the_addresses_kept_are_bounded_and_full_buckets_go_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_module, "MAX_SOURCES", 3)
    clock = Clock()
    limit = FirstContacts(per_s=1.0, burst=2, clock=clock)
    limit.take("a")
    clock.now += 5.0  # a's bucket is full again
    limit.take("b")
    limit.take("b")
    limit.take("c")
    limit.take("d")  # over the bound: "a" (full, as good as unknown) is dropped, "b" keeps its debt
    assert sorted(limit._buckets) == ["b", "c", "d"] and limit.take("b") == 1.0


def test_the_servers_429_carries_retry_after_closes_the_connection_and_is_counted() -> None:
    def counted() -> float:
        sample = {"reason": "rate-limited"}
        return metrics.REGISTRY.get_sample_value("carbontrack_telemetry_rejected_total", sample) or 0.0

    async def run() -> list[tuple[int, str, str]]:
        clock = Clock()
        auth, _ = authenticator(clock, FirstContacts(per_s=0.25, burst=1, clock=clock))
        server = TelemetryServer(FakeRegistry(), auth, max_body_bytes=1 << 16)  # type: ignore[arg-type]
        async with TestClient(TestServer(server.app)) as client:
            out = []
            for token in ("forged", "another"):
                resp = await client.post(
                    "/v1/telemetry", data=json.dumps(body(1)), headers={"Authorization": f"Bearer {token}"}
                )
                headers = resp.headers
                out.append((resp.status, headers.get("Retry-After", ""), headers.get("Connection", "")))
            return out

    before = counted()
    assert asyncio.run(run()) == [(401, "", "close"), (429, "4", "close")]
    assert counted() == before + 1
