"""Which grid intensity applies to a job: its zone (spec, else its pod's node's region) and the figure
(a spec override, a live provider with the key from a Secret, else the static table).

Owns the live providers' HTTP sessions: `close()` at shutdown and when a replica becomes a standby.
"""

from __future__ import annotations

import base64
import logging

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.controller.config import OperatorConfig
from carbontrack.core.deferral import Grid
from carbontrack.intensity.providers import ElectricityMaps, IntensityResolver, WattTime
from carbontrack.intensity.static import Intensity, lookup, zone_for

log = logging.getLogger("carbontrack.intensity")


def live_provider(spec: CarbonTrackedJobSpec, config: OperatorConfig) -> tuple[str | None, str | None]:
    """The live provider and its key's Secret for a job: the spec's, else the operator's defaults.

    (None, None) means the static table: asked for, or a live provider without a key to call it with.
    """
    wanted = spec.carbon.intensity
    provider = wanted.provider or config.intensity_provider or "static"
    secret = wanted.secret_name or config.intensity_secret or None
    if provider == "static" or secret is None:
        return None, None
    return provider, secret


def initial_intensity(spec: CarbonTrackedJobSpec, config: OperatorConfig) -> Intensity:
    """The figure before any pod has reported (and the override, which never changes)."""
    zone = zone_for(spec.carbon.zone, config.default_zone or None)
    if spec.carbon.intensity.grams_per_kwh is not None:
        return Intensity(spec.carbon.intensity.grams_per_kwh, zone, "override")
    return lookup(zone)


class IntensityResolution:
    """Zone and intensity lookups for every job, with the node regions and providers they need."""

    def __init__(self, api: client.ApiClient, config: OperatorConfig) -> None:
        self.config = config
        self.core = client.CoreV1Api(api)
        self.static = IntensityResolver()
        self._resolvers: dict[tuple[str, str, str], IntensityResolver] = {}
        self._regions: dict[tuple[str, str], str] = {}
        """(namespace, job) -> the region of the node its first reporting pod ran on ('' unknown)."""

    async def current(
        self, namespace: str, job: str, spec: CarbonTrackedJobSpec, pod: str
    ) -> Intensity | None:
        """The intensity now for a batch from `pod`; None: keep the figure the job has (an override)."""
        if spec.carbon.intensity.grams_per_kwh is not None:
            return None
        region = await self._region(namespace, job, spec, pod)
        zone = zone_for(spec.carbon.zone, region or self.config.default_zone or None)
        resolver = await self._resolver(namespace, spec)
        return await resolver.current(zone)

    async def _region(self, namespace: str, job: str, spec: CarbonTrackedJobSpec, pod: str) -> str:
        if spec.carbon.zone:
            return ""
        key = (namespace, job)
        if key not in self._regions:
            try:
                p = await self.core.read_namespaced_pod(pod, namespace)
                region = ""
                if p.spec.node_name:
                    node = await self.core.read_node(p.spec.node_name)
                    region = (node.metadata.labels or {}).get("topology.kubernetes.io/region", "")
                self._regions[key] = region
            except ApiException:
                self._regions[key] = ""
        return self._regions[key]

    async def _resolver(self, namespace: str, spec: CarbonTrackedJobSpec) -> IntensityResolver:
        provider, secret = live_provider(spec, self.config)
        if provider is None or secret is None:
            return self.static
        key = (namespace, provider, secret)
        if key not in self._resolvers:
            # a job's own Secret is in its namespace (the chart's RBAC and admission policy allow it by
            # name); the operator-wide key is in the operator's
            own = spec.carbon.intensity.secret_name is not None
            where = namespace if own else (self.config.namespace or namespace)
            data = (await self.core.read_namespaced_secret(secret, where)).data or {}

            def field_(name: str) -> str:
                return base64.b64decode(data.get(name, "")).decode()

            c = self.config
            live = (
                ElectricityMaps(field_("apiKey"), c.electricitymaps_url)
                if provider == "electricitymaps"
                else WattTime(field_("username"), field_("password"), c.watttime_url)
            )
            self._resolvers[key] = IntensityResolver(live, ttl_s=c.intensity_ttl_s)
        return self._resolvers[key]

    async def grid(self, namespace: str, spec: CarbonTrackedJobSpec, zone: str | None = None) -> Grid:
        """The zone's intensity now and its forecast: `zone` when the job ran already (its pods' node region
        resolved it), else the spec's, else the operator's default. A Secret that cannot be read counts as
        an unreachable provider: the job starts rather than waits on it."""
        zone = zone or zone_for(spec.carbon.zone, self.config.default_zone or None)
        override = spec.carbon.intensity.grams_per_kwh
        if override is not None:
            return Grid(override, "override", live=False, zone=zone)
        try:
            resolver = await self._resolver(namespace, spec)
        except ApiException as exc:
            fallback = lookup(zone)
            source = f"{fallback.source}:fallback (provider key unreadable: {exc.status})"
            return Grid(fallback.g_per_kwh, source, live=True, reachable=False, zone=zone)
        now = await resolver.current(zone)
        if resolver.provider is None:
            return Grid(now.g_per_kwh, now.source, live=False, zone=zone)
        if now.source.endswith("fallback") or not now.known_zone:
            return Grid(now.g_per_kwh, now.source, live=True, reachable=False, zone=zone)
        return Grid(now.g_per_kwh, now.source, live=True, forecast=await resolver.forecast(zone), zone=zone)

    def forget(self, namespace: str, job: str) -> None:
        self._regions.pop((namespace, job), None)

    async def close(self) -> None:
        """Close the providers' HTTP sessions (they hold connections and an event-loop reference)."""
        resolvers, self._resolvers = list(self._resolvers.values()), {}
        for resolver in resolvers:
            await resolver.close()
        self._regions.clear()
