"""First contact without the apiserver: service-account JWTs checked against the signing keys the
apiserver publishes (telemetry.jwks), with real RSA and EC keys and tokens PyJWT signs, and the pod a
token is bound to checked against one list of its Job's pods (telemetry.auth). A stand-in apiserver
counts every read and TokenReview."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.telemetry import auth as auth_module
from carbontrack.telemetry.auth import POD_NAME_KEY, POD_UID_KEY, Authenticator, AuthError
from carbontrack.telemetry.jwks import SigningKeys

ISSUER = "https://kubernetes.default.svc.cluster.local"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private: Any, kid: str) -> dict[str, Any]:
    algorithm = (
        jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    )
    entry: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    alg = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"
    return {**entry, "kid": kid, "use": "sig", "alg": alg}


def token(
    private: Any = RSA_KEY, kid: str = "rsa-1", pod: str = "p0", uid: str = "uid-0", **claims: Any
) -> str:
    """A pod-bound token as the apiserver writes it (TokenRequest), with `claims` overriding."""
    now = int(time.time())
    body = {
        "aud": ["carbontrack"], "iss": ISSUER, "sub": "system:serviceaccount:ns:default",
        "iat": now, "nbf": now, "exp": now + 3600,
        "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "default", "uid": "sa-uid"},
                          "pod": {"name": pod, "uid": uid}},
    }  # fmt: skip
    body.update(claims)
    alg = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"
    return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})


def pod(name: str, uid: str) -> dict[str, Any]:
    owner = {"kind": "Job", "name": "train", "uid": "job-uid", "controller": True}
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "ownerReferences": [owner],
                     "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "t", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
        "status": {"startTime": "2025-01-01T00:00:10Z"},
    }  # fmt: skip


class Apiserver:
    """The paths the authenticator reads, counted by path; `keys` and `pods` may change mid-test."""

    def __init__(self) -> None:
        self.keys = [public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1")]
        self.pods = [pod("p0", "uid-0"), pod("p1", "uid-1")]
        self.reads: dict[str, int] = {}
        self.reviews = 0
        self.keys_forbidden = False

    async def read_json(self, path: str) -> dict[str, Any] | None:
        route = path.split("?")[0]
        self.reads[route] = self.reads.get(route, 0) + 1
        if route in ("/openid/v1/jwks", "/.well-known/openid-configuration") and self.keys_forbidden:
            raise ApiException(status=403, reason="Forbidden")
        if route == "/.well-known/openid-configuration":
            return {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/openid/v1/jwks"}
        if route == "/openid/v1/jwks":
            return {"keys": list(self.keys)}
        if route == "/api/v1/namespaces/ns/pods":
            mine = path.endswith("?labelSelector=job-name%3Dtrain")
            return {"items": list(self.pods) if mine else []}
        if route == "/apis/batch/v1/namespaces/ns/jobs/train":
            owner = {"kind": "CarbonTrackedJob", "name": "train", "uid": "ctj-uid", "controller": True}
            return {"metadata": {"name": "train", "uid": "job-uid", "ownerReferences": [owner]}}
        return None

    async def create_token_review(self, review: Any) -> Any:
        """The apiserver's own verdict: it accepts the tokens PyJWT signed with the RSA key."""
        self.reviews += 1
        try:
            claims = jwt.decode(
                review.spec.token, RSA_KEY.public_key(), algorithms=["RS256"], audience="carbontrack"
            )
        except jwt.PyJWTError:
            claims = None
        bound = (claims or {}).get("kubernetes.io", {}).get("pod", {})
        extra = {POD_NAME_KEY: [bound.get("name")], POD_UID_KEY: [bound.get("uid")]}
        user = SimpleNamespace(username="system:serviceaccount:ns:default", extra=extra)
        return SimpleNamespace(
            status=SimpleNamespace(authenticated=claims is not None, audiences=["carbontrack"], user=user)
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def authenticator(
    apiserver: Apiserver, clock: Clock, keys: bool = True, max_reviews_in_flight: int = 0
) -> Authenticator:
    auth = Authenticator(SimpleNamespace(), clock=clock, max_reviews_in_flight=max_reviews_in_flight)  # type: ignore[arg-type]
    auth.auth = apiserver  # type: ignore[assignment]
    auth.read_json = apiserver.read_json  # type: ignore[method-assign]
    if keys:
        auth.keys = SigningKeys(apiserver.read_json, min_refresh_s=10.0, clock=clock)
    return auth


async def status(auth: Authenticator, bearer: str, pod_name: str = "p0", job: str = "train") -> int:
    """What the telemetry server answers a batch for `pod_name` of `job` with this token: 200 if it passes."""
    try:
        identity = await auth.identify(bearer)
        await auth.authorize(identity, "ns", pod_name, job)
    except AuthError as exc:
        return exc.status
    return 200


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_good_rsa_and_ec_tokens_pass_with_no_token_review_and_one_pod_list_per_job() -> None:
    api, clock = Apiserver(), Clock()
    auth = authenticator(api, clock)

    async def go() -> list[int]:
        return [await status(auth, token()), await status(auth, token(EC_KEY, "ec-1", "p1", "uid-1"), "p1")]

    assert run(go()) == [200, 200]
    assert api.reviews == 0
    assert api.reads["/api/v1/namespaces/ns/pods"] == 1
    assert api.reads["/apis/batch/v1/namespaces/ns/jobs/train"] == 1
    assert api.reads["/openid/v1/jwks"] == 1


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"exp": int(time.time()) - 120}, id="expired"),
        pytest.param({"nbf": int(time.time()) + 600}, id="not-yet-valid"),
        pytest.param({"aud": ["kubernetes"]}, id="wrong-audience"),
        pytest.param({"sub": "system:serviceaccount:other:default"}, id="subject-disagrees"),
    ],
)
def test_a_token_the_keys_refuse_is_a_401_without_a_review(bad: dict[str, Any]) -> None:
    api = Apiserver()
    assert run(status(authenticator(api, Clock()), token(**bad))) == 401
    assert api.reviews == 0


