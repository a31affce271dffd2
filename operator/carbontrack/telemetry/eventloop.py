"""The operator's event loop: asyncio's standard one by default, uvloop with CARBONTRACK_EVENT_LOOP=uvloop.

The telemetry server and kopf share one loop, and on it a sidecar's batch is mostly event-loop and TLS
work. Measured with benchmarks/ingest.py (issue 15), alternating runs on this project's 2-core VM:
at 400 kept-alive pods (100-record batches every 10 s) uvloop took 10-20 % less operator CPU per batch
(29,875-31,553 step records per CPU-second against 25,858-28,440); at 8000 pods the CPU per batch was
the same (4.4 ms uvloop, 4.4-4.7 ms asyncio), but in both runs on uvloop some of the 8000 first
contacts outlasted the client's 10 s timeout (85 and 988 of them; none on asyncio), and POST p99 was
380-540 ms against 38-160 ms. The 8000-pod case is the one the fleet figures rest on, so the default
is the standard loop; uvloop (a dependency on Linux, as kopf's own CLI would pick it) is one setting
away for fleets of a few hundred pods per operator. Without uvloop installed, the standard loop, with
a warning.
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
