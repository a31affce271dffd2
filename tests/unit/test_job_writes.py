"""controller.job_writes: a halt or scale the apiserver will not take is a RoundFailed with its words (the
round guard makes it a condition and an Event, and the next round writes it again), never a log line."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from carbontrack.controller import job_writes
from carbontrack.controller.round_guard import RoundFailed
from carbontrack.core.rollout.evaluation import JobScale

JOB = "/apis/batch/v1/namespaces/ns/jobs/j"
DENIED = {
    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
    "message": 'jobs.batch "j" is forbidden: ValidatingAdmissionPolicy \'no-suspend\' denied request',
}  # fmt: skip


def scale_against(status: int, target: JobScale) -> RoundFailed | None:
    async def patch(request: web.Request) -> web.Response:
        if status == 200:
            return web.json_response({"kind": "Job", "metadata": {"name": "j"}})
        return web.json_response({**DENIED, "code": status}, status=status)

    async def main() -> RoundFailed | None:
        app = web.Application()
        app.router.add_patch(JOB, patch)
        async with TestServer(app) as server:
            api = client.ApiClient(client.Configuration(host=str(server.make_url(""))))
            try:
                await job_writes.scale(api, "ns", "j", target, None, False)
            except RoundFailed as exc:
                return exc
            finally:
                await api.close()
        return None

    return asyncio.run(main())


def test_a_halt_the_apiserver_refuses_is_a_round_failure_with_its_words() -> None:
    failed = scale_against(422, JobScale(2, True))
    assert failed is not None and failed.reason == "HaltNotApplied"
    assert str(failed) == (
        "halting the Job j failed, its workers still run: "
        "jobs.batch \"j\" is forbidden: ValidatingAdmissionPolicy 'no-suspend' denied request"
    )


@pytest.mark.parametrize("status", [403, 404, 500])
def test_a_scale_the_apiserver_refuses_is_a_round_failure(status: int) -> None:
    failed = scale_against(status, JobScale(4, False))
    assert failed is not None and failed.reason == "ScaleNotApplied"
    assert str(failed).startswith("scaling the Job j to 4 workers failed: jobs.batch")


def test_a_write_the_apiserver_takes_raises_nothing() -> None:
    assert scale_against(200, JobScale(2, True)) is None
