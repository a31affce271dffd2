"""Who is sending telemetry: the sidecar's projected token verified, then pod ownership.

A batch is accepted only if (1) the bearer token is a service-account token for audience `carbontrack`,
within its lifetime, (2) it is bound to the very pod the batch names (that pod's name and uid), and
(3) that pod belongs to the Job of the CarbonTrackedJob the batch reports for.

(1) is checked here against the apiserver's published signing keys (telemetry.jwks): no apiserver
request per token. When the keys cannot be read, or cannot judge a token, a TokenReview decides, at
most CARBONTRACK_MAX_TOKEN_REVIEWS_IN_FLIGHT at once; beyond them a first contact is answered 503 with
Retry-After. CARBONTRACK_TOKEN_VERIFICATION=tokenreview reviews every token, as before there were keys.
(2) and (3) are checked against one list of the Job's pods, shared by them all, and one read of the Job.

Answers are cached for a few minutes (CARBONTRACK_TOKEN_CACHE_S, 300 s) and renewed ahead of expiry,
the token's and the pod list's alike. The price: a deleted pod's token still passes for up to that
long (until the list no longer has it), and only for its own job's source; a token past its own
expiry is refused at once.

Refusals are cheap too. A refused token is remembered briefly (CARBONTRACK_REFUSED_TOKEN_CACHE_S, 30 s),
apart from the tokens that pass, so repeating it costs no check and a flood of refused tokens cannot
push good ones out. A token the cache does not know is a first contact, and each client address gets a
bucket of them (CARBONTRACK_FIRST_CONTACT_BURST, 20, refilled at CARBONTRACK_FIRST_CONTACTS_PER_S, 5 a
second); beyond it the answer is 429 with Retry-After and no check, so random tokens cannot turn into
one TokenReview each when the fallback is in use.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.contract import TOKEN_AUDIENCE, job_name_for
from carbontrack.state import metrics
from carbontrack.telemetry.jwks import LEEWAY_S, SigningKeys, Unverifiable, verified_claims
from carbontrack.telemetry.lookup import FirstContacts as FirstContacts
from carbontrack.telemetry.lookup import LookupCache as LookupCache
from carbontrack.telemetry.pod_facts import PodFacts, pod_facts

POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
JOB_NAME_LABEL = "job-name"
"""The label the Job controller puts on every pod it makes: the Job's name."""


@dataclass(frozen=True)
class Identity:
    namespace: str
    service_account: str
    pod_name: str | None
    pod_uid: str | None
    expires_at: float = float("inf")
    """Unix time past which the token no longer passes, leeway included (a verified JWT's `exp`)."""


@dataclass(frozen=True)
class JobPod:
    uid: str
    facts: PodFacts


