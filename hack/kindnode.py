"""kind, and a kind node image for the pinned Kubernetes assembled here without any registry.

`kind build node-image` fetches etcd, CoreDNS, pause, kindnetd and the storage provisioner from their
registries; where none is reachable this module assembles the same result directly:

- the node's root filesystem: Debian bookworm by debootstrap with systemd, containerd 1.6, runc, iptables
  and Debian's CNI plugins (bridge, host-local, portmap, loopback);
- kind's own node files (entrypoint, systemd units, containerd config) from the pinned kind Go module;
- kubelet, kubeadm and kubectl: one binary from hack/kube built with `-tags node`;
- the images kubeadm runs, under the names `kubeadm config images list` prints, built FROM scratch from
  the same binary (apiserver, controller-manager, scheduler, etcd), plus kube-proxy on a minimal Debian
  with iptables, a pause built from hack/kube/pause and CoreDNS from hack/coredns
  (only the plugins kubeadm's Corefile uses), written as image archives here and imported into the node's
  containerd with `ctr images import`; then `docker commit`;
- no kindnetd: the cluster config disables kind's CNI and the node has a bridge + host-local CNI config
  for its one node; no storage provisioner.

Every part is cached by content under CARBONTRACK_CACHE (default ~/.cache/carbontrack): the root
filesystems, the binaries, the image archives; the node image itself is a local Docker image tagged by
the hash of all its inputs. Where a registry is reachable, CARBONTRACK_KIND_NODE_IMAGE names a standard
node image (e.g. kindest/node:v1.36.x) and kind's defaults (kindnetd) are kept.

kind itself and the cluster's creation are in hack/kind.py.

    python hack/kindnode.py kind        # build kind, print its path
    python hack/kindnode.py node-image  # assemble the node image, print its name
    python hack/kindnode.py up          # create the cluster (prints the kubeconfig path)
    python hack/kindnode.py down        # delete it
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

if not __package__:  # run as `python hack/kindnode.py`: import hack/ as the package it is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hack import images, kind
from hack.binaries import CACHE, KUBERNETES, go, go_build_lock, kube_ldflags, kube_sources, sources_key
from hack.kind import KIND, kind_binary, kind_module_dir
from hack.oci import add_bytes, add_dir, add_file, add_symlink, binary_layer, write_image_archive

HERE = Path(__file__).resolve().parent
NODE_POD_RANGE = "10.244.0.0/24"
NODE_PACKAGES = (
    "systemd", "dbus", "conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux", "mount",
    "kmod", "libseccomp2", "pigz", "bash", "ca-certificates", "curl", "jq", "procps", "containerd", "runc",
    "containernetworking-plugins", "socat", "e2fsprogs",
)  # fmt: skip
"""kind's base image packages (images/base/Dockerfile), with containerd, runc and CNI plugins from Debian."""
PROXY_PACKAGES = ("iptables", "nftables", "conntrack", "kmod", "ipset")
"""kube-proxy's image: what registry.k8s.io's distroless-iptables base carries."""
ASSEMBLY_VERSION = "1"
"""Bump when the assembly below changes in a way the input hashes do not see."""


