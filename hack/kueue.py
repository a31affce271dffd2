"""A real Kueue manager for the control-plane tests, built from its pinned Go module.

    python hack/kueue.py build      # compile and cache the manager and its manifests
    python hack/kueue.py prefetch   # only download the Go modules the build needs

The binary and the manifests it needs (CRDs, webhook configurations, from the module's config/components)
are cached under ~/.cache/carbontrack/kueue-<version>/. The build holds the machine-wide Go build lock
(`binaries.go_build_lock`): two builds never run at once, nor beside a Kubernetes build; a second
caller waits, then finds the cached binary. `prefetch` downloads without compiling, so it takes no lock:
`make setup` runs it while the Kubernetes programs compile. Both need only the standard library (the
system's python3 runs them before the venv exists).

`start(cluster)` runs the manager as one more process of a hack/controlplane.py control plane
(stopped with it). Webhooks: the local apiserver cannot reach a Service (no kube-proxy, and Endpoints may
not name the loopback), and Kueue's internal certificates name only the Service's DNS name. So internal
cert management is off: the manager serves its webhooks on 127.0.0.1 with a certificate made here for
that address, and the webhook configurations from Kueue's manifests (those for Kueue's own objects and
batch Jobs: the only integration enabled) are registered with `url: https://127.0.0.1:<port>/<path>` and
that CA. With internal cert management off, Kueue reads a metrics certificate from the fixed path
/etc/kueue/metrics/certs (metrics are not served here: bindAddress "0"); start() writes one there.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if not __package__:  # run as `python hack/kueue.py`: import hack/ as the package it is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hack.binaries import CACHE, go_build_lock, go_env

if TYPE_CHECKING:  # the build runs before the venv (and hack.controlplane's cryptography) exists
    from hack.controlplane import ControlPlane

KUEUE = "v0.19.2"
"""The Kueue our users run (built against k8s.io v0.36, as the pinned apiserver; the proxy serves this
exact version though its version list shows only v0.17.0). ElasticJobsViaWorkloadSlices is beta and on
by default here; the tests set it per cluster (`start(elastic=...)`)."""
MODULE = "sigs.k8s.io/kueue"
DIR = CACHE / f"kueue-{KUEUE}"
BINARY = DIR / "kueue"
MANIFESTS = DIR / "config"


def log(msg: str) -> None:
    print(f"[kueue {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def present() -> bool:
    return BINARY.exists() and (MANIFESTS / "crd").is_dir() and (MANIFESTS / "webhook.yaml").exists()


def _module_dir(env: dict[str, str]) -> Path:
    """Kueue's module source at the pinned version, from the Go module cache (downloaded if missing)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{MODULE}@{KUEUE}"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=CACHE,
    ).stdout
    return Path(json.loads(out)["Dir"])


