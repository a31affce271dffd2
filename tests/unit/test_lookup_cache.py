"""The telemetry auth caches: one apiserver call per key however many callers, failures not kept."""

from __future__ import annotations

import asyncio

from carbontrack.controller.auth import LookupCache


def test_concurrent_callers_share_one_lookup_and_later_ones_hit_the_cache() -> None:
    calls = 0

    async def lookup() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return "owner"

    async def main() -> list[str]:
        cache: LookupCache[str, str] = LookupCache(60)
        first = await asyncio.gather(*(cache.get("pod", lookup) for _ in range(50)))
        return [*first, await cache.get("pod", lookup)]

    assert asyncio.run(main()) == ["owner"] * 51 and calls == 1


def test_a_failed_lookup_reaches_every_waiter_and_is_not_kept() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise ConnectionError("apiserver away")
        return "owner"

    async def main() -> tuple[list[object], str]:
        cache: LookupCache[str, str] = LookupCache(60)
        failed = await asyncio.gather(*(cache.get("pod", flaky) for _ in range(3)), return_exceptions=True)
        return failed, await cache.get("pod", flaky)

    failed, later = asyncio.run(main())
    assert all(isinstance(f, ConnectionError) for f in failed) and later == "owner" and calls == 2


def test_an_expired_entry_is_looked_up_again() -> None:
    async def main() -> int:
        calls = 0

        async def lookup() -> int:
            nonlocal calls
            calls += 1
            return calls

        cache: LookupCache[str, int] = LookupCache(0)
        await cache.get("k", lookup)
        return await cache.get("k", lookup)

    assert asyncio.run(main()) == 2
