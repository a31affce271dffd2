"""The pinned Kubernetes programs of the local control plane, and the Go toolchain that builds them.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl are one binary built from the
pinned Go modules in hack/kube (dispatching on its name); kwok and helm come from their own modules.
Everything is cached under CARBONTRACK_CACHE (default ~/.cache/carbontrack) by version, and the kube
binary also by the hash of hack/kube's sources (a stamp beside it), so only the first build pays for
compilation.

    python3 hack/binaries.py build   # compile what is missing (standard library only: no venv needed)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
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
KUBE_STAMP = "kube.sources"
"""Written beside kube: the hash of the hack/kube sources it was built from (see kube_sources)."""
_held_locks: dict[Path, int] = {}
"""Locks this process holds (file_lock), with their depth: a holder may take one again."""


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
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` shared by every process on this machine; reentrant within one process
    (flock on a second descriptor of the same file would wait for the first forever)."""
    if path in _held_locks:
        _held_locks[path] += 1
        try:
            yield
        finally:
            _held_locks[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _held_locks[path] = 1
        try:
            yield
        finally:
            del _held_locks[path]
            fcntl.flock(f, fcntl.LOCK_UN)


def go_build_lock() -> contextlib.AbstractContextManager[None]:
    """One Go build at a time on this machine: concurrent cold builds on two cores take longer together
    than one after another, and two builds of one target race on its .partial file."""
    return file_lock(CACHE / "go" / "build.lock")


def sources_key(*paths: Path, extra: str = "") -> str:
    """A short hash of in-repo build inputs (their paths under hack/ and contents) and `extra`."""
    h = hashlib.sha256(extra.encode())
    for path in paths:
        h.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def kube_sources() -> list[Path]:
    """What the kube binary is built from: hack/kube's Go files, go.mod and go.sum."""
    kube = HERE / "kube"
    return [*sorted(kube.glob("*.go")), kube / "go.mod", kube / "go.sum"]


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


def _kube_current() -> bool:
    stamp = BIN / KUBE_STAMP
    key = sources_key(*kube_sources(), extra=KUBERNETES)
    return (BIN / "kube").exists() and stamp.exists() and stamp.read_text().strip() == key


def _complete() -> bool:
    return binaries_present() and _kube_current() and (BIN / HELM_STAMP).exists()


def build() -> Path:
    """Compile whatever is missing or stale into BIN; returns BIN. Idempotent and safe to interrupt.

    Checked again under the Go build lock: a caller that waited for another's build finds it done."""
    if _complete():
        return BIN
    with go_build_lock():
        BIN.mkdir(parents=True, exist_ok=True)
        # a kube built from other sources (or before the stamp existed) is rebuilt once
        if not _kube_current():
            tmp = BIN / "kube.partial"
            go(["build", "-ldflags", kube_ldflags(), "-o", str(tmp), "."], cwd=HERE / "kube")
            tmp.rename(BIN / "kube")
            (BIN / KUBE_STAMP).write_text(sources_key(*kube_sources(), extra=KUBERNETES) + "\n")
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["build"])
    parser.parse_args()
    print(build())
    return 0


if __name__ == "__main__":
    sys.exit(main())
