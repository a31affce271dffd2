"""The pinned Kubernetes programs of the local control plane, and the Go toolchain that builds them.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl are one binary built from the
pinned Go modules in hack/kube (dispatching on its name); kwok and helm come from their own modules.
Everything is cached under CARBONTRACK_CACHE (default ~/.cache/carbontrack) by version, so only the
first build pays for compilation.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
KUBERNETES = "v1.36.3"  # pinned: tests assert the apiserver reports exactly this
ETCD = "v3.6.8"  # the etcd release k8s.io/kubernetes@KUBERNETES itself requires
KWOK = "v0.8.0"
HELM = "v3.21.4"
CACHE = Path(os.environ.get("CARBONTRACK_CACHE", "~/.cache/carbontrack")).expanduser()
BIN = CACHE / f"kubernetes-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}_helm-{HELM}" / "bin"
KUBE_PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
HELM_STAMP = "helm.kube-default"
"""Written beside helm once it is built with the pinned Kubernetes as its default (see build)."""


def log(msg: str) -> None:
    print(f"[controlplane {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def go_env() -> dict[str, str]:
    """The environment of every Go build here: module and build caches under CACHE, static binaries."""
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(CACHE / "go" / "mod"),
        GOCACHE=str(CACHE / "go" / "build"),
        GOFLAGS="-trimpath -buildvcs=false",
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
    )
    return env


@contextlib.contextmanager
def go_build_lock() -> Iterator[None]:
    """One Go build at a time on this machine: concurrent cold builds on two cores take longer together
    than one after another, and two builds of one target race on its .partial file."""
    path = CACHE / "go" / "build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def go(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> None:
    """Run `go <args>` in `cwd` under the machine-wide build lock."""
    env = go_env() | (extra_env or {})
    log("go " + " ".join(args))
    with go_build_lock():
        subprocess.run(["go", *args], cwd=cwd, env=env, check=True)


def kube_ldflags() -> str:
    """The version stamps Kubernetes' own release build gives its programs (without them they report
    v0.0.0); one definition for the control-plane build and the kind node's."""
    minor = KUBERNETES.split(".")[1]
    return " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={KUBERNETES}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            f"-X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES}",
        ]
    )


def helm_ldflags() -> str:
    """As helm's own Makefile stamps its release binaries: the Kubernetes version that `helm template`
    assumes without a cluster (else v1.20, and the chart's kubeVersion >= 1.30 fails)."""
    minor = KUBERNETES.split(".")[1]
    return " ".join(
        [
            "-s -w",
            f"-X helm.sh/helm/v3/internal/version.version={HELM}",
            "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
            "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
        ]
    )


def binaries_present() -> bool:
    names = [*KUBE_PROGRAMS, "kube", "kwok", "helm"]
    return all((BIN / n).exists() for n in names)


def _install(name: str, module: str, ldflags: str) -> None:
    """`go install` one program and move it into BIN atomically: a concurrent reader sees old or new."""
    with tempfile.TemporaryDirectory() as gobin:
        go(["install", "-ldflags", ldflags, module], cwd=Path(gobin), extra_env={"GOBIN": gobin})
        shutil.move(str(Path(gobin) / name), BIN / f"{name}.partial")
        (BIN / f"{name}.partial").rename(BIN / name)


def build() -> Path:
    """Compile whatever is missing into BIN; returns BIN. Idempotent and safe to interrupt."""
    BIN.mkdir(parents=True, exist_ok=True)
    if not (BIN / "kube").exists():
        tmp = BIN / "kube.partial"
        go(["build", "-ldflags", kube_ldflags(), "-o", str(tmp), "."], cwd=HERE / "kube")
        tmp.rename(BIN / "kube")
    for name in KUBE_PROGRAMS:
        link = BIN / name
        if not link.exists():
            link.symlink_to("kube")
    if not (BIN / "kwok").exists():
        _install("kwok", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK}", "-s -w")
    # a helm built before it knew its Kubernetes (no stamp) is rebuilt once
    if not (BIN / "helm").exists() or not (BIN / HELM_STAMP).exists():
        _install("helm", f"helm.sh/helm/v3/cmd/helm@{HELM}", helm_ldflags())
        (BIN / HELM_STAMP).write_text(f"helm {HELM} defaults to Kubernetes {KUBERNETES}\n")
    return BIN