class AuthError(Exception):
    def __init__(self, status: int, reason: str, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason
        self.retry_after_s = retry_after_s
        """With a 429 or 503: when the client may try again."""


OWNER_CACHE_S = 3600.0
"""A Job's owner never changes for its uid, and a deleted Job's pods drop out of their list."""
TOKEN_REFRESH = (0.6, 0.9)
"""A token's check and a Job's pod list are renewed in the background between 60 % and 90 % of
CARBONTRACK_TOKEN_CACHE_S: those of 8000 pods that started together spread over 90 s of each 300 s
instead of all expiring at once, and a batch never waits for a check it has passed before."""
REFUSED_CACHE_S = 30.0
"""How long a refused token stays refused without a new check: a client that repeats one costs at
most one check a TTL. Short, because a refusal may come from a token the apiserver could not yet
verify (a pod bound a moment before its token was checked)."""
RELIST_AFTER_S = 5.0
"""A pod missing from its Job's list is looked for in a new one at most this often per Job: pods of one
Job start within seconds of each other, and a token for a pod of another Job cannot force a list per
batch."""
REVIEW_RETRY_SPREAD_S = 5.0
"""A 503 for a TokenReview queue says retry after 1 s to this: the queue's clients return spread out."""


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def identity_from_claims(claims: dict[str, Any]) -> Identity | None:
    """Who a verified service-account JWT names: its subject `system:serviceaccount:<ns>:<name>`, which
    must agree with its `kubernetes.io` claim, and the pod it is bound to (none for an unbound token)."""
    parts = str(claims.get("sub", "")).split(":")
    bound = claims.get("kubernetes.io")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"] or not isinstance(bound, dict):
        return None
    account = bound.get("serviceaccount") or {}
    if bound.get("namespace") != parts[2] or account.get("name") != parts[3]:
        return None
    pod = bound.get("pod")
    pod = pod if isinstance(pod, dict) else {}
    return Identity(
        namespace=parts[2], service_account=parts[3], pod_name=pod.get("name"), pod_uid=pod.get("uid"),
        expires_at=float(claims["exp"]) + LEEWAY_S,
    )  # fmt: skip


class Authenticator:
    def __init__(
        self,
        api: client.ApiClient,
        cache_s: float = 300.0,
        refused_cache_s: float = REFUSED_CACHE_S,
        first_contacts: FirstContacts | None = None,
        clock: Callable[[], float] = time.monotonic,
        keys: SigningKeys | None = None,
        max_reviews_in_flight: int = 0,
    ) -> None:
        """`first_contacts`: the per-address limit on tokens the cache does not know (None: no limit).
        `keys`: the apiserver's signing keys, to verify tokens here (None: every token is reviewed).
        `max_reviews_in_flight`: TokenReviews at once, beyond which a first contact is answered 503 with
        Retry-After (0: no cap)."""
        self.auth = client.AuthenticationV1Api(api)
        self.api = api
        self.keys = keys
        self.max_reviews_in_flight = max_reviews_in_flight
        self._reviews_in_flight = 0
        self._tokens: LookupCache[str, Identity | None] = LookupCache(
            cache_s, refresh_after=TOKEN_REFRESH, clock=clock, miss_ttl_s=refused_cache_s
        )
        self.first_contacts = first_contacts
        self._job_pods: LookupCache[tuple[str, str], dict[str, JobPod]] = LookupCache(
            cache_s, refresh_after=TOKEN_REFRESH, clock=clock
        )
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
        identity = await self._tokens.get(_token_key(token), functools.partial(self._verify, token))
        if identity is None or identity.expires_at < time.time():
            raise AuthError(401, "invalid-token", "token not authenticated for audience carbontrack")
        return identity

    async def _verify(self, token: str) -> Identity | None:
        """The token checked here against the apiserver's keys, or by a TokenReview when they cannot
        judge it (telemetry.jwks)."""
        if self.keys is not None:
            try:
                claims = await verified_claims(self.keys, token)
            except Unverifiable:
                pass
            else:
                identity = identity_from_claims(claims) if claims is not None else None
                metrics.token_verifications.labels("jwks", "accepted" if identity else "refused").inc()
                return identity
        identity = await self._review(token)
        metrics.token_verifications.labels("tokenreview", "accepted" if identity else "refused").inc()
        return identity

    async def _review(self, token: str) -> Identity | None:
        """A TokenReview, at most `max_reviews_in_flight` at once: beyond them a 503 whose Retry-After
        is drawn over a few seconds, so a queue of first contacts comes back spread out."""
        if self.max_reviews_in_flight and self._reviews_in_flight >= self.max_reviews_in_flight:
            wait_s = random.uniform(1.0, REVIEW_RETRY_SPREAD_S)
            message = f"too many first contacts are being reviewed; retry in {math.ceil(wait_s)} s"
            raise AuthError(503, "reviews-busy", message, retry_after_s=wait_s)
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[TOKEN_AUDIENCE]))
        self._reviews_in_flight += 1
        try:
            result = await self.auth.create_token_review(body)
        except Exception:
            metrics.token_reviews.labels("error").inc()
            raise
        finally:
            self._reviews_in_flight -= 1
        st = result.status
        authenticated = bool(st and st.authenticated and TOKEN_AUDIENCE in (st.audiences or []))
        metrics.token_reviews.labels("authenticated" if authenticated else "unauthenticated").inc()
        parts = (st.user.username or "").split(":") if authenticated else []
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
        facts = await self._job_pod_facts(namespace, job, pod, identity.pod_uid or "")
        if facts is None or facts.owner != job:
            raise AuthError(
                403, "wrong-job", f"pod {namespace}/{pod} does not run for CarbonTrackedJob {job}"
            )
        return facts

    async def _job_pod_facts(self, namespace: str, job: str, pod: str, uid: str) -> PodFacts | None:
        """The facts of `pod` (with this uid, when the token names one) among the pods of `job`'s Job.

        The Job's pods are listed in one read, shared by all of them and renewed in the background
        within CARBONTRACK_TOKEN_CACHE_S, so a deleted pod drops out of the list as its TokenReview would
        have refused it. A pod the list lacks (started after it) is looked for in a new list, at most
        one every RELIST_AFTER_S per Job. Reads are raw JSON: building client models would dominate.
        """
        key = (namespace, job_name_for(job))
        lookup = functools.partial(self._list_job_pods, namespace, key[1])
        found = (await self._job_pods.get(key, lookup)).get(pod)
        if (found is None or (uid and found.uid != uid)) and self._job_pods.age(key) >= RELIST_AFTER_S:
            found = (await self._job_pods.get(key, lookup, max_age_s=RELIST_AFTER_S)).get(pod)
        if found is None or (uid and found.uid != uid):
            return None
        return found.facts

    async def _list_job_pods(self, namespace: str, job: str) -> dict[str, JobPod]:
        """The pods the Job controller made for Job `job`, by name, each with its CarbonTrackedJob."""
        selector = urllib.parse.quote(f"{JOB_NAME_LABEL}={job}")
        listed = await self.read_json(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")
        pods: dict[str, JobPod] = {}
        for p in (listed or {}).get("items") or []:
            for ref in p["metadata"].get("ownerReferences") or []:
                if ref.get("kind") == "Job" and ref.get("controller") and ref.get("name") == job:
                    job_uid = ref.get("uid", "")
                    lookup = functools.partial(self._read_job_owner, namespace, job, job_uid)
                    owner = await self._job_owners.get((namespace, job, job_uid), lookup)
                    pods[p["metadata"]["name"]] = JobPod(p["metadata"].get("uid", ""), pod_facts(p, owner))
        return pods

    async def _read_job_owner(self, namespace: str, job: str, uid: str) -> str | None:
        j = await self.read_json(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}")
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

    async def read_json(self, path: str) -> dict[str, Any] | None:
        """GET an object as a plain dict; None if it does not exist."""
        resp = await self.api.call_api(
            path,
            "GET",
            header_params={"Accept": "application/json, application/jwk-set+json"},  # the JWKS is the latter
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