def log(msg: str) -> None:
    print(f"[kindnode {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- programs


def node_programs() -> Path:
    """kube (with kubelet, kubeadm, kube-proxy), pause and coredns, cached by the hash of their sources
    (checked again under the Go build lock: a caller that waited for another's build finds it done)."""
    kube_dir, dns_dir = HERE / "kube", HERE / "coredns"
    srcs = [
        *kube_sources(),
        kube_dir / "pause" / "main.go",
        *(dns_dir / n for n in ("main.go", "go.mod", "go.sum")),
    ]
    out = CACHE / f"kindnode-programs-{KUBERNETES}-{sources_key(*srcs, extra=KUBERNETES)}"
    steps = (
        ("pause", kube_dir, ["-ldflags", "-s -w", "./pause"]),
        ("coredns", dns_dir, ["-ldflags", "-s -w", "."]),
        ("kube", kube_dir, ["-tags", "node", "-ldflags", kube_ldflags(), "."]),
    )
    if all((out / name).exists() for name, _, _ in steps):
        return out
    with go_build_lock():
        out.mkdir(parents=True, exist_ok=True)
        for name, cwd, args in steps:
            if (out / name).exists():
                continue
            partial = out / f"{name}.partial"
            go(["build", "-o", str(partial), *args], cwd=cwd)
            partial.rename(out / name)
    return out


def kubeadm_images(programs: Path) -> dict[str, str]:
    """kubeadm's own list of its images, by component: {"kube-apiserver": "registry.k8s.io/...", ...}."""
    out = subprocess.run(
        [str(programs / "kube"), "kubeadm", "config", "images", "list", f"--kubernetes-version={KUBERNETES}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    by_name = {ref.rsplit("/", 1)[-1].split(":")[0]: ref for ref in out}
    expected = {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd", "pause"}
    missing = expected - by_name.keys()
    if missing or "coredns" not in by_name:
        raise RuntimeError(f"kubeadm lists {out}; expected {sorted(expected)} and coredns")
    return by_name


def component_archives(programs: Path, refs: dict[str, str]) -> list[Path]:
    """The images kubeadm runs, as archives under the node-programs cache folder."""
    folder = programs / "images"
    folder.mkdir(exist_ok=True)
    path_env = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]}
    kube_layer = folder / "kube-layer.tar"
    if not kube_layer.exists():
        binary_layer(
            folder / "kube-layer.partial",
            programs / "kube",
            "/usr/local/bin/kube",
            ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "etcd"),
        ).rename(kube_layer)
    pause_layer = folder / "pause-layer.tar"
    if not pause_layer.exists():
        binary_layer(folder / "pause-layer.partial", programs / "pause", "/pause").rename(pause_layer)
    dns_layer = folder / "coredns-layer.tar"
    if not dns_layer.exists():
        binary_layer(folder / "coredns-layer.partial", programs / "coredns", "/coredns").rename(dns_layer)
    proxy_base = images.rootfs("kubeproxy", PROXY_PACKAGES)
    control = [refs[n] for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")]
    return [
        write_image_archive(folder / "control-plane.tar", control, [kube_layer], path_env),
        write_image_archive(
            folder / "kube-proxy.tar",
            [refs["kube-proxy"]],
            [proxy_base, kube_layer],
            {"Env": ["PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        ),
        write_image_archive(
            folder / "pause.tar", [refs["pause"]], [pause_layer], {"Entrypoint": ["/pause"], "User": "65535"}
        ),
        write_image_archive(
            folder / "coredns.tar", [refs["coredns"]], [dns_layer], {"Entrypoint": ["/coredns"], **path_env}
        ),
    ]


# ---------------------------------------------------------------------------------------- the node


CNI_CONFIG = {
    "cniVersion": "0.4.0",
    "name": "kind-bridge",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": NODE_POD_RANGE}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}

STORAGE_NOTE = """\
# This node image has no storage provisioner (hack/kindnode.py); kind applies this file
# in place of its default StorageClass.
apiVersion: v1
kind: ConfigMap
metadata:
  name: kind-node-storage
  namespace: kube-system
data:
  provisioner: none
"""

# kind's images/base/Dockerfile RUN steps, plus what kind's node-image build does to containerd's config.
SETUP_SCRIPT = r"""
set -eux
find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete
rm -f /lib/systemd/system/multi-user.target.wants/*
rm -f /etc/systemd/system/*.wants/*
rm -f /lib/systemd/system/local-fs.target.wants/*
rm -f /lib/systemd/system/sockets.target.wants/*udev*
rm -f /lib/systemd/system/sockets.target.wants/*initctl*
rm -f /lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >> /etc/systemd/journald.conf
ln -sf /usr/lib/systemd/systemd /sbin/init
systemctl enable kubelet.service containerd.service undo-mount-hacks.service
systemctl mask systemd-binfmt.service
mkdir -p /etc/kubernetes/manifests /opt/cni /var/lib/kubelet
rm -f /etc/machine-id && touch /etc/machine-id
hook='{"path": "/kind/bin/mount-product-files.sh"}'
ctr oci spec \
  | jq ".hooks.createContainer[.hooks.createContainer| length] |= . + $hook" \
  | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json
sed -i "s#sandbox_image = .*#sandbox_image = \"$PAUSE_IMAGE\"#" /etc/containerd/config.toml
# Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which this machine's bounding set lacks (runc
# then fails with "can't get final child's PID from pipe: EOF"): keep pods' adj at or above containerd's.
sed -i "s#restrict_oom_score_adj = .*#restrict_oom_score_adj = true#" /etc/containerd/config.toml
grep -q "restrict_oom_score_adj = true" /etc/containerd/config.toml
kubelet --version && kubeadm version -o short && containerd --version && runc --version | head -1
"""


def overlay_tar(path: Path, programs: Path, kind_dir: Path, pause_ref: str) -> Path:
    """Files the node needs on top of the Debian root filesystem (modes as kind's Dockerfile sets them)."""
    files = kind_dir / "images" / "base" / "files"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for src in sorted(files.rglob("*")):
            rel = src.relative_to(files).as_posix()
            if src.is_dir():
                add_dir(tar, rel)
            else:
                executable = rel.startswith(("usr/local/bin/", "kind/bin/"))
                add_file(tar, rel, src, 0o755 if executable else 0o644)
        add_file(tar, "usr/bin/kube", programs / "kube", 0o755)
        for name in ("kubelet", "kubeadm", "kubectl"):
            add_symlink(tar, f"usr/bin/{name}", "kube")
        add_symlink(tar, "usr/local/bin/containerd", "/usr/bin/containerd")
        add_dir(tar, "opt")
        add_symlink(tar, "opt/cni/bin", "/usr/lib/cni")
        add_bytes(tar, "kind/version", KUBERNETES.encode())
        add_dir(tar, "kind/manifests")
        add_bytes(tar, "kind/manifests/default-storage.yaml", STORAGE_NOTE.encode())
        add_dir(tar, "etc/cni/net.d")
        add_bytes(tar, "etc/cni/net.d/10-kind-bridge.conflist", json.dumps(CNI_CONFIG, indent=2).encode())
        add_bytes(tar, "kind/pause-image", pause_ref.encode())
    return path


def docker(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


@contextmanager
def build_container(image: str) -> Iterator[str]:
    cid = docker("run", "-d", "--privileged", "--entrypoint=sleep", image, "infinity").stdout.strip()
    try:
        yield cid
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", cid], capture_output=True)


def _import_archives(cid: str, archives: list[Path], refs: dict[str, str]) -> None:
    """Import the image archives into the build container's containerd (k8s.io namespace, pinned, as
    kind's node-image build does), then stop it; fails when an image kubeadm lists is missing."""
    docker("exec", cid, "bash", "-c", "nohup containerd > /var/log/containerd-build.log 2>&1 &")
    docker(
        "exec",
        cid,
        "bash",
        "-c",
        "for i in $(seq 50); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done;"
        " ctr version",
    )
    for archive in archives:
        log(f"importing {archive.name}")
        with archive.open("rb") as f:
            subprocess.run(
                ["docker", "exec", "-i", cid, "ctr", "--namespace=k8s.io", "images", "import",
                 "--label=io.cri-containerd.pinned=pinned", "--all-platforms", "--no-unpack",
                 "--digests", "-"],
                stdin=f, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
    listed = set(docker("exec", cid, "ctr", "--namespace=k8s.io", "images", "list", "-q").stdout.split())
    missing = set(refs.values()) - listed
    if missing:
        raise RuntimeError(f"not in the node's containerd after import: {sorted(missing)}")
    docker("exec", cid, "bash", "-c", "kill $(pidof containerd); while pidof containerd; do sleep 0.2; done")


def _assemble(name: str, base: str, programs: Path, archives: list[Path], refs: dict[str, str]) -> None:
    """The node image `name`: the overlay and kind's setup steps on `base`, the images imported, committed."""
    with tempfile.TemporaryDirectory() as tmp, build_container(base) as cid:
        overlay = overlay_tar(Path(tmp) / "overlay.tar", programs, kind_module_dir(), refs["pause"])
        with overlay.open("rb") as f:
            subprocess.run(["docker", "cp", "-", f"{cid}:/"], stdin=f, check=True)
        docker("exec", "-e", f"PAUSE_IMAGE={refs['pause']}", cid, "bash", "-c", SETUP_SCRIPT)
        _import_archives(cid, archives, refs)
        docker(
            "commit",
            "--change",
            'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]',
            "--change",
            "CMD []",
            cid,
            name,
        )


def node_image() -> str:
    """The local node image's name, assembled if Docker does not have it yet (tagged by the hash of
    all its inputs)."""
    started = time.monotonic()
    programs = node_programs()
    refs = kubeadm_images(programs)
    archives = component_archives(programs, refs)
    node_rootfs = images.rootfs("kindnode", NODE_PACKAGES)
    key = hashlib.sha256(
        "|".join(
            [ASSEMBLY_VERSION, KIND, node_rootfs.name, programs.name, *(a.name for a in archives)]
        ).encode()
        + SETUP_SCRIPT.encode()
        + json.dumps(CNI_CONFIG).encode()
    ).hexdigest()[:12]
    name = f"carbontrack-local/kind-node:{KUBERNETES}-{key}"
    if images.image_exists(name):
        return name
    base = images.import_rootfs(
        node_rootfs,
        "carbontrack-local/kind-node-base",
        changes=("ENV container=docker",),
    )
    log(f"assembling {name}")
    _assemble(name, base, programs, archives, refs)
    log(f"{name} assembled in {time.monotonic() - started:.0f} s")
    return name


# ---------------------------------------------------------------------------------------- the cluster


def up() -> Path:
    """Create the cluster when it does not exist, with CARBONTRACK_KIND_NODE_IMAGE or the node image
    made here; returns its kubeconfig."""
    if kind.cluster_exists() and kind.KUBECONFIG.exists():
        return kind.KUBECONFIG
    standard = os.environ.get("CARBONTRACK_KIND_NODE_IMAGE")
    return kind.create(standard or node_image(), local=not standard)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["kind", "node-image", "up", "down"])
    args = parser.parse_args()
    if args.action == "kind":
        print(kind_binary())
    elif args.action == "node-image":
        print(node_image())
    elif args.action == "up":
        print(up())
    else:
        kind.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
