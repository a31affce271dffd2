"""Fleet start, first contact: every pod of N jobs x P pods presents its token at once.

The operator's authenticator (telemetry.auth) runs in this process against a stand-in apiserver that
counts every request: the discovery document and JWKS, the list of a Job's pods, the Job, and
TokenReviews. Tokens are real RS256 JWTs (PyJWT), bound to their pods as a TokenRequest binds them.
Both paths run in the same invocation: `jwks` (tokens verified against the keys) and its peer
`tokenreview` (CARBONTRACK_TOKEN_VERIFICATION=tokenreview: every token reviewed).

Printed per path: seconds until every pod's first contact is authenticated and authorized, operator
CPU-seconds, and apiserver requests per pod by kind. The stand-in answers at once (or after
`--api-ms`), so the time is the operator's own; what a real apiserver adds is its time per request
times the requests counted here.

    python benchmarks/first_contact.py --jobs 1000 --pods 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from carbontrack.telemetry.auth import Authenticator
from carbontrack.telemetry.jwks import SigningKeys

ISSUER = "https://kubernetes.default.svc.cluster.local"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class StandInApiserver:
    def __init__(self, pods_per_job: int, api_ms: float) -> None:
        self.pods_per_job, self.delay_s = pods_per_job, api_ms / 1000
        self.requests: dict[str, int] = {}
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    async def _count(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    async def read_json(self, path: str) -> dict[str, Any] | None:
        if path == "/.well-known/openid-configuration":
            await self._count("discovery")
            return {"issuer": ISSUER}
        if path == "/openid/v1/jwks":
            await self._count("jwks")
            return self.jwks
        ns = path.split("/")[4] if path.startswith("/api") else ""
        if "/pods?" in path:
            await self._count("pod-list")
            job = path.rsplit("%3D", 1)[1]
            return {"items": [pod_object(ns, job, i) for i in range(self.pods_per_job)]}
        await self._count("job")
        job = path.rsplit("/", 1)[1]
        owner = {"kind": "CarbonTrackedJob", "name": job, "uid": f"ctj-{job}", "controller": True}
        return {"metadata": {"name": job, "uid": f"job-{job}", "ownerReferences": [owner]}}

    async def create_token_review(self, review: Any) -> Any:
        await self._count("tokenreview")
        claims = jwt.decode(review.spec.token, KEY.public_key(), algorithms=["RS256"], audience="carbontrack")
        bound = claims["kubernetes.io"]["pod"]
        extra = {"authentication.kubernetes.io/pod-name": [bound["name"]],
                 "authentication.kubernetes.io/pod-uid": [bound["uid"]]}  # fmt: skip
        user = SimpleNamespace(username="system:serviceaccount:bench:default", extra=extra)
        return SimpleNamespace(
            status=SimpleNamespace(authenticated=True, audiences=["carbontrack"], user=user)
        )


def pod_object(ns: str, job: str, i: int) -> dict[str, Any]:
    owner = {"kind": "Job", "name": job, "uid": f"job-{job}", "controller": True}
    return {
        "metadata": {
            "name": f"{job}-{i}",
            "namespace": ns,
            "uid": f"uid-{job}-{i}",
            "ownerReferences": [owner],
        },
        "spec": {"containers": [{"name": "t", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
        "status": {"startTime": "2026-01-01T00:00:00Z"},
    }


def pod_token(job: str, i: int) -> str:
    now = int(time.time())
    claims = {
        "aud": ["carbontrack"], "iss": ISSUER, "sub": "system:serviceaccount:bench:default",
        "iat": now, "nbf": now, "exp": now + 3600,
        "kubernetes.io": {"namespace": "bench", "serviceaccount": {"name": "default", "uid": "sa"},
                          "pod": {"name": f"{job}-{i}", "uid": f"uid-{job}-{i}"}},
    }  # fmt: skip
    return jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "k1"})


async def fleet_start(method: str, jobs: int, pods: int, api_ms: float) -> dict[str, Any]:
    api = StandInApiserver(pods, api_ms)
    auth = Authenticator(SimpleNamespace(), max_reviews_in_flight=0)  # type: ignore[arg-type]
    auth.auth = api  # type: ignore[assignment]
    auth.read_json = api.read_json  # type: ignore[method-assign]
    if method == "jwks":
        auth.keys = SigningKeys(api.read_json)
    contacts = [(f"job-{j}", i, pod_token(f"job-{j}", i)) for j in range(jobs) for i in range(pods)]

    async def first_contact(job: str, i: int, token: str) -> None:
        identity = await auth.identify(token)
        await auth.authorize(identity, "bench", f"{job}-{i}", job)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(first_contact(*c) for c in contacts))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = jobs * pods
    return {
        "method": method, "pods": n, "seconds": round(wall, 3), "cpu_s": round(cpu, 3),
        "per_pod": {k: round(v / n, 4) for k, v in sorted(api.requests.items())},
        "requests": api.requests,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=8)
    parser.add_argument("--api-ms", type=float, default=0.0, help="the stand-in apiserver's time per request")
    args = parser.parse_args()
    for method in ("jwks", "tokenreview"):
        print(json.dumps(asyncio.run(fleet_start(method, args.jobs, args.pods, args.api_ms))))


if __name__ == "__main__":
    main()
