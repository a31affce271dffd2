"""The telemetry writer's coalescing and backoff, driven with a fake patch (no apiserver)."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.state.status_writer import StatusWriter, backoff_s


class FakePatch:
    def __init__(self, fail: list[int] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = list(fail or [])
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, body: dict[str, Any]) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if self.fail:
                raise ApiException(status=self.fail.pop(0))
            self.bodies.append(body)
        finally:
            self.in_flight -= 1


def test_many_marks_within_an_interval_make_one_patch_with_the_newest_state() -> None:
    async def run() -> FakePatch:
        state = {"n": 0}
        fake = FakePatch()
        writer = StatusWriter(lambda: {"n": state["n"]}, fake, interval_s=1.0)
        writer.start()
        for i in range(1, 101):  # all within the first interval (a busy CI machine takes < 1 s)
            state["n"] = i
            writer.mark()
            await asyncio.sleep(0)
        await asyncio.sleep(1.5)
        await writer.stop(flush=True)
        return fake

    fake = asyncio.run(run())
    # the first mark is written at once; the other 99 coalesce into one patch an interval later
    assert len(fake.bodies) == 2 and fake.bodies[-1] == {"n": 100}
    assert fake.max_in_flight == 1


def test_a_failed_patch_is_retried_with_backoff_and_then_succeeds() -> None:
    async def run() -> tuple[FakePatch, list[int]]:
        fake = FakePatch(fail=[500, 503])
        waits: list[int] = []

        def backoff(failures: int) -> float:
            waits.append(failures)
            return 0.01

        writer = StatusWriter(lambda: {"x": 1}, fake, interval_s=0.0, backoff=backoff)
        writer.start()
        writer.mark()
        await asyncio.sleep(0.3)
        await writer.stop(flush=False)
        return fake, waits

    fake, waits = asyncio.run(run())
    assert fake.bodies == [{"x": 1}] and waits == [1, 2]


def test_only_a_body_the_apiserver_took_is_handed_on() -> None:
    """What the exported counters show (state.registry): a failed patch is not in status."""

    async def run() -> list[dict[str, Any]]:
        taken: list[dict[str, Any]] = []
        n = iter(range(1, 10))
        writer = StatusWriter(
            lambda: {"n": next(n)},
            FakePatch(fail=[500]),
            0.0,
            backoff=lambda _: 0.01,
            on_written=taken.append,
        )
        writer.start()
        writer.mark()
        await asyncio.sleep(0.3)
        await writer.stop(flush=False)
        return taken

    assert asyncio.run(run()) == [{"n": 2}]


def test_a_deleted_object_ends_the_writer() -> None:
    async def run() -> tuple[list[str], StatusWriter]:
        gone: list[str] = []
        writer = StatusWriter(lambda: {}, FakePatch(fail=[404]), 0.0, on_gone=lambda: gone.append("gone"))
        writer.start()
        writer.mark()
        await asyncio.sleep(0.1)
        assert writer._task is not None and writer._task.done()
        return gone, writer

    gone, _ = asyncio.run(run())
    assert gone == ["gone"]


def test_stop_with_flush_writes_what_is_pending() -> None:
    async def run() -> FakePatch:
        fake = FakePatch()
        writer = StatusWriter(lambda: {"final": True}, fake, interval_s=60)
        writer.start()
        writer.mark()
        await asyncio.sleep(0.05)  # the first patch goes at once; the next waits for the interval
        writer.mark()
        await writer.stop(flush=True)
        return fake

    assert asyncio.run(run()).bodies == [{"final": True}, {"final": True}]


def test_backoff_doubles_to_thirty_seconds() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 6, 7, 20)] == [1.0, 2.0, 4.0, 30.0, 30.0, 30.0]
