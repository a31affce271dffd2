"""Service-account tokens verified in the operator, against the apiserver's own signing keys.

A pod-bound service-account token is a JWT the apiserver signs. Its issuer is published at
`/.well-known/openid-configuration` and its public keys at `/openid/v1/jwks` (both read through the
apiserver, with the operator's own credentials), so the operator checks a token itself: the signature
(PyJWT with `cryptography`), the audience `carbontrack`, expiry and not-before (with LEEWAY_S for clock
skew), the issuer, and the subject's service account. The pod the token is bound to is then checked
against the operator's own reads of its jobs' pods (telemetry.auth): a first contact costs the
apiserver nothing per pod.

The keys are read once and again when a token names a key id (`kid`) they lack, at most once every
`min_refresh_s`: the apiserver adds a key to its set before it signs with it, and random key ids cannot
turn into one read each. A token whose key is still unknown after a fresh read is refused.

`Unverifiable` hands a token to the TokenReview fallback: when the keys cannot be read (the apiserver
refuses the operator the discovery paths, or is unreachable), and for a token signed by a listed key
whose issuer is not the discovered one (an apiserver that accepts several issuers while one is rotated
out: the apiserver knows which it accepts, the discovery document names only the first).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from carbontrack.api.contract import TOKEN_AUDIENCE

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/openid/v1/jwks"
LEEWAY_S = 60.0
"""Clock skew allowed on expiry and not-before between the operator's node and the apiserver's."""
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")

log = logging.getLogger("carbontrack.telemetry")

ReadJson = Callable[[str], Awaitable[dict[str, Any] | None]]


class Unverifiable(Exception):
    """The operator cannot judge this token itself: ask the apiserver (TokenReview)."""


class SigningKeys:
    """The apiserver's issuer and public keys by key id, read through `read_json` (a GET of an
    apiserver path: None when it does not exist), refreshed on an unknown key id at most every
    `min_refresh_s`. After a failed read the keys are not asked for again for `min_refresh_s` either:
    meanwhile every token goes to the fallback, which has its own limit."""

    def __init__(
        self, read_json: ReadJson, min_refresh_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.read_json, self.min_refresh_s, self.clock = read_json, min_refresh_s, clock
        self.issuer: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._read_at = -float("inf")
        self._failed = False
        self._flight: asyncio.Future[None] | None = None

    @property
    def loaded(self) -> bool:
        return self.issuer is not None

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key `kid` names, reading the set when it is not known yet; Unverifiable while no set
        can be read."""
        if kid in self._keys:
            return self._keys[kid]
        if self.clock() - self._read_at >= self.min_refresh_s:
            if self._flight is None:
                self._flight = asyncio.ensure_future(self._read())
                self._flight.add_done_callback(self._landed)
            try:
                await asyncio.shield(self._flight)
            except Exception as exc:
                raise Unverifiable(f"the apiserver's signing keys cannot be read: {exc!r}") from exc
        if not self.loaded or (self._failed and kid not in self._keys):
            raise Unverifiable("the apiserver's signing keys cannot be read")
        return self._keys.get(kid)

    def _landed(self, flight: asyncio.Future[None]) -> None:
        self._flight = None
        if not flight.cancelled():
            flight.exception()  # retrieved: a failed read is a state (`_failed`), not an error to log twice

    async def _read(self) -> None:
        self._read_at = self.clock()
        try:
            discovery = await self.read_json(DISCOVERY_PATH)
            keyset = await self.read_json(JWKS_PATH)
            if not discovery or not keyset or not isinstance(discovery.get("issuer"), str):
                raise ValueError("no issuer or key set published")
            self._keys = _usable_keys(keyset)
            self.issuer = discovery["issuer"]
            self._failed = False
        except Exception as exc:
            self._failed = True  # a 403 (no RBAC for the paths), a refused connection, a malformed set
            log.warning("the apiserver's signing keys cannot be read; tokens go to TokenReview: %s", exc)
            raise


def _usable_keys(keyset: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWKS by key id; keys PyJWT cannot use (an unknown type) are left out."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in keyset.get("keys") or []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or not entry.get("kid"):
            continue
        try:
            keys[str(entry["kid"])] = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
    return keys


async def verified_claims(keys: SigningKeys, token: str) -> dict[str, Any] | None:
    """The token's claims when the apiserver's key signed it for audience `carbontrack`, it is within
    its lifetime and its issuer is the apiserver's; None when it is refused; Unverifiable for the
    fallback (module docstring)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None  # not a JWT at all
    key = await keys.key(str(kid)) if isinstance(kid, str) and kid else None
    if key is None:
        return None
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            audience=TOKEN_AUDIENCE,
            leeway=LEEWAY_S,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.PyJWTError:
        return None  # a bad signature, another audience, expired, not yet valid, a claim missing
    if claims.get("iss") != keys.issuer:
        log.info("a token of issuer %r, not the discovered %r: TokenReview", claims.get("iss"), keys.issuer)
        raise Unverifiable(f"issuer {claims.get('iss')!r} is not the discovered {keys.issuer!r}")
    return claims
