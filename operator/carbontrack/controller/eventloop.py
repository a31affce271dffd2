"""The operator's event loop: uvloop where it is installed (a dependency on Linux), asyncio's otherwise.

The telemetry server and kopf share one loop, and on it a sidecar's batch is mostly event-loop and TLS
work: with uvloop (libuv, and TLS record handling in C) the operator's CPU per batch fell by 22 % and
the HTTPS floor (a handler that only reads the body) by 27 % (benchmarks/ingest.py, issue 15). kopf's
own CLI picks uvloop the same way; `kopf.run()` takes the loop it is given. CARBONTRACK_EVENT_LOOP=asyncio
keeps the standard loop (a debugging aid: asyncio's debug mode and its tracebacks are richer).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

log = logging.getLogger("carbontrack.operator")

LoopKind = Literal["uvloop", "asyncio"]


def runner(kind: LoopKind = "uvloop") -> asyncio.Runner:
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
