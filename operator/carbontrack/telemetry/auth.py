"""Who is sending telemetry: TokenReview of the sidecar's projected token, then pod ownership.

A batch is accepted only if (1) the bearer token is valid for audience `carbontrack` (TokenReview,
so revocation and expiry are the apiserver's call), (2) the token is bound to the very pod the batch
names, and (3) that pod belongs to the Job of the CarbonTrackedJob the batch reports for. Reviews are
cached for a few minutes (CARBONTRACK_TOKEN_CACHE_S, 300 s): 8000 pods then cost ~27 reviews a second,
which a busy apiserver can give. The price: a deleted pod's token still passes for up to that long, and
only for its own job's source.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.contract import TOKEN_AUDIENCE, job_name_for
from carbontrack.telemetry.pod_facts import PodFacts, pod_facts

POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"


@dataclass(frozen=True)
class Identity:
    namespace: str
    service_account: str
    pod_name: str | None
    pod_uid: str | None


class AuthError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


OWNER_CACHE_S = 3600.0
"""A pod's owner never changes for its uid, and a deleted pod fails the TokenReview anyway."""
TOKEN_REFRESH = (0.6, 0.9)
"""A token's review is renewed in the background between 60 % and 90 % of CARBONTRACK_TOKEN_CACHE_S:
the reviews of 8000 pods that started together spread over 90 s of each 300 s instead of all expiring
at once, and a batch never waits for a review of a token it has used before."""
MAX_ENTRIES = 100_000
"""Bound on each cache, against a flood of garbage tokens or names."""

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
    ) -> None:
        self.ttl_s = ttl_s
        self.refresh_after = refresh_after
        self.clock = clock
        self._entries: dict[K, tuple[float, V, float]] = {}
        """key -> (looked up at, value, refresh at)"""
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
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (started, done.result(), self._refresh_at(started))

        flight.add_done_callback(keep_result)
        return flight

    async def get(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        now = self.clock()
        hit = self._entries.get(key)
        if hit and now - hit[0] < self.ttl_s:
            if now >= hit[2] and key not in self._flights:
                self._start_lookup(key, lookup)  # refresh ahead of expiry; this caller does not wait for it
            return hit[1]
        flight = self._flights.get(key) or self._start_lookup(key, lookup)
        return await asyncio.shield(flight)  # a caller that goes away does not cancel the others'


class Authenticator:
    def __init__(self, api: client.ApiClient, cache_s: float = 300.0) -> None:
        self.auth = client.AuthenticationV1Api(api)
        self.api = api
        self._tokens: LookupCache[str, Identity | None] = LookupCache(cache_s, refresh_after=TOKEN_REFRESH)
        self._pods: LookupCache[tuple[str, str, str], PodFacts | None] = LookupCache(OWNER_CACHE_S)
        self._job_owners: LookupCache[tuple[str, str, str], str | None] = LookupCache(OWNER_CACHE_S)

    async def identify(self, token: str) -> Identity:
        if not token:
            raise AuthError(401, "missing-token", "no bearer token")
        key = hashlib.sha256(token.encode()).hexdigest()
        identity = await self._tokens.get(key, functools.partial(self._review, token))
        if identity is None:
            raise AuthError(401, "invalid-token", "token not authenticated for audience carbontrack")
        return identity

    async def _review(self, token: str) -> Identity | None:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[TOKEN_AUDIENCE]))
        result = await self.auth.create_token_review(body)
        st = result.status
        if not st or not st.authenticated or TOKEN_AUDIENCE not in (st.audiences or []):
            return None
        parts = (st.user.username or "").split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            return None
        extra: dict[str, Any] = st.user.extra or {}
        pod = (extra.get(POD_NAME_KEY) or [None])[0]
        uid = (extra.get(POD_UID_KEY) or [None])[0]
        return Identity(namespace=parts[2], service_account=parts[3], pod_name=pod, pod_uid=uid)

    async def authorize(self, identity: Identity, namespace: str, pod: str, job: str) -> PodFacts:
        """403 unless the token is bound to `pod` and `pod` runs for the CarbonTrackedJob `job`; the pod's
        start time and GPUs, for the plausibility ceilings."""
        if identity.pod_name is None:
            raise AuthError(403, "unbound-token", "the token is not bound to a pod")
        if identity.namespace != namespace or identity.pod_name != pod:
            raise AuthError(
                403, "wrong-pod", f"the token belongs to pod {identity.namespace}/{identity.pod_name}"
            )
        facts = await self._cached_pod_facts(namespace, pod, identity.pod_uid or "")
        if facts is None or facts.owner != job:
            raise AuthError(
                403, "wrong-job", f"pod {namespace}/{pod} does not run for CarbonTrackedJob {job}"
            )
        return facts

    async def _cached_pod_facts(self, namespace: str, pod: str, uid: str) -> PodFacts | None:
        """The CarbonTrackedJob that owns the Job that owns the pod (None if none), and the pod's facts.

        One pod read per pod uid; the Job's owner is looked up once per Job (all its pods share it),
        concurrent first contacts share one lookup, and reads are raw JSON: at thousands of pods,
        building client models and repeating reads would dominate the cost.
        """
        lookup = functools.partial(self._read_pod_facts, namespace, pod, uid)
        return await self._pods.get((namespace, pod, uid), lookup)

    async def _read_pod_facts(self, namespace: str, pod: str, uid: str) -> PodFacts | None:
        p = await self._read_json(f"/api/v1/namespaces/{namespace}/pods/{pod}")
        if p is None or (uid and p["metadata"].get("uid") != uid):
            return None
        for ref in p["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                job, job_uid = ref["name"], ref.get("uid", "")
                lookup = functools.partial(self._read_job_owner, namespace, job, job_uid)
                return pod_facts(p, await self._job_owners.get((namespace, job, job_uid), lookup))
        return None

    async def _read_job_owner(self, namespace: str, job: str, uid: str) -> str | None:
        j = await self._read_json(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}")
        if j is None or (uid and j["metadata"].get("uid") != uid):
            return None
        for ref in j["metadata"].get("ownerReferences") or []:
            if (
                ref.get("kind") == "CarbonTrackedJob"
                and ref.get("controller")
                and job_name_for(ref["name"]) == j["metadata"].get("name")
            ):
                return str(ref["name"])
        return None

    async def _read_json(self, path: str) -> dict[str, Any] | None:
        """GET an object as a plain dict; None if it does not exist."""
        resp = await self.api.call_api(
            path,
            "GET",
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
        raw = await resp.read()  # without preloading, the client hands back aiohttp's response as is
        if resp.status == 404:
            return None
        if not 200 <= resp.status < 300:
            raise ApiException(status=resp.status, reason=resp.reason)
        doc = json.loads(raw)
        return doc if isinstance(doc, dict) else None