def prefetch() -> None:
    """Download every module the manager's build needs, compiling nothing: `go list -deps` in the
    module's own folder resolves the same build list as `go install MODULE@VERSION`."""
    if present():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    env = go_env()
    log(f"downloading the Go modules of {MODULE}@{KUEUE}")
    subprocess.run(
        ["go", "list", "-deps", "./cmd/kueue"],
        cwd=_module_dir(env),
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _copy_manifests(src: Path) -> None:
    """The CRDs and webhook configurations from the module's config/components, replaced atomically."""
    tmp = DIR / "config.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "crd").mkdir(parents=True)
    for crd in sorted((src / "config/components/crd/bases").glob("*.yaml")):
        shutil.copyfile(crd, tmp / "crd" / crd.name)
    shutil.copyfile(src / "config/components/webhook/manifests.yaml", tmp / "webhook.yaml")
    for p in tmp.rglob("*"):
        p.chmod(0o644)
    shutil.rmtree(MANIFESTS, ignore_errors=True)
    tmp.rename(MANIFESTS)


def build() -> Path:
    """Compile the manager (CGO off, -trimpath) and copy its manifests; idempotent, returns BINARY."""
    with go_build_lock():
        if present():
            return BINARY
        DIR.mkdir(parents=True, exist_ok=True)
        env = go_env()
        started = time.monotonic()
        if not BINARY.exists():
            ldflags = f"-s -w -X '{MODULE}/pkg/version.GitVersion={KUEUE}'"
            with tempfile.TemporaryDirectory() as gobin:
                log(f"go install {MODULE}/cmd/kueue@{KUEUE} (a cold build takes many minutes)")
                subprocess.run(
                    ["nice", "go", "install", "-ldflags", ldflags, f"{MODULE}/cmd/kueue@{KUEUE}"],
                    cwd=gobin,
                    env=env | {"GOBIN": gobin},
                    check=True,
                )
                shutil.move(str(Path(gobin) / "kueue"), DIR / "kueue.partial")
                (DIR / "kueue.partial").rename(BINARY)  # atomic: a reader sees no binary or the whole one
            log(f"built {BINARY} in {time.monotonic() - started:.0f} s")
        _copy_manifests(_module_dir(env))
        return BINARY


# ---------------------------------------------------------------------------------------- run

METRICS_CERTS = Path("/etc/kueue/metrics/certs")
NAMESPACE = "kueue-system"


def _serving_cert(out: Path) -> bytes:
    """A CA and a serving certificate for 127.0.0.1 (tls.crt/tls.key in `out`); returns the CA's PEM."""
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kueue-test-webhook-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kueue-webhook")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (out / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    (out / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_pem


def _webhooks(port: int, ca_pem: bytes) -> list[dict[str, object]]:
    """Kueue's webhook configurations for its own objects and batch Jobs, pointed at 127.0.0.1:port."""
    import yaml

    out = []
    for doc in yaml.safe_load_all((MANIFESTS / "webhook.yaml").read_text()):
        if not doc:
            continue
        hooks = []
        for hook in doc["webhooks"]:
            groups = {g for rule in hook.get("rules", []) for g in rule.get("apiGroups", [])}
            if not groups <= {"kueue.x-k8s.io", "batch"}:
                continue  # integrations that are not enabled: their paths are not served
            path = hook["clientConfig"]["service"]["path"]
            url = f"https://127.0.0.1:{port}{path}"
            hook["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}
            hooks.append(hook)
        doc["metadata"] = {"name": f"kueue-{doc['metadata']['name']}"}
        doc["webhooks"] = hooks
        out.append(doc)
    return out


@dataclass
class Kueue:
    cluster: ControlPlane
    health_port: int
    webhook_port: int

    @property
    def log(self) -> Path:
        return self.cluster.workdir / "logs" / "kueue.log"


def _install_crds(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(MANIFESTS / "crd"))
    crds = [
        f"crd/{p.name.split('_', 1)[1][: -len('.yaml')]}.kueue.x-k8s.io"
        for p in (MANIFESTS / "crd").iterdir()
    ]
    cluster.wait_established(*crds)


def _configuration(k: Kueue, certs: Path) -> dict[str, object]:
    """The manager's Configuration: webhooks on 127.0.0.1 with our certificate, only batch Jobs."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{k.health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": k.webhook_port, "host": "127.0.0.1", "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["batch/job"]},
    }


def _register_webhooks(cluster: ControlPlane, port: int, ca_pem: bytes) -> None:
    """Register the webhooks and wait until they answer: a dry-run create passes through Kueue's
    defaulting and validation."""
    hooks = _webhooks(port, ca_pem)
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": hooks})
    )
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "probe"}}
    cluster.wait_for(
        "kueue webhooks",
        lambda: (
            cluster.kubectl(
                "create", "--dry-run=server", "-f", "-", input=json.dumps(flavor), check=False
            ).returncode
            == 0
        ),
        60,
        proc="kueue",
    )


def start(cluster: ControlPlane, elastic: bool = False) -> Kueue:
    """Install Kueue's CRDs and webhooks on `cluster` and run the manager (stopped by cluster.down())."""
    if not present():
        raise FileNotFoundError(f"no Kueue build at {DIR}: run `python hack/kueue.py build`")
    from hack.controlplane import free_port

    work = cluster.workdir / "kueue"
    certs = work / "certs"
    ca_pem = _serving_cert(certs)
    METRICS_CERTS.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        shutil.copyfile(certs / name, METRICS_CERTS / name)
    _install_crds(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    k = Kueue(cluster, free_port(), free_port())
    (work / "config.yaml").write_text(json.dumps(_configuration(k, certs)))
    gates = f"VisibilityOnDemand=false,ElasticJobsViaWorkloadSlices={str(elastic).lower()}"
    cluster.start_process(
        "kueue", [str(BINARY), f"--config={work / 'config.yaml'}", f"--feature-gates={gates}"]
    )
    cluster.wait_for(
        "kueue /readyz", lambda: _ok(f"http://127.0.0.1:{k.health_port}/readyz"), 90, proc="kueue"
    )
    _register_webhooks(cluster, k.webhook_port, ca_pem)
    return k


def _ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="compile and cache the Kueue manager and its manifests")
    sub.add_parser("prefetch", help="download the Go modules the build needs, compiling nothing")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        print(build())
    else:
        prefetch()
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
