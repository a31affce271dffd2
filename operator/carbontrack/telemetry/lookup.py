"""Caches and limits in front of the apiserver: lookups kept for a while and shared while in flight,
and a token bucket per client address for requests that would cost a lookup.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

MAX_ENTRIES = 100_000
"""Bound on each cache, against a flood of garbage tokens or names."""
MAX_MISSES = 10_000
"""Bound on each cache's misses (refused tokens), apart from its entries."""

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LookupCache(Generic[K, V]):
    """Results kept for `ttl_s`, and one lookup in flight per key: a sidecar's retries, or all the pods
    of a Job on first contact, share one apiserver call. A failed lookup is not kept; every caller
    waiting on it gets its exception.

    The flight stores its result itself, in the same callback that drops it, so a caller always finds
    the flight or its result: were the result stored by a waiter on resuming, a caller arriving in
    between would find neither and look up again. With `refresh_after=(lo, hi)` an entry older than a
    point drawn in [lo, hi) x ttl_s is looked up again in the background while callers keep getting it:
    entries made together (8000 pods' tokens at start) neither expire nor refresh together.
    """

    def __init__(
        self,
        ttl_s: float,
        refresh_after: tuple[float, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        miss_ttl_s: float | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.refresh_after = refresh_after
        self.clock = clock
        self.miss_ttl_s = miss_ttl_s
        """With it, a None result (a miss: a refused token) is kept this long, never refreshed ahead, and
        apart from the values, under its own bound: misses cannot push out the entries that pass."""
        self._entries: dict[K, tuple[float, V, float]] = {}
        """key -> (looked up at, value, refresh at)"""
        self._misses: dict[K, tuple[float, V]] = {}
        """key -> (looked up at, None), for None results when miss_ttl_s is set"""
        self._flights: dict[K, asyncio.Future[V]] = {}
        self._rng = random.Random()

    def _refresh_at(self, at: float) -> float:
        if self.refresh_after is None:
            return float("inf")
        return at + self.ttl_s * self._rng.uniform(*self.refresh_after)

    def _start_lookup(self, key: K, lookup: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        started = self.clock()
        flight = self._flights[key] = asyncio.ensure_future(lookup())

        def keep_result(done: asyncio.Future[V]) -> None:
            if self._flights.get(key) is done:
                del self._flights[key]
            if done.cancelled() or done.exception() is not None:
                return  # not kept (and the exception is retrieved: a background refresh has no waiter)
            value = done.result()
            if value is None and self.miss_ttl_s is not None:
                self._entries.pop(key, None)
                if len(self._misses) >= MAX_MISSES:
                    self._misses.clear()
                self._misses[key] = (started, value)
                return
            self._misses.pop(key, None)
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (started, value, self._refresh_at(started))

        flight.add_done_callback(keep_result)
        return flight

    def _miss(self, key: K, now: float) -> tuple[float, V] | None:
        miss = self._misses.get(key)
        fresh = miss is not None and self.miss_ttl_s is not None and now - miss[0] < self.miss_ttl_s
        return miss if fresh else None

    def knows(self, key: K) -> bool:
        """`get(key)` would cost no lookup: its value or miss is fresh, or its lookup is in flight."""
        now = self.clock()
        hit = self._entries.get(key)
        fresh = hit is not None and now - hit[0] < self.ttl_s
        return fresh or key in self._flights or self._miss(key, now) is not None

    def age(self, key: K) -> float:
        """Seconds since `key`'s kept value was looked up (infinite when none is kept)."""
        hit = self._entries.get(key)
        return self.clock() - hit[0] if hit else float("inf")

    async def get(self, key: K, lookup: Callable[[], Awaitable[V]], max_age_s: float | None = None) -> V:
        """`key`'s value, looked up when none is kept, or the kept one is older than `ttl_s` (or than
        `max_age_s`, for a caller who knows the kept value may be stale)."""
        now = self.clock()
        if miss := self._miss(key, now):
            return miss[1]
        hit = self._entries.get(key)
        if hit and now - hit[0] < min(self.ttl_s, max_age_s if max_age_s is not None else self.ttl_s):
            if now >= hit[2] and key not in self._flights:
                self._start_lookup(key, lookup)  # refresh ahead of expiry; this caller does not wait for it
            return hit[1]
        flight = self._flights.get(key) or self._start_lookup(key, lookup)
        return await asyncio.shield(flight)  # a caller that goes away does not cancel the others'


MAX_SOURCES = 65_536
"""Bound on the addresses FirstContacts tracks; an address whose bucket is full again is dropped first."""


class FirstContacts:
    """A token bucket per client address for first contacts: requests whose token the cache does not
    know, each of which costs a TokenReview. `burst` at once, then `per_s`; so random tokens from one
    address cost the apiserver at most that, while a pod makes one first contact per token (its sidecar
    keeps the token for its lifetime). Clients behind one address (a mesh's proxy, hostNetwork pods)
    share a bucket."""

    def __init__(self, per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s, self.burst, self.clock = per_s, max(burst, 1), clock
        self._buckets: dict[str, tuple[float, float]] = {}
        """address -> (tokens left, when counted)"""

    def take(self, source: str) -> float:
        """0 when `source` may make a first contact now (and it is counted); else the seconds until it may."""
        now = self.clock()
        left, at = self._buckets.get(source, (float(self.burst), now))
        left = min(float(self.burst), left + (now - at) * self.per_s)
        if left < 1:
            self._buckets[source] = (left, now)
            return (1 - left) / self.per_s if self.per_s > 0 else float("inf")
        if source not in self._buckets and len(self._buckets) >= MAX_SOURCES:
            self._forget_full(now)
        self._buckets[source] = (left - 1, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop the addresses whose bucket has filled again (as good as unknown); all, if none has."""
        full = [a for a, (left, at) in self._buckets.items() if left + (now - at) * self.per_s >= self.burst]
        for address in full or list(self._buckets):
            del self._buckets[address]
