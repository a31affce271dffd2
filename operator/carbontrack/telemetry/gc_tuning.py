"""The operator's garbage-collector settings, applied once start-up has allocated what lives forever.

* `gc.freeze()` after start-up: modules, models, kopf's and the client's objects move out of the
  collector's sight, so a full collection does not walk them.
* A first-generation threshold of 20,000 allocations instead of 700: a batch allocates two objects
  per step record while it is parsed, and they live until the batch is folded in, so at 700 a
  collection runs in the middle of nearly every batch and promotes its records to older generations,
  whose collections then walk everything. The older generations keep their default ratios (10, 10).
  The effect on collector time and POST latency is in benchmarks/RESULTS.md ("Telemetry ingest").
* After a flood of connections has drained (telemetry.connections), a collection and glibc's
  `malloc_trim` hand the freed pages back to the system, which the allocator would otherwise keep
  resident for reuse (benchmarks/connection_flood.py measures it).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc

GEN0_THRESHOLD = 20_000


def settle() -> None:
    """Collect, freeze what is alive now, and set the thresholds: call once, after start-up."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


TRIM_DELAY_S = 1.0
"""The trim follows the last closes of a flood by this much, so that their memory is free by then."""
_trim: asyncio.TimerHandle | None = None


def release_free_memory() -> bool:
    """Collect, then hand the allocator's free pages back to the system (glibc's `malloc_trim`): after a
    flood of connections the freed memory would otherwise stay resident, the allocator keeping it for
    reuse. True when pages went back; False when none could, or the C library is not glibc."""
    global _trim
    _trim = None
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.malloc_trim(0))


def release_free_memory_soon() -> None:
    """`release_free_memory` in TRIM_DELAY_S on the running loop, once however often it is asked."""
    global _trim
    if _trim is None:
        _trim = asyncio.get_running_loop().call_later(TRIM_DELAY_S, release_free_memory)