def test_a_tampered_signature_or_another_keys_signature_is_a_401() -> None:
    good = token()
    header, body, signature = good.split(".")
    tampered = f"{header}.{body}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    forged = token(OTHER_KEY, "rsa-1")  # the listed key id, another key
    api = Apiserver()
    auth = authenticator(api, Clock())
    assert run(status(auth, tampered)) == 401 and run(status(auth, forged)) == 401
    assert run(status(auth, "not-a-jwt")) == 401
    assert api.reviews == 0


def test_an_unknown_key_id_reads_the_keys_again_then_refuses_and_waits_before_the_next_read() -> None:
    api, clock = Apiserver(), Clock()
    auth = authenticator(api, clock)
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    async def go() -> list[int]:
        first = [await status(auth, token())]
        clock.now += 10.0
        first.append(await status(auth, token(new_key, "rsa-2")))
        api.keys.append(public_jwk(new_key, "rsa-2"))  # the apiserver publishes its new key
        again = await status(auth, token(new_key, "rsa-2", jti=str(1)))  # within min_refresh_s
        clock.now += 10.0
        later = await status(auth, token(new_key, "rsa-2", jti=str(2)))
        return [*first, again, later]

    assert run(go()) == [200, 401, 401, 200]
    assert api.reads["/openid/v1/jwks"] == 3  # start, the unknown kid, and after min_refresh_s
    assert api.reviews == 0


def test_a_token_of_another_issuer_is_left_to_the_token_review() -> None:
    api = Apiserver()
    assert run(status(authenticator(api, Clock()), token(iss="https://old-issuer.example"))) == 200
    assert api.reviews == 1


