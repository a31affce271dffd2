"""state.kube_writes: a write whose answer is unread still raises exactly what the client would."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.state.kube_writes import write

JOBS = "/apis/batch/v1/namespaces/ns/jobs"
STATUS = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists",
          "message": 'jobs.batch "j" already exists', "code": 409}  # fmt: skip


def run(answer: int) -> tuple[ApiException | None, ApiException | None, list[dict[str, object]]]:
    """(what write raised, what the client itself raised for the same answer, bodies the server got)."""
    got: list[dict[str, object]] = []

    async def create(request: web.Request) -> web.Response:
        got.append(json.loads(await request.read()))
        if answer == 201:
            return web.json_response({"kind": "Job", "metadata": {"name": "j"}}, status=201)
        return web.json_response(STATUS, status=answer, reason="Conflict")

    async def main() -> tuple[ApiException | None, ApiException | None]:
        app = web.Application()
        app.router.add_post(JOBS, create)
        async with TestServer(app) as server:
            api = client.ApiClient(client.Configuration(host=str(server.make_url(""))))
            batch = client.BatchV1Api(api)
            job = {"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": []}}}}
            ours = theirs = None
            try:
                await write(batch.create_namespaced_job, "ns", job)
            except ApiException as exc:
                ours = exc
            try:
                await batch.create_namespaced_job("ns", job)
            except ApiException as exc:
                theirs = exc
            await api.close()
            return ours, theirs

    ours, theirs = asyncio.run(main())
    return ours, theirs, got


def test_a_write_that_succeeds_returns_nothing_and_sends_the_body() -> None:
    ours, theirs, got = run(201)
    assert ours is None and theirs is None
    assert got[0] == got[1] and got[0]["metadata"] == {"name": "j"}


@pytest.mark.parametrize("answer", [409, 422, 429, 500])
def test_a_refusal_is_the_client_librarys_own_exception(answer: int) -> None:
    ours, theirs, _ = run(answer)
    assert ours is not None and theirs is not None
    assert (ours.status, ours.reason, json.loads(ours.body)) == (theirs.status, theirs.reason, STATUS)


def test_writes_share_one_kept_alive_connection() -> None:
    """An answer left unread makes aiohttp close the connection, so every write to the apiserver would
    pay a TLS handshake (benchmarks/RESULTS.md has what that cost the reconcile)."""
    peers: list[object] = []

    async def create(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response(
            {"kind": "Job", "metadata": {"name": "j", "padding": "x" * 100_000}}, status=201
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_post(JOBS, create)
        async with TestServer(app) as server:
            api = client.ApiClient(client.Configuration(host=str(server.make_url(""))))
            batch = client.BatchV1Api(api)
            for _ in range(3):
                await write(batch.create_namespaced_job, "ns", {"metadata": {"name": "j"}})
            await api.close()

    asyncio.run(main())
    assert len(peers) == 3 and len(set(peers)) == 1, peers
