"""Grid intensity: static table with named source; live providers against local servers in their formats."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from carbontrack.intensity.providers import ElectricityMaps, IntensityResolver, WattTime
from carbontrack.intensity.static import REGION_ZONE, WORLD_AVERAGE_G_PER_KWH, lookup, zone_for, zone_table


def test_static_table_by_country_and_cloud_region() -> None:
    """Figures as checked by hand against Our World in Data's Ember table (2023) and eGRID2023."""
    assert lookup("DE") == lookup("de")
    assert (lookup("DE").g_per_kwh, lookup("DE").source) == (380.9, "static:ember-2023")
    assert [lookup(z).g_per_kwh for z in ("FR", "PL", "SE", "IN", "CN", "BR", "CA")] == [
        56.0,
        661.9,
        40.7,
        713.4,
        582.3,
        98.3,
        170.0,
    ]
    assert zone_for(None, "eu-central-1") == "DE"
    assert lookup(zone_for(None, "francecentral")).g_per_kwh == 56.0
    assert zone_for("SE", "eu-central-1") == "SE"  # the spec wins over the node's region


def test_us_states_and_nordic_bidding_zones() -> None:
    virginia = lookup(zone_for(None, "us-east-1"))
    assert (virginia.zone, virginia.source) == ("US-VA", "static:epa-egrid-2023")
    assert virginia.g_per_kwh == 244.8
    assert lookup("NO-NO4").source == "static:entsoe-2025"


def test_every_mapped_cloud_region_has_a_figure() -> None:
    missing = {region: zone for region, zone in REGION_ZONE.items() if zone not in zone_table()}
    assert not missing


def test_unknown_zone_falls_back_to_world_average_and_says_so() -> None:
    got = lookup("XX-NOWHERE")
    assert got.g_per_kwh == WORLD_AVERAGE_G_PER_KWH and "world-average" in got.source


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_electricitymaps_latest_with_auth_token_and_cache() -> None:
    calls: list[str] = []

    async def latest(req: web.Request) -> web.Response:
        calls.append(req.headers.get("auth-token", ""))
        return web.json_response(
            {"zone": req.query["zone"], "carbonIntensity": 302, "datetime": "2026-11-22T10:00Z"}
        )

    async def main() -> tuple[float, str, float]:
        runner, url = await serve({"/v3/carbon-intensity/latest": latest})
        clock = [0.0]
        r = IntensityResolver(ElectricityMaps("k3y", base_url=url), ttl_s=60, clock=lambda: clock[0])
        try:
            a = await r.current("DE")
            clock[0] = 30
            b = await r.current("DE")
            return a.g_per_kwh, a.source, b.g_per_kwh
        finally:
            await r.close()
            await runner.cleanup()

    assert run(main()) == (302.0, "electricitymaps", 302.0)
    assert calls == ["k3y"]  # the second read came from the cache


def test_provider_errors_and_timeouts_fall_back_with_backoff() -> None:
    hits = [0]

    async def broken(req: web.Request) -> web.Response:
        hits[0] += 1
        return web.json_response({"error": "quota"}, status=429)

    async def slow(req: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({"carbonIntensity": 1})

    async def main() -> list[str]:
        runner, url = await serve(
            {"/v3/carbon-intensity/latest": broken, "/slow/v3/carbon-intensity/latest": slow}
        )
        clock = [0.0]
        sources = []
        r = IntensityResolver(ElectricityMaps("k", base_url=url), clock=lambda: clock[0])
        s = IntensityResolver(
            ElectricityMaps("k", base_url=url + "/slow"), timeout_s=0.2, clock=lambda: clock[0]
        )
        try:
            sources.append((await r.current("DE")).source)
            sources.append((await r.current("DE")).source)  # within backoff: no second call
            sources.append((await s.current("FR")).source)
            assert (await s.current("FR")).g_per_kwh == 56
        finally:
            await r.close()
            await s.close()
            await runner.cleanup()
        return sources

    assert run(main()) == ["static:ember-2023:fallback"] * 3
    assert hits[0] == 1


def test_watttime_login_then_forecast_in_lbs_per_mwh() -> None:
    async def login(req: web.Request) -> web.Response:
        assert req.headers["Authorization"].startswith("Basic ")
        return web.json_response({"token": "tok"})

    async def forecast(req: web.Request) -> web.Response:
        assert req.headers["Authorization"] == "Bearer tok" and req.query["signal_type"] == "co2_moer"
        return web.json_response(
            {"data": [{"point_time": "2026-11-22T10:00:00Z", "value": 1000.0}], "meta": {}}
        )

    async def main() -> tuple[float, str]:
        runner, url = await serve({"/login": login, "/v3/forecast": forecast})
        r = IntensityResolver(WattTime("u", "p", base_url=url))
        try:
            got = await r.current("CAISO_NORTH")
            return got.g_per_kwh, got.source
        finally:
            await r.close()
            await runner.cleanup()

    value, source = run(main())
    assert value == pytest.approx(453.59237) and "marginal" in source