def test_a_token_for_another_pods_uid_or_a_deleted_pod_is_refused() -> None:
    api, clock = Apiserver(), Clock()
    auth = authenticator(api, clock)

    async def go() -> list[int]:
        other_uid = await status(auth, token(uid="uid-1"))  # p0's name, p1's uid
        other_pod = await status(auth, token(pod="p1", uid="uid-1"), pod_name="p0")  # p1's token, p0's name
        other_job = await status(auth, token(), job="someone-else")
        alive = await status(auth, token())
        api.pods = [pod("p1", "uid-1")]  # p0 is deleted
        clock.now += 300.0  # the list of the Job's pods is read again within the token cache's TTL
        deleted = await status(auth, token())
        return [other_uid, other_pod, other_job, alive, deleted]

    assert run(go()) == [403, 403, 403, 200, 403]
    assert api.reviews == 0


def test_a_pod_started_after_its_jobs_list_is_found_in_a_new_list_at_most_every_few_seconds() -> None:
    api, clock = Apiserver(), Clock()
    auth = authenticator(api, clock)

    async def go() -> list[int]:
        answers = [await status(auth, token())]
        api.pods.append(pod("p2", "uid-2"))
        answers.append(
            await status(auth, token(pod="p2", uid="uid-2"), "p2")
        )  # the list is fresh: not read again
        clock.now += 5.0
        answers.append(await status(auth, token(pod="p2", uid="uid-2", jti=str(1)), "p2"))
        return answers

    assert run(go()) == [200, 403, 200]
    assert api.reads["/api/v1/namespaces/ns/pods"] == 2


def test_without_readable_keys_every_first_contact_is_a_token_review() -> None:
    api = Apiserver()
    api.keys_forbidden = True  # no RBAC for the discovery paths
    auth = authenticator(api, Clock())

    async def go() -> list[int]:
        return [await status(auth, token()), await status(auth, token(EC_KEY, "ec-1", "p1", "uid-1"), "p1")]

    assert run(go()) == [200, 401]  # the stand-in apiserver accepts only its RSA key's tokens
    assert api.reviews == 2
    assert "/openid/v1/jwks" not in api.reads and api.reads["/.well-known/openid-configuration"] == 1


def test_a_verified_token_stops_passing_at_its_own_expiry_even_while_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = Apiserver()
    auth = authenticator(api, Clock())
    soon = token(exp=int(time.time()) - 55)  # expired, but within the minute of leeway for clock skew

    async def go() -> list[int]:
        first = await status(auth, soon)
        later = time.time() + 10  # past the leeway; the cached check is still within its TTL
        monkeypatch.setattr(
            auth_module, "time", SimpleNamespace(time=lambda: later, monotonic=time.monotonic)
        )
        return [first, await status(auth, soon)]

    assert run(go()) == [200, 401]
    assert api.reads["/openid/v1/jwks"] == 1 and api.reviews == 0


def test_reviews_beyond_the_cap_are_a_503_with_a_retry_after() -> None:
    api, clock = Apiserver(), Clock()
    auth = authenticator(api, clock, keys=False, max_reviews_in_flight=2)
    release = asyncio.Event()
    review = api.create_token_review

    async def slow_review(body: Any) -> Any:
        await release.wait()
        return await review(body)

    api.create_token_review = slow_review  # type: ignore[method-assign]

    async def go() -> list[int | float]:
        tokens = [token(pod="p0", uid="uid-0", jti=str(i)) for i in range(3)]
        waiting = [asyncio.ensure_future(auth.identify(t)) for t in tokens[:2]]
        for _ in range(5):  # the two reviews start and wait for the apiserver
            await asyncio.sleep(0)
        with pytest.raises(AuthError) as refused:
            await auth.identify(tokens[2])
        release.set()
        await asyncio.gather(*waiting)
        return [refused.value.status, refused.value.retry_after_s]

    code, retry_after_s = run(go())
    assert code == 503 and 1.0 <= retry_after_s <= 5.0
    assert api.reviews == 2
