"""Live grid-intensity providers, cached, with backoff and fallback to the static table.

Electricity Maps: GET {base}/v3/carbon-intensity/latest?zone=Z with header `auth-token`; answers
{"zone", "carbonIntensity" (gCO2e/kWh, lifecycle), "datetime", ...}.
WattTime v3: GET {base}/login with HTTP basic auth -> {"token"}; then
GET {base}/v3/forecast?region=R&signal_type=co2_moer&horizon_hours=0 with the bearer token ->
{"data": [{"point_time", "value" (lbs CO2/MWh)}], "meta": {...}}. WattTime's figure is the *marginal*
operating emissions rate, not an average: the source recorded in status says which.
Forecasts (carbon-aware start, core/scheduling/deferral.py): Electricity Maps
GET {base}/v3/carbon-intensity/forecast?zone=Z -> {"zone", "forecast": [{"carbonIntensity", "datetime"}],
"updatedAt"}; WattTime the same /v3/forecast with horizon_hours=24. A provider whose forecast cannot be
read gives None: the deferral then waits on the intensity now, up to its deadline.
Every figure carries its source; a provider that fails is retried with backoff while the static
value stands in, and the status says `fallback`.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from carbontrack.core.scheduling.deferral import ForecastPoint
from carbontrack.intensity.static import Intensity, lookup

log = logging.getLogger("carbontrack.intensity")
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237


class ProviderError(Exception):
    pass


class Provider(Protocol):
    name: str

    async def fetch(self, session: aiohttp.ClientSession, zone: str) -> Intensity: ...

    async def forecast(self, session: aiohttp.ClientSession, zone: str) -> tuple[ForecastPoint, ...]: ...


def _forecast_time(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise ProviderError(f"a forecast time must be a string, got {value!r:.50}")
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ProviderError(f"a forecast time is not ISO 8601: {value!r:.50}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _forecast_points(rows: object, time_key: str, value_key: str, scale: float) -> tuple[ForecastPoint, ...]:
    if not isinstance(rows, list) or not rows:
        raise ProviderError("the forecast holds no points")
    out = []
    for row in rows[:1000]:
        value = row.get(value_key) if isinstance(row, dict) else None
        if not isinstance(value, int | float) or not 0 <= value * scale < 5000:
            raise ProviderError(f"a forecast point has no usable {value_key}: {row!r:.100}")
        out.append(ForecastPoint(_forecast_time(row.get(time_key)), float(value) * scale))
    return tuple(out)


@dataclass
class ElectricityMaps:
    api_key: str
    base_url: str = "https://api.electricitymap.org"
    name: str = "electricitymaps"

    async def fetch(self, session: aiohttp.ClientSession, zone: str) -> Intensity:
        url = f"{self.base_url}/v3/carbon-intensity/latest"
        async with session.get(url, params={"zone": zone}, headers={"auth-token": self.api_key}) as resp:
            if resp.status != 200:
                raise ProviderError(f"electricitymaps answered {resp.status}: {(await resp.text())[:200]}")
            body = await resp.json()
        value = body.get("carbonIntensity")
        if not isinstance(value, int | float) or not 0 <= value < 5000:
            raise ProviderError(f"electricitymaps gave no usable carbonIntensity: {body!r:.200}")
        return Intensity(float(value), str(body.get("zone", zone)), "electricitymaps")

    async def forecast(self, session: aiohttp.ClientSession, zone: str) -> tuple[ForecastPoint, ...]:
        url = f"{self.base_url}/v3/carbon-intensity/forecast"
        async with session.get(url, params={"zone": zone}, headers={"auth-token": self.api_key}) as resp:
            if resp.status != 200:
                raise ProviderError(f"electricitymaps forecast answered {resp.status}")
            body = await resp.json()
        return _forecast_points(
            body.get("forecast") if isinstance(body, dict) else None, "datetime", "carbonIntensity", 1.0
        )


@dataclass
class WattTime:
    username: str
    password: str
    base_url: str = "https://api.watttime.org"
    name: str = "watttime"
    _token: str = ""
    _token_at: float = 0.0

    async def _login(self, session: aiohttp.ClientSession) -> str:
        if self._token and time.monotonic() - self._token_at < 25 * 60:  # tokens last 30 minutes
            return self._token
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        async with session.get(f"{self.base_url}/login", headers={"Authorization": f"Basic {basic}"}) as resp:
            if resp.status != 200:
                raise ProviderError(f"watttime login answered {resp.status}")
            self._token = str((await resp.json())["token"])
        self._token_at = time.monotonic()
        return self._token

    async def _forecast_body(
        self, session: aiohttp.ClientSession, zone: str, horizon_hours: int, what: str
    ) -> Any:
        """/v3/forecast of the zone's marginal signal: horizon 0 is the figure now. A 401 drops the token,
        so the next call logs in again."""
        token = await self._login(session)
        params = {"region": zone, "signal_type": "co2_moer", "horizon_hours": str(horizon_hours)}
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{self.base_url}/v3/forecast", params=params, headers=headers) as resp:
            if resp.status == 401:
                self._token = ""
            if resp.status != 200:
                detail = f": {(await resp.text())[:200]}" if horizon_hours == 0 else ""
                raise ProviderError(f"{what} answered {resp.status}{detail}")
            return await resp.json()

    async def fetch(self, session: aiohttp.ClientSession, zone: str) -> Intensity:
        body = await self._forecast_body(session, zone, 0, "watttime")
        try:
            lbs_per_mwh = float(body["data"][0]["value"])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ProviderError(f"watttime gave no usable value: {body!r:.200}") from exc
        return Intensity(lbs_per_mwh * LBS_PER_MWH_TO_G_PER_KWH, zone, "watttime:co2_moer(marginal)")

    async def forecast(self, session: aiohttp.ClientSession, zone: str) -> tuple[ForecastPoint, ...]:
        body = await self._forecast_body(session, zone, 24, "watttime forecast")
        rows = body.get("data") if isinstance(body, dict) else None
        return _forecast_points(rows, "point_time", "value", LBS_PER_MWH_TO_G_PER_KWH)


@dataclass
class _CachedFigure:
    value: Intensity
    fetched_at: float
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class IntensityResolver:
    """Current intensity per zone: live when it can, cached for ttl_s, static when it cannot."""

    provider: Provider | None = None
    ttl_s: float = 300.0
    timeout_s: float = 5.0
    max_backoff_s: float = 600.0
    clock: object = time.monotonic
    _cache: dict[str, _CachedFigure] = field(default_factory=dict)
    _forecasts: dict[str, tuple[float, tuple[ForecastPoint, ...] | None]] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    def _now(self) -> float:
        return float(self.clock())  # type: ignore[operator]

    async def current(self, zone: str) -> Intensity:
        if self.provider is None:
            return lookup(zone)
        now = self._now()
        entry = self._cache.get(zone)
        if entry and (now - entry.fetched_at < self.ttl_s or now < entry.retry_at):
            return entry.value
        try:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            value = await self.provider.fetch(self._session, zone)
            self._cache[zone] = _CachedFigure(value, now)
            return value
        except (TimeoutError, ProviderError, aiohttp.ClientError, ValueError, KeyError) as exc:
            failures = (entry.failures if entry else 0) + 1
            fallback = lookup(zone)
            stale = entry.value if entry and not entry.value.source.endswith("fallback") else None
            value = stale or Intensity(
                fallback.g_per_kwh, fallback.zone, f"{fallback.source}:fallback", fallback.known_zone
            )
            delay = min(self.max_backoff_s, 5.0 * 2 ** min(failures, 10))
            self._cache[zone] = _CachedFigure(
                value, entry.fetched_at if entry else 0.0, failures, now + delay
            )
            log.warning(
                "intensity provider failed; using %s",
                value.source,
                extra={
                    "provider": self.provider.name,
                    "zone": zone,
                    "error": str(exc)[:200],
                    "retryInS": delay,
                },
            )
            return value

    async def forecast(self, zone: str) -> tuple[ForecastPoint, ...] | None:
        """The provider's forecast for the zone, cached like the figure now; None without a live provider
        or when it cannot be read (logged, retried after the cache time)."""
        if self.provider is None:
            return None
        now = self._now()
        cached = self._forecasts.get(zone)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        try:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            points: tuple[ForecastPoint, ...] | None = await self.provider.forecast(self._session, zone)
        except (
            TimeoutError,
            ProviderError,
            aiohttp.ClientError,
            ValueError,
            KeyError,
            AttributeError,
        ) as exc:
            log.warning(
                "intensity forecast failed",
                extra={"provider": self.provider.name, "zone": zone, "error": str(exc)[:200]},
            )
            points = None
        self._forecasts[zone] = (now, points)
        return points

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
