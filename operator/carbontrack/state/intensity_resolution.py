"""Which grid intensity applies to a job: its zone (spec, else its pod's node's region) and the figure
(a spec override, a live provider with the key from a Secret, else the static table).

Owns the live providers' HTTP sessions: `close()` at shutdown and when a replica becomes a standby.

A key's Secret the operator cannot read (a 403 where the chart's RBAC does not cover it, a 404) is not
read again on every batch: the job uses the static table's figure marked `:fallback` (the design's
fallback), the read is retried with backoff (30 s doubling, at most 10 min), and `problem()` gives the
judgement the words for the IntensityResolved=False condition.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.scheduling.deferral import Grid
from carbontrack.intensity.providers import ElectricityMaps, IntensityResolver, WattTime
from carbontrack.intensity.static import Intensity, lookup, zone_for
from carbontrack.state.config import OperatorConfig

log = logging.getLogger("carbontrack.intensity")
SECRET_RETRY_S = 30.0
SECRET_MAX_RETRY_S = 600.0


@dataclass(frozen=True)
class SecretProblem:
    failures: int
    retry_at: float
    """Monotonic time before which the Secret is not read again."""
    message: str


def secret_problem_message(provider: str, namespace: str, secret: str, exc: ApiException) -> str:
    """What a person reads in the IntensityResolved condition: what failed, what is used, what to do."""
    why = {
        403: "the operator may not read it (the chart's RBAC reads only the Secrets named in "
        "carbon.jobSecretNames, and carbon.secretName in the operator's namespace)",
        404: "it does not exist",
    }.get(exc.status or 0, f"the apiserver answered {exc.status} {exc.reason}")
    return (
        f"cannot read Secret {namespace}/{secret} with the {provider} API key: {why}; emissions use the "
        "static table's figure (source ...:fallback) until it can be read"
    )


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

    def __init__(
        self, api: client.ApiClient, config: OperatorConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.clock = clock
        self.core = client.CoreV1Api(api)
        self._problems: dict[tuple[str, str, str], SecretProblem] = {}
        """(namespace, provider, secret) -> why its Secret could not be read, and when to try again."""
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
        if resolver is None:  # the key's Secret is unreadable: the static figure, marked as a fallback
            static = lookup(zone)
            return Intensity(static.g_per_kwh, static.zone, f"{static.source}:fallback", static.known_zone)
        return await resolver.current(zone)

    def problem(self, namespace: str, spec: CarbonTrackedJobSpec) -> str | None:
        """Why the job's live provider cannot be used (its Secret unreadable), or None."""
        provider, secret = live_provider(spec, self.config)
        if provider is None or secret is None:
            return None
        found = self._problems.get((namespace, provider, secret))
        return found.message if found else None

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

    async def _resolver(self, namespace: str, spec: CarbonTrackedJobSpec) -> IntensityResolver | None:
        """The job's resolver; None while its key's Secret cannot be read (see the module docstring)."""
        provider, secret = live_provider(spec, self.config)
        if provider is None or secret is None:
            return self.static
        key = (namespace, provider, secret)
        if key not in self._resolvers:
            problem = self._problems.get(key)
            if problem is not None and self.clock() < problem.retry_at:
                return None
            # a job's own Secret is in its namespace (the chart's RBAC and admission policy allow it by
            # name); the operator-wide key is in the operator's
            own = spec.carbon.intensity.secret_name is not None
            where = namespace if own else (self.config.namespace or namespace)
            try:
                data = (await self.core.read_namespaced_secret(secret, where)).data or {}
            except ApiException as exc:
                failures = problem.failures + 1 if problem else 1
                delay = min(SECRET_MAX_RETRY_S, SECRET_RETRY_S * 2 ** (failures - 1))
                message = secret_problem_message(provider, where, secret, exc)
                self._problems[key] = SecretProblem(failures, self.clock() + delay, message)
                log.warning(
                    "intensity key unreadable; using the static table",
                    extra={"secret": f"{where}/{secret}", "status": exc.status, "retryInS": delay},
                )
                return None
            self._problems.pop(key, None)

            def secret_field(name: str) -> str:
                return base64.b64decode(data.get(name, "")).decode()

            c = self.config
            live = (
                ElectricityMaps(secret_field("apiKey"), c.electricitymaps_url)
                if provider == "electricitymaps"
                else WattTime(secret_field("username"), secret_field("password"), c.watttime_url)
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
        resolver = await self._resolver(namespace, spec)
        if resolver is None:  # the key's Secret unreadable (IntensityResolved=False says which, and why)
            fallback = lookup(zone)
            source = f"{fallback.source}:fallback (provider key unreadable)"
            return Grid(fallback.g_per_kwh, source, live=True, reachable=False, zone=zone)
        now = await resolver.current(zone)
        if resolver.provider is None:
            return Grid(now.g_per_kwh, now.source, live=False, zone=zone)
        if now.source.endswith("fallback") or not now.known_zone:
            return Grid(now.g_per_kwh, now.source, live=True, reachable=False, zone=zone)
        return Grid(now.g_per_kwh, now.source, live=True, forecast=await resolver.forecast(zone), zone=zone)

    def forget(self, namespace: str, job: str) -> None:
        self._regions.pop((namespace, job), None)  # a Secret's problem is shared by the namespace's jobs

    async def close(self) -> None:
        """Close the providers' HTTP sessions (they hold connections and an event-loop reference)."""
        resolvers, self._resolvers = list(self._resolvers.values()), {}
        for resolver in resolvers:
            await resolver.close()
        self._regions.clear()
        self._problems.clear()
