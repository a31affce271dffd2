"""Who is sending telemetry: TokenReview of the sidecar's projected token, then pod ownership.

A batch is accepted only if (1) the bearer token is valid for audience `carbontrack` (TokenReview,
so revocation and expiry are the apiserver's call), (2) the token is bound to the very pod the batch
names, and (3) that pod belongs to the Job of the CarbonTrackedJob the batch reports for. Reviews are
cached for a few minutes (CARBONTRACK_TOKEN_CACHE_S, 300 s): 8000 pods then cost ~27 reviews a second,
which a busy apiserver can give (at 60 s, the scale benchmark's apiserver could not keep up). The
price: a deleted pod's token still passes for up to that long, and only for its own job's source.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.controller.jobbuilder import TOKEN_AUDIENCE, job_name_for

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


class Authenticator:
    def __init__(self, api: client.ApiClient, cache_s: float = 300.0) -> None:
        self.auth = client.AuthenticationV1Api(api)
        self.core = client.CoreV1Api(api)
        self.api = api
        self.cache_s = cache_s
        self._tokens: dict[str, tuple[float, Identity | None]] = {}
        self._owners: dict[tuple[str, str, str], tuple[float, str | None]] = {}
        self._job_owners: dict[tuple[str, str, str], tuple[float, str | None]] = {}
        self._inflight: dict[str, asyncio.Future[Identity | None]] = {}
        self._owner_flights: dict[tuple[str, str, str], asyncio.Future[str | None]] = {}
        self.reviews = 0

    async def identify(self, token: str) -> Identity:
        if not token:
            raise AuthError(401, "missing-token", "no bearer token")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._tokens.get(key)
        if cached and now - cached[0] < self.cache_s:
            identity = cached[1]
        elif key in self._inflight:  # a retry of the same sidecar while its review is under way
            identity = await asyncio.shield(self._inflight[key])
        else:
            future: asyncio.Future[Identity | None] = asyncio.get_running_loop().create_future()
            self._inflight[key] = future
            try:
                identity = await self._review(token)
                future.set_result(identity)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters get it, no "never retrieved" warning
                raise
            finally:
                del self._inflight[key]
            self._tokens[key] = (now, identity)
            if len(self._tokens) > 100_000:  # bound memory under a flood of garbage tokens
                self._tokens.clear()
        if identity is None:
            raise AuthError(401, "invalid-token", "token not authenticated for audience carbontrack")
        return identity

    async def _review(self, token: str) -> Identity | None:
        self.reviews += 1
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

    async def authorize(self, identity: Identity, namespace: str, pod: str, job: str) -> None:
        """403 unless the token is bound to `pod` and `pod` runs for the CarbonTrackedJob `job`."""
        if identity.pod_name is None:
            raise AuthError(403, "unbound-token", "the token is not bound to a pod")
        if identity.namespace != namespace or identity.pod_name != pod:
            raise AuthError(
                403, "wrong-pod", f"the token belongs to pod {identity.namespace}/{identity.pod_name}"
            )
        owner = await self._owner(namespace, pod, identity.pod_uid or "")
        if owner != job:
            raise AuthError(
                403, "wrong-job", f"pod {namespace}/{pod} does not run for CarbonTrackedJob {job}"
            )

    async def _owner(self, namespace: str, pod: str, uid: str) -> str | None:
        """The CarbonTrackedJob that owns the Job that owns the pod, or None.

        One pod read per pod uid; the Job's owner is looked up once per Job (all its pods share it),
        concurrent first contacts share one lookup, and reads are raw JSON: at thousands of pods,
        building client models and repeating reads dominated the cost (benchmarks/scale.py).
        """
        return await self._cached(self._owners, (namespace, pod, uid), self._pod_owner(namespace, pod, uid))

    async def _pod_owner(self, namespace: str, pod: str, uid: str) -> str | None:
        p = await self._read_json(f"/api/v1/namespaces/{namespace}/pods/{pod}")
        if p is None or (uid and p["metadata"].get("uid") != uid):
            return None
        for ref in p["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                key = (namespace, ref["name"], ref.get("uid", ""))
                return await self._cached(self._job_owners, key, self._job_owner(namespace, *key[1:]))
        return None

    async def _job_owner(self, namespace: str, job: str, uid: str) -> str | None:
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

    async def _cached(
        self,
        cache: dict[tuple[str, str, str], tuple[float, str | None]],
        key: tuple[str, str, str],
        lookup: Coroutine[Any, Any, str | None],
    ) -> str | None:
        """Owner lookups cached for OWNER_CACHE_S, with one lookup in flight per key."""
        now = time.monotonic()
        hit = cache.get(key)
        if hit and now - hit[0] < OWNER_CACHE_S:
            lookup.close()
            return hit[1]
        flight = self._owner_flights.get(key)
        if flight is not None:
            lookup.close()
            return await asyncio.shield(flight)
        task = asyncio.ensure_future(lookup)
        self._owner_flights[key] = task
        try:
            owner = await asyncio.shield(task)
        finally:
            self._owner_flights.pop(key, None)
        cache[key] = (now, owner)
        if len(cache) > 100_000:
            cache.clear()
        return owner

    async def _read_json(self, path: str) -> dict[str, Any] | None:
        """GET an object as a plain dict; None if it does not exist."""
        resp = await self.api.call_api(
            path, "GET", header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False,
        )  # fmt: skip
        raw = await resp.read()  # without preloading, the client hands back aiohttp's response as is
        if resp.status == 404:
            return None
        if not 200 <= resp.status < 300:
            raise ApiException(status=resp.status, reason=resp.reason)
        doc = json.loads(raw)
        return doc if isinstance(doc, dict) else None
