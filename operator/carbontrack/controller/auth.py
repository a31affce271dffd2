"""Who is sending telemetry: TokenReview of the sidecar's projected token, then pod ownership.

A batch is accepted only if (1) the bearer token is valid for audience `carbontrack` (TokenReview,
so revocation and expiry are the apiserver's call), (2) the token is bound to the very pod the batch
names, and (3) that pod belongs to the Job of the CarbonTrackedJob the batch reports for. Results are
cached briefly, so a thousand pods reporting every second cost a few reviews a minute, not a
thousand a second.
"""

from __future__ import annotations

import hashlib
import time
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


class Authenticator:
    def __init__(self, api: client.ApiClient, cache_s: float = 60.0) -> None:
        self.auth = client.AuthenticationV1Api(api)
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.cache_s = cache_s
        self._tokens: dict[str, tuple[float, Identity | None]] = {}
        self._owners: dict[tuple[str, str, str], tuple[float, str | None]] = {}
        self.reviews = 0

    async def identify(self, token: str) -> Identity:
        if not token:
            raise AuthError(401, "missing-token", "no bearer token")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._tokens.get(key)
        if cached and now - cached[0] < self.cache_s:
            identity = cached[1]
        else:
            identity = await self._review(token)
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
        """The CarbonTrackedJob that owns the Job that owns the pod, or None."""
        key = (namespace, pod, uid)
        now = time.monotonic()
        cached = self._owners.get(key)
        if cached and now - cached[0] < self.cache_s:
            return cached[1]
        owner: str | None = None
        try:
            p = await self.core.read_namespaced_pod(pod, namespace)
            if not uid or p.metadata.uid == uid:
                for ref in p.metadata.owner_references or []:
                    if ref.kind == "Job" and ref.controller:
                        j = await self.batch.read_namespaced_job(ref.name, namespace)
                        for jref in j.metadata.owner_references or []:
                            if (
                                jref.kind == "CarbonTrackedJob"
                                and jref.controller
                                and job_name_for(jref.name) == j.metadata.name
                            ):
                                owner = jref.name
        except ApiException as exc:
            if exc.status != 404:
                raise
        self._owners[key] = (now, owner)
        return owner
