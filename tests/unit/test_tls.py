"""The telemetry certificate's life: issued, verified by name, renewed early, CAs rolled over in time."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from carbontrack.state.config import OperatorConfig
from carbontrack.telemetry.tls import (
    Lifetimes,
    Material,
    from_secret,
    renew,
    serving_is_good,
    serving_serial,
    to_secret,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NAMES = ["carbontrack.carbontrack-system.svc", "carbontrack.carbontrack-system.svc.cluster.local"]
DAY = dt.timedelta(days=1)


def _cas(m: Material) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(m.ca_pem)


def _issuer(m: Material) -> x509.Name:
    return x509.load_pem_x509_certificates(m.cert_pem)[0].issuer


def test_a_fresh_secret_gets_a_ca_and_a_serving_certificate_for_the_service_names() -> None:
    m = renew(None, NAMES, T0)
    assert len(_cas(m)) == 1 and _issuer(m) == _cas(m)[0].subject
    assert serving_is_good(m, NAMES, T0)
    assert not serving_is_good(m, [*NAMES, "other.svc"], T0)
    assert from_secret(to_secret(m)) == m


def test_nothing_is_reissued_while_valid_and_the_serving_pair_renews_with_a_third_left() -> None:
    m = renew(None, NAMES, T0)
    assert renew(m, NAMES, T0 + 59 * DAY) is m  # 90-day certificate, 31 days left
    renewed = renew(m, NAMES, T0 + 61 * DAY)  # 29 days left: renewed, same CA
    assert serving_serial(renewed) != serving_serial(m) and renewed.ca_pem == m.ca_pem
    assert renew(m, [*NAMES, "10.0.0.1"], T0) is not m  # a new name: reissued at once


def test_a_new_ca_is_published_a_serving_lifetime_before_it_signs() -> None:
    life = Lifetimes(ca=400 * DAY, serving=90 * DAY)
    m = renew(None, NAMES, T0, life)
    first_ca = _cas(m)[0]
    m = renew(m, NAMES, T0 + 200 * DAY, life)  # serving renewals meanwhile, same CA
    assert _cas(m) == [first_ca]
    assert renew(m, NAMES, T0 + 219 * DAY, life) is m  # CA: 181 days left, more than two lifetimes
    rolled = renew(m, NAMES, T0 + 221 * DAY, life)  # 179 days left: a new CA enters the bundle ...
    cas = _cas(rolled)
    assert len(cas) == 2 and cas[1] == first_ca
    assert _issuer(rolled) == first_ca.subject  # ... but the old one still signs (it covers 90 days)
    later = renew(rolled, NAMES, T0 + 311 * DAY, life)  # 89 days left on the old CA: the new one signs,
    assert _issuer(later) == cas[0].subject and _cas(later) == cas  # published 90 days ago
    gone = renew(later, NAMES, T0 + 401 * DAY, life)  # the old CA expired: dropped from the bundle
    assert _cas(gone) == [cas[0]]


def test_a_damaged_secret_is_replaced() -> None:
    m = renew(None, NAMES, T0)
    broken = Material(ca_pem=m.ca_pem, ca_keys_pem=m.ca_keys_pem, cert_pem=b"junk", key_pem=m.key_pem)
    assert not serving_is_good(broken, NAMES, T0)
    assert serving_is_good(renew(broken, NAMES, T0), NAMES, T0)


def _handshake(m: Material, tmp: Path, server_name: str) -> None:
    """A real TLS handshake: a server with the pair, a client trusting only the bundle, checking the name."""
    (tmp / "c.pem").write_bytes(m.cert_pem)
    (tmp / "k.pem").write_bytes(m.key_pem)
    (tmp / "ca.pem").write_bytes(m.ca_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    client = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        raw = socket.create_connection(listener.getsockname())
        with client.wrap_socket(raw, server_hostname=server_name) as s:
            s.sendall(b"x")
    finally:
        thread.join(5)
        listener.close()


def test_the_sidecars_check_verifies_the_service_name(tmp_path: Path) -> None:
    names = OperatorConfig(operator_url="https://carbontrack.carbontrack-system.svc:8443").server_names
    assert names == NAMES
    m = renew(None, names, dt.datetime.now(dt.UTC))
    _handshake(m, tmp_path, "carbontrack.carbontrack-system.svc")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(m, tmp_path, "evil.carbontrack-system.svc")


def test_plain_http_is_an_explicit_opt_out() -> None:
    assert OperatorConfig.from_env({}).operator_url.startswith("https://")
    assert OperatorConfig.from_env({}).telemetry_plaintext is False
    plain = OperatorConfig.from_env({"CARBONTRACK_TELEMETRY_PLAINTEXT": "true"})
    assert plain.telemetry_plaintext and plain.operator_url.startswith("http://")


def test_the_serving_certificate_is_renewed_in_memory_while_the_apiserver_is_away() -> None:
    """A short-lived certificate must not expire because the Secret cannot be read for a while."""
    import asyncio

    from kubernetes_asyncio.client.exceptions import ApiException

    from carbontrack.telemetry.tls import TlsManager

    class Away:
        async def read_namespaced_secret(self, name: str, namespace: str) -> None:
            raise ApiException(status=503, reason="apiserver away")

    manager = TlsManager.__new__(TlsManager)
    manager.__dict__.update(
        core=Away(), namespace="ns", secret="s", names=NAMES, external=False, configmap="c",
        lifetimes=Lifetimes(serving=90 * DAY), material=None, context=None, _published={}, task=None,
    )  # fmt: skip
    manager._dir = Path(__import__("tempfile").mkdtemp())
    manager.material = renew(None, NAMES, T0)
    manager._load_serving(manager.material)
    before = serving_serial(manager.material)
    assert asyncio.run(manager.refresh(T0 + 61 * DAY)) is True  # due: renewed from the CA in memory
    assert serving_serial(manager.material) != before and serving_is_good(
        manager.material, NAMES, T0 + 61 * DAY
    )
    with pytest.raises(ApiException):  # nothing due: the failure is reported, the certificate kept
        asyncio.run(manager.refresh(T0 + 62 * DAY))
