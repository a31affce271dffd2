"""The telemetry writer: coalesced, rate-limited status patches for one object.

However many batches arrive, the object is patched at most once per interval, never with more than
one patch in flight, and a failed patch is retried with exponential backoff (0.5 s doubling, at most
30 s). The patch is a callable, so tests drive the coalescing and the backoff with a fake and a clock.
`on_written` receives each body the apiserver took: what status holds from then on (the exported
counters read it, state.registry).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("carbontrack.telemetry")

Patch = dict[str, Any]
PatchFn = Callable[[Patch], Awaitable[None]]
MAX_BACKOFF_S = 30.0


def backoff_s(failures: int) -> float:
    return min(MAX_BACKOFF_S, 0.5 * 2.0**failures)


class StatusWriter:
    def __init__(
        self,
        build: Callable[[], Patch],
        patch: PatchFn,
        interval_s: float,
        *,
        on_gone: Callable[[], None] = lambda: None,
        on_written: Callable[[Patch], None] = lambda body: None,
        clock: Callable[[], float] = time.monotonic,
        backoff: Callable[[int], float] = backoff_s,
        name: str = "status-writer",
    ) -> None:
        """`build` makes the body from the live state at write time; `on_gone`: the object was deleted."""
        self.build, self.patch, self.interval_s = build, patch, interval_s
        self.on_gone, self.on_written, self.clock, self.backoff = on_gone, on_written, clock, backoff
        self.dirty = asyncio.Event()
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._name = name

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self._name)

    def mark(self) -> None:
        """New data: it will be in the next patch."""
        self.dirty.set()

    async def _write(self) -> bool:
        """One patch now; False when the object is gone (the loop ends)."""
        self.dirty.clear()
        body = self.build()
        try:
            await self.patch(body)
            self.failures = 0
            self.on_written(body)
        except ApiException as exc:
            if exc.status == 404:
                self.on_gone()
                return False
            self.failures += 1
            self.dirty.set()
            log.warning(
                "status patch failed; retrying", extra={"status": exc.status, "failures": self.failures}
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            self.dirty.set()
            log.exception("status writer error")
        return True

    async def _loop(self) -> None:
        last = -float("inf")
        while True:
            await self.dirty.wait()
            wait = last + self.interval_s - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)  # coalesce: everything that arrives meanwhile goes in one patch
            if not await self._write():
                return
            last = self.clock()
            if self.failures:
                await asyncio.sleep(self.backoff(self.failures))

    async def stop(self, flush: bool) -> None:
        """Stop the loop; with `flush`, write what is pending now (shutdown, or handing over to a peer)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if flush and self.dirty.is_set():
            await self._write()
