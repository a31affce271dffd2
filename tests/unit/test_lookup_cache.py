"""The telemetry auth caches: one apiserver call per key however many callers, failures not kept."""

from __future__ import annotations

import asyncio

from carbontrack.telemetry.auth import LookupCache


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


def test_a_caller_arriving_as_a_lookup_lands_shares_it() -> None:
    """The race a cache must not have: were the flight dropped when the lookup finishes but the result
    stored only when its waiters next run, a caller in between would start a second lookup. Here the
    second caller starts on the loop turn the lookup lands."""
    calls = 0
    late: list[asyncio.Future[str]] = []

    async def main() -> list[str]:
        cache: LookupCache[str, str] = LookupCache(60)
        loop = asyncio.get_running_loop()

        async def lookup() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0)
            # runs before the flight's own done callbacks: the new caller's first step comes after the
            # flight is dropped and before the first caller resumes to store the result
            loop.call_soon(lambda: late.append(asyncio.ensure_future(cache.get("job", lookup))))
            return "owner"

        first = await cache.get("job", lookup)
        await asyncio.sleep(0.01)
        return [first, await late[0]]

    assert asyncio.run(main()) == ["owner", "owner"]
    assert calls == 1


def test_an_entry_is_refreshed_ahead_of_expiry_while_callers_keep_the_old_value() -> None:
    """TokenReviews of 8000 pods would expire together: an entry past its (jittered) refresh point is
    looked up again in the background while callers get the cached value without waiting."""
    now = [0.0]
    calls = 0

    async def lookup() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return calls

    async def main() -> list[int]:
        cache: LookupCache[str, int] = LookupCache(100, refresh_after=(0.5, 0.8), clock=lambda: now[0])
        seen = [await cache.get("t", lookup)]
        now[0] = 40.0  # before any refresh point
        seen.append(await cache.get("t", lookup))
        now[0] = 85.0  # past every refresh point, before expiry: the old value, a refresh behind it
        seen.append(await cache.get("t", lookup))
        await asyncio.sleep(0.01)
        seen.append(await cache.get("t", lookup))  # the refreshed value
        return seen

    assert asyncio.run(main()) == [1, 1, 1, 2]
    assert calls == 2


def test_refresh_points_are_spread_between_their_bounds() -> None:
    cache: LookupCache[str, int] = LookupCache(300, refresh_after=(0.6, 0.9))
    points = {cache._refresh_at(0.0) for _ in range(200)}
    assert len(points) > 150 and min(points) >= 180.0 and max(points) <= 270.0
