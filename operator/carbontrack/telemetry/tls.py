"""TLS for telemetry: the serving certificate, its CA, rotation, and the CA's publication to job namespaces.

Sidecars send pod-bound tokens and training metrics; they travel over HTTPS, and the sidecar verifies
the operator's certificate against a CA bundle mounted from the ConfigMap `carbontrack-ca` in its own
namespace, which the operator writes (controller.tls) before and while the job's pods run.

Two sources of the certificate, both through one Secret in the operator's namespace (`tls.crt`,
`tls.key`, `ca.crt`):
- `self-signed` (default): the operator makes a CA and a serving certificate at start-up, keeps them
  in the Secret (a restart or another replica reuses them while valid) and renews before expiry.
- `external`: something else writes the Secret (cert-manager, when the chart is told to use it); the
  operator only reads it, serves it, and publishes its `ca.crt`.

Rotation never drops a batch. A renewed serving certificate is loaded into the same SSL context, so
only new handshakes see it, and it is signed by a CA the sidecars already trust: a new CA enters the
published bundle when the signing CA has less than two serving lifetimes left, and signs only once the
old one cannot cover a whole serving lifetime, so it was published a full lifetime earlier (a
ConfigMap volume refreshes within about a minute). Should a sidecar still fail verification, it keeps
its batch and retries, and cumulative counters make the total exact anyway.

The certificate logic (issue, inspect, decide) is pure and takes `now`; TlsManager does the I/O.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("carbontrack.tls")

CA_LIFETIME = dt.timedelta(days=3650)
SERVING_LIFETIME = dt.timedelta(days=90)
RENEW_FRACTION = 1 / 3
"""A serving certificate is renewed when less than this fraction of its lifetime is left."""
SECRET_TYPE = "kubernetes.io/tls"


@dataclass(frozen=True)
class Lifetimes:
    ca: dt.timedelta = CA_LIFETIME
    serving: dt.timedelta = SERVING_LIFETIME


@dataclass(frozen=True)
class Material:
    """What the Secret holds: the CA bundle (newest first) with its keys, and the serving pair."""

    ca_pem: bytes
    """Every CA a sidecar must trust now: published in the ConfigMap."""
    ca_keys_pem: bytes
    """Keys of the CAs in ca_pem, same order (self-signed mode only; empty when external)."""
    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_ca(now: dt.datetime, lifetime: dt.timedelta = CA_LIFETIME) -> Pair:
    key = _new_key()
    name = _subject(f"carbontrack telemetry CA {now:%Y-%m-%dT%H:%M:%SZ}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_serving(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: list[str],
    now: dt.datetime,
    lifetime: dt.timedelta = SERVING_LIFETIME,
) -> Pair:
    """A serving certificate for `names` (DNS names or IP addresses), signed by `ca`."""
    key = _new_key()
    until = min(now + lifetime, ca.not_valid_after_utc)
    issuer_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - min(dt.timedelta(minutes=5), lifetime / 10))
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(issuer_key_id, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _parse_certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem) if pem.strip() else []
    except ValueError:
        return []


def _parse_keys(pem: bytes) -> list[ec.EllipticCurvePrivateKey]:
    keys = []
    for block in pem.split(b"-----END PRIVATE KEY-----")[:-1]:
        key = serialization.load_pem_private_key(block + b"-----END PRIVATE KEY-----\n", None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            keys.append(key)
    return keys


def _san_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def serving_is_good(m: Material, names: list[str], now: dt.datetime) -> bool:
    """The serving certificate covers `names`, chains to a CA in the bundle, and is not due for renewal."""
    certs, cas = _parse_certs(m.cert_pem), _parse_certs(m.ca_pem)
    if not certs or not cas:
        return False
    cert = certs[0]
    left = cert.not_valid_after_utc - now
    full = cert.not_valid_after_utc - cert.not_valid_before_utc
    if left < full * RENEW_FRACTION or not set(names) <= _san_names(cert):
        return False
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except Exception:  # another CA's, or a signature that does not verify
            continue
    return False


def renew(
    m: Material | None, names: list[str], now: dt.datetime, lifetimes: Lifetimes = Lifetimes()
) -> Material:
    """What the Secret should hold now (self-signed mode): `m` itself when nothing is due.

    CAs that expired are dropped; a new CA is added (newest first) when the newest has less than two
    serving lifetimes left; the serving certificate is signed by the oldest CA still valid for a whole
    serving lifetime, so a CA signs only after it has been published for a serving lifetime.
    """
    cas = list(zip(_parse_certs(m.ca_pem), _parse_keys(m.ca_keys_pem), strict=False)) if m else []
    live = [(c, k) for c, k in cas if c.not_valid_after_utc > now]
    changed = len(live) != len(cas) or not live
    if not live or live[0][0].not_valid_after_utc - now < 2 * lifetimes.serving:
        live.insert(0, issue_ca(now, lifetimes.ca))
        changed = True
    if m is not None and not changed and serving_is_good(m, names, now):
        return m
    signer = next(
        (ck for ck in reversed(live) if ck[0].not_valid_after_utc - now >= lifetimes.serving), live[0]
    )
    cert, key = issue_serving(signer[0], signer[1], names, now, lifetimes.serving)
    return Material(
        ca_pem=b"".join(_cert_pem(c) for c, _ in live),
        ca_keys_pem=b"".join(_key_pem(k) for _, k in live),
        cert_pem=_cert_pem(cert) + _cert_pem(signer[0]),
        key_pem=_key_pem(key),
    )


def from_secret(data: dict[str, str] | None) -> Material | None:
    if not data or "tls.crt" not in data or "tls.key" not in data:
        return None

    def get(k: str) -> bytes:
        return base64.b64decode(data.get(k, ""))

    return Material(
        ca_pem=get("ca.crt"), ca_keys_pem=get("ca.key"), cert_pem=get("tls.crt"), key_pem=get("tls.key")
    )


def to_secret(m: Material) -> dict[str, str]:
    raw = {"tls.crt": m.cert_pem, "tls.key": m.key_pem, "ca.crt": m.ca_pem, "ca.key": m.ca_keys_pem}
    return {k: base64.b64encode(v).decode() for k, v in raw.items()}


def serving_serial(m: Material) -> int | None:
    certs = _parse_certs(m.cert_pem)
    return certs[0].serial_number if certs else None


class TlsManager:
    """Keeps the Secret, the server's SSL context and the published CA ConfigMaps current."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        secret: str,
        names: list[str],
        *,
        external: bool,
        configmap: str,
        lifetimes: Lifetimes = Lifetimes(),
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, self.secret, self.names = namespace, secret, names
        self.external, self.configmap, self.lifetimes = external, configmap, lifetimes
        self.material: Material | None = None
        self.context: ssl.SSLContext | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="carbontrack-tls-"))
        self._published: dict[str, bytes] = {}
        """Namespace -> the CA bundle last written there."""
        self.task: asyncio.Task[None] | None = None
        """The renewal loop (controller.tls)."""

    async def _read_secret(self) -> tuple[Material | None, str | None]:
        try:
            s = await self.core.read_namespaced_secret(self.secret, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        return from_secret(s.data), s.metadata.resource_version

    async def refresh(self, now: dt.datetime | None = None) -> bool:
        """Bring the Secret and the SSL context up to date; True when the serving certificate changed."""
        now = now or dt.datetime.now(dt.UTC)
        try:
            current, version = await self._read_secret()
        except Exception:
            if self.external or self.material is None or not self._renew_in_memory(now):
                raise
            return True
        if not self.external:
            wanted = await self._renew_secret(current, version, now)
        elif current is None:
            raise RuntimeError(f"Secret {self.namespace}/{self.secret} has no tls.crt/tls.key yet")
        else:
            wanted = current
        return await self._serve(wanted)

    def _renew_in_memory(self, now: dt.datetime) -> bool:
        """The apiserver is away: renew from the CA held in memory rather than let the serving
        certificate expire (the Secret is brought up to date once it can be read again). False when
        nothing is due."""
        assert self.material is not None
        local = renew(self.material, self.names, now, self.lifetimes)
        if local is self.material:
            return False
        self._load_serving(local)
        self.material = local
        log.warning("telemetry certificate renewed in memory; the Secret could not be read")
        return True

    async def _renew_secret(
        self, current: Material | None, version: str | None, now: dt.datetime
    ) -> Material:
        """Self-signed mode: what the Secret should hold, written when it changed; another replica's
        material when it wrote the Secret first."""
        wanted = renew(current, self.names, now, self.lifetimes)
        if wanted is current:
            return wanted
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=self.secret,
                namespace=self.namespace,
                labels={"app.kubernetes.io/name": "carbontrack"},
                resource_version=version,
            ),
            type=SECRET_TYPE,
            data=to_secret(wanted),
        )
        try:
            if version is None:
                await self.core.create_namespaced_secret(self.namespace, body)
            else:
                await self.core.replace_namespaced_secret(self.secret, self.namespace, body)
            log.info(
                "telemetry certificate issued", extra={"serial": serving_serial(wanted), "names": self.names}
            )
        except ApiException as exc:
            if exc.status != 409:  # another replica wrote it first: use theirs
                raise
            theirs, _ = await self._read_secret()
            if theirs is None:
                raise
            wanted = theirs
        return wanted

    async def _serve(self, wanted: Material) -> bool:
        """Serve `wanted` (the SSL context reloaded only when the serving pair changed) and republish
        a changed CA bundle; True when the serving pair changed."""
        changed = (
            self.material is None
            or wanted.cert_pem != self.material.cert_pem
            or wanted.key_pem != self.material.key_pem
        )
        bundle_changed = self.material is None or wanted.ca_pem != self.material.ca_pem
        if changed:
            self._load_serving(wanted)
        self.material = wanted
        if bundle_changed:
            for namespace in list(self._published):
                await self.publish(namespace)
        return changed

    def _load_serving(self, m: Material) -> None:
        cert, key = self._dir / "tls.crt", self._dir / "tls.key"
        key.touch(mode=0o600)
        key.write_bytes(m.key_pem)
        cert.write_bytes(m.cert_pem)
        if self.context is None:
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert, key)  # new handshakes get it; open connections keep theirs

    async def publish(self, namespace: str) -> None:
        """The CA bundle as ConfigMap `configmap` (key ca.crt) in `namespace`, if not written already."""
        if self.material is None:
            return
        bundle = self.material.ca_pem
        if self._published.get(namespace) == bundle:
            return
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=self.configmap, namespace=namespace, labels={"app.kubernetes.io/name": "carbontrack"}
            ),
            data={"ca.crt": bundle.decode()},
        )
        try:
            await self.core.create_namespaced_config_map(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            await self.core.replace_namespaced_config_map(self.configmap, namespace, body)
        self._published[namespace] = bundle
        log.info("telemetry CA published", extra={"namespace": namespace, "configMap": self.configmap})
