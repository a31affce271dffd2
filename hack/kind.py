"""kind from its pinned Go module, and the e2e cluster it creates and deletes (hack/kindnode.py
chooses the node image)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hack.binaries import CACHE, go, go_build_lock, go_env

HERE = Path(__file__).resolve().parent
KIND = "v0.33.0"
CLUSTER = os.environ.get("CARBONTRACK_KIND_CLUSTER", "carbontrack-e2e")
KUBECONFIG = CACHE / "kind" / f"{CLUSTER}.kubeconfig"
POD_SUBNET = "10.244.0.0/16"


def log(msg: str) -> None:
    print(f"[kind {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def kind_module_dir() -> Path:
    """kind's module source (node files, base image recipe), from the Go module cache."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{KIND}"],
        env=go_env(),
        check=True,
        capture_output=True,
        text=True,
        cwd=HERE,
    ).stdout
    return Path(json.loads(out)["Dir"])


def kind_binary() -> Path:
    """kind from its pinned Go module, cached by version (checked again under the Go build lock: a caller
    that waited for another's build finds it done)."""
    target = CACHE / f"kind-{KIND}" / "kind"
    if target.exists():
        return target
    with go_build_lock():
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as gobin:
            go(
                ["install", "-ldflags", "-s -w", f"sigs.k8s.io/kind@{KIND}"],
                cwd=Path(gobin),
                extra_env={"GOBIN": gobin},
            )
            # the temporary folder may be on another filesystem: copy beside the target, then rename
            partial = target.with_suffix(".partial")
            shutil.move(str(Path(gobin) / "kind"), partial)
            partial.rename(target)
    return target


def cluster_config(image: str, local: bool) -> str:
    """kind's cluster config: one control-plane node of `image`; `local`: the node image made here,
    which carries a one-node bridge CNI config instead of kindnetd."""
    lines = [
        "kind: Cluster",
        "apiVersion: kind.x-k8s.io/v1alpha4",
        "networking:",
        f"  podSubnet: {POD_SUBNET}",
    ]
    if local:
        lines.append("  disableDefaultCNI: true")
    lines += [
        "nodes:",
        "- role: control-plane",
        f"  image: {image}",
        "kubeadmConfigPatches:",
        "- |",
        "  kind: KubeletConfiguration",
        "  # Kubernetes >= 1.35 refuses cgroup v1 hosts unless told (ignored on cgroup v2)",
        "  failCgroupV1: false",
    ]
    return "\n".join(lines) + "\n"


def kind(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(kind_binary()), *args], check=check, text=True, capture_output=True)


def cluster_exists() -> bool:
    return CLUSTER in kind("get", "clusters").stdout.split()


def create(image: str, local: bool) -> Path:
    """`kind create cluster` with `image` (see cluster_config); returns its kubeconfig."""
    KUBECONFIG.parent.mkdir(parents=True, exist_ok=True)
    config = KUBECONFIG.parent / f"{CLUSTER}.yaml"
    config.write_text(cluster_config(image, local))
    log(f"kind create cluster {CLUSTER} with {image}")
    started = time.monotonic()
    r = subprocess.run(
        [str(kind_binary()), "create", "cluster", "--name", CLUSTER, "--config", str(config),
         "--kubeconfig", str(KUBECONFIG), "--retain"],
        text=True,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(
            f"kind create cluster failed ({r.returncode}); `kind export logs --name {CLUSTER}`"
        )
    log(f"cluster {CLUSTER} created in {time.monotonic() - started:.0f} s")
    return KUBECONFIG


def down() -> None:
    if cluster_exists():
        kind("delete", "cluster", "--name", CLUSTER)
        log(f"deleted kind cluster {CLUSTER}")
    KUBECONFIG.unlink(missing_ok=True)
