"""Who is sending telemetry: TokenReview of the sidecar's projected token, then pod ownership.

A batch is accepted only if (1) the bearer token is valid for audience `carbontrack` (TokenReview,
so revocation and expiry are the apiserver's call), (2) the token is bound to the very pod the batch
names, and (3) that pod belongs to the Job of the CarbonTrackedJob the batch reports for. Reviews are
cached for a few minutes (CARBONTRACK_TOKEN_CACHE_S, 300 s): 8000 pods then cost ~27 reviews a second,
which a busy apiserver can give. The price: a deleted pod's token still passes for up to that long, and
only for its own job's source.

Refusals are cheap too. A refused token is remembered briefly (CARBONTRACK_REFUSED_TOKEN_CACHE_S, 30 s),
apart from the tokens that pass, so repeating it costs no review and a flood of refused tokens cannot
push good ones out. A token the cache does not know is a first contact, and each client address gets a
bucket of them (CARBONTRACK_FIRST_CONTACT_BURST, 20, refilled at CARBONTRACK_FIRST_CONTACTS_PER_S, 5 a
second); beyond it the answer is 429 with Retry-After and no review, so random tokens cannot turn into
one TokenReview each.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
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
    def __init__(self, status: int, reason: str, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason
        self.retry_after_s = retry_after_s
        """With a 429: when the client may try again."""


OWNER_CACHE_S = 3600.0
"""A pod's owner never changes for its uid, and a deleted pod fails the TokenReview anyway."""
TOKEN_REFRESH = (0.6, 0.9)
"""A token's review is renewed in the background between 60 % and 90 % of CARBONTRACK_TOKEN_CACHE_S:
the reviews of 8000 pods that started together spread over 90 s of each 300 s instead of all expiring
at once, and a batch never waits for a review of a token it has used before."""
MAX_ENTRIES = 100_000
"""Bound on each cache, against a flood of garbage tokens or names."""
MAX_MISSES = 10_000
"""Bound on each cache's misses (refused tokens), apart from its entries."""

REFUSED_CACHE_S = 30.0
"""How long a refused token stays refused without a new review: a client that repeats one costs the
apiserver one review a TTL. Short, because a refusal may come from a token the apiserver could not yet
verify (a pod bound a moment before its token was checked)."""

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

    async def get(self, key: K, lookup: Callable[[], Awaitable[V]]) -> V:
        now = self.clock()
        if miss := self._miss(key, now):
            return miss[1]
        hit = self._entries.get(key)
        if hit and now - hit[0] < self.ttl_s:
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


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(
        self,
        api: client.ApiClient,
        cache_s: float = 300.0,
        refused_cache_s: float = REFUSED_CACHE_S,
        first_contacts: FirstContacts | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`first_contacts`: the per-address limit on tokens the cache does not know (None: no limit)."""
        self.auth = client.AuthenticationV1Api(api)
        self.api = api
        self._tokens: LookupCache[str, Identity | None] = LookupCache(
            cache_s, refresh_after=TOKEN_REFRESH, clock=clock, miss_ttl_s=refused_cache_s
        )
        self.first_contacts = first_contacts
        self._pods: LookupCache[tuple[str, str, str], PodFacts | None] = LookupCache(OWNER_CACHE_S)
        self._job_owners: LookupCache[tuple[str, str, str], str | None] = LookupCache(OWNER_CACHE_S)

    def admit(self, token: str, source: str) -> None:
        """429 when `token` is new to the cache (its review would cost the apiserver a request) and
        `source`, the client's address, has used up its first contacts; a known token always passes."""
        if not token or self.first_contacts is None or self._tokens.knows(_token_key(token)):
            return
        wait_s = self.first_contacts.take(source)
        if wait_s > 0:
            message = f"too many new tokens from {source}; retry in {math.ceil(wait_s)} s"
            raise AuthError(429, "rate-limited", message, retry_after_s=wait_s)

    async def identify(self, token: str) -> Identity:
        if not token:
            raise AuthError(401, "missing-token", "no bearer token")
        identity = await self._tokens.get(_token_key(token), functools.partial(self._review, token))
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
