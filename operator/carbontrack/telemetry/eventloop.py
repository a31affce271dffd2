"""The operator's event loop: asyncio's standard one by default, uvloop with CARBONTRACK_EVENT_LOOP=uvloop.

The telemetry server and kopf share one loop, and on it a sidecar's batch is mostly event-loop and TLS
work. The standard loop is the default because it keeps first contacts within the client timeout at a
fleet of thousands of pods per operator, where uvloop does not; uvloop costs less CPU per batch at a few
hundred pods and is one setting away (a dependency on Linux, as kopf's own CLI would pick it; figures in
benchmarks/RESULTS.md, "Telemetry ingest"). Without uvloop installed, the standard loop runs, with a
warning.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

log = logging.getLogger("carbontrack.operator")

LoopKind = Literal["uvloop", "asyncio"]


def runner(kind: LoopKind = "asyncio") -> asyncio.Runner:
    """An asyncio.Runner on uvloop when asked for and importable, else on the standard loop."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: the operator runs on asyncio's standard event loop")
        else:
            return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """`uvloop` or `asyncio`, for the start-up log."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
