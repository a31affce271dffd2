"""The local control plane's certificates: a CA, the apiserver's serving certificate, an admin client
certificate and the service-account signing key pair, written as PEM files into one folder."""

from __future__ import annotations

import datetime as dt
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID = dt.timedelta(days=30)
SKEW = dt.timedelta(minutes=5)
"""Certificates are valid from a little before now, so a clock a few minutes behind accepts them."""
CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def _save_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(now + VALID)
    )


def _write_ca(pki: Path) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    """ca.crt and ca.key; returns the CA's name and key, to sign the leaves with."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("carbontrack-test-ca")
    ca = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _save_key(key, pki / "ca.key")
    return name, key


def _write_leaf(
    pki: Path,
    file: str,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
    ca: tuple[x509.Name, ec.EllipticCurvePrivateKey],
) -> None:
    """<file>.crt and <file>.key: a certificate for one usage, signed by the CA."""
    ca_name, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(subject, ca_name, key).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    (pki / f"{file}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _save_key(key, pki / f"{file}.key")


def write_pki(pki: Path) -> None:
    """A CA, the apiserver's serving cert, an admin client cert and the service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    ca = _write_ca(pki)
    apiserver_names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(IPv4Address("127.0.0.1")),
    ]
    server = ExtendedKeyUsageOID.SERVER_AUTH
    _write_leaf(pki, "apiserver", _name("kube-apiserver"), server, apiserver_names, ca)
    admin = _name("carbontrack-admin", "system:masters")
    _write_leaf(pki, "admin", admin, ExtendedKeyUsageOID.CLIENT_AUTH, [], ca)
    sa = ec.generate_private_key(ec.SECP256R1())
    _save_key(sa, pki / "sa.key")
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
