"""Container images without a registry: a Debian base from debootstrap, and the carbontrack image.

Where a registry answers, the Dockerfile's default base (python:3.12-slim) is pulled as usual. Where
none does (this machine), `base` makes Debian bookworm with its python3 by `debootstrap` from Debian's
package mirror, caches the root filesystem as a tarball under CARBONTRACK_CACHE (default
~/.cache/carbontrack), and `docker import`s it; the Dockerfile then builds FROM it (build ARG BASE).
The .deb files debootstrap downloads are kept too (rootfs/debs-<suite>/), so every root filesystem made
here (this base, and kube-proxy's and the kind node's in hack/kindnode.py) downloads a package once.

    python hack/images.py base      # prints the local base image's name
    python hack/images.py image     # builds ghcr.io/carbontrack/carbontrack:<version>
    python hack/images.py smoke     # runs both commands in the image (read-only, non-root)

Env: CARBONTRACK_BASE_IMAGE=python:3.12-slim skips debootstrap and uses that base instead.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

if not __package__:  # run as `python hack/images.py`: import hack/ as the package it is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hack.binaries import file_lock

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("CARBONTRACK_CACHE", "~/.cache/carbontrack")).expanduser()
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PYTHON_PACKAGES = ("python3", "python3-venv", "ca-certificates")
REPOSITORY = "ghcr.io/carbontrack/carbontrack"


def log(msg: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def image_name() -> str:
    return f"{REPOSITORY}:{version()}"


def docker_env() -> dict[str, str]:
    """The classic builder: BuildKit would fetch its frontend or buildx from a registry/plugin."""
    return dict(os.environ, DOCKER_BUILDKIT="0")


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def debootstrap_command(target: Path, packages: tuple[str, ...], variant: str, debs: Path) -> list[str]:
    """debootstrap's command line; `debs`: the folder of downloaded packages it reuses (each checked
    against the mirror's checksums first) and adds to."""
    return [
        "debootstrap",
        f"--variant={variant}",
        f"--include={','.join(packages)}",
        f"--cache-dir={debs.resolve()}",
        SUITE,
        str(target),
        MIRROR,
    ]


def rootfs(name: str, packages: tuple[str, ...], *, variant: str = "minbase") -> Path:
    """A debootstrapped Debian root filesystem as a cached tarball (keyed by suite, variant, packages).

    One debootstrap at a time on this machine (a lock; checked again under it): two would download the
    same packages into the shared folder at once."""
    key = hashlib.sha256(f"{SUITE}|{variant}|{','.join(sorted(packages))}|v1".encode()).hexdigest()[:12]
    tarball = CACHE / "rootfs" / f"{name}-{SUITE}-{key}.tar"
    if tarball.exists():
        return tarball
    if not shutil.which("debootstrap"):
        raise RuntimeError("debootstrap is not installed (make setup installs it as root)")
    with file_lock(CACHE / "rootfs" / "debootstrap.lock"):
        if not tarball.exists():
            _debootstrap(tarball, packages, variant)
    return tarball


def _debootstrap(tarball: Path, packages: tuple[str, ...], variant: str) -> None:
    debs = CACHE / "rootfs" / f"debs-{SUITE}"
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=tarball.parent) as tmp:
        target = Path(tmp) / "root"
        log(f"debootstrap {SUITE} ({variant}) with {', '.join(packages)}")
        started = time.monotonic()
        cmd = debootstrap_command(target, packages, variant, debs)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        # apt's downloaded packages and lists are not part of the image
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (target / sub).glob("*"):
                if p.is_file():
                    p.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(target), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
        log(f"{tarball.name} made in {time.monotonic() - started:.0f} s")


def host_ca_files() -> dict[str, bytes]:
    """The machine's locally added CAs (e.g. a TLS-inspecting proxy's) and its bundle, for the local base.

    Without them pip in the image build cannot reach PyPI where the machine's egress re-signs TLS.
    Only the locally made base gets them; a base from a registry is used as it is.
    """
    local = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not local or not bundle.exists():
        return {}
    files = {f"usr/local/share/ca-certificates/{p.name}": p.read_bytes() for p in local}
    files["etc/ssl/certs/ca-certificates.crt"] = bundle.read_bytes()
    return files


def import_rootfs(
    tarball: Path, repo: str, changes: tuple[str, ...] = (), extra: dict[str, bytes] | None = None
) -> str:
    """`docker import` a rootfs tarball once (with `extra` files added or replaced); tagged by content key."""
    extra = extra or {}
    key = tarball.stem.rsplit("-", 1)[-1]
    if extra:
        digest = hashlib.sha256()
        for path in sorted(extra):
            digest.update(path.encode() + b"\0" + extra[path])
        key += "-" + digest.hexdigest()[:8]
    name = f"{repo}:{key}"
    if image_exists(name):
        return name
    log(f"docker import {tarball.name} as {name}")
    cmd = ["docker", "import"]
    for change in changes:
        cmd += ["--change", change]
    if not extra:
        subprocess.run([*cmd, str(tarball), name], check=True, stdout=subprocess.DEVNULL)
        return name
    proc = subprocess.Popen([*cmd, "-", name], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stdin is not None
    with tarfile.open(tarball) as src, tarfile.open(fileobj=proc.stdin, mode="w|") as dst:
        for member in src:
            if member.name.removeprefix("./") in extra:
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for path, data in extra.items():
            info = tarfile.TarInfo("./" + path)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            dst.addfile(info, io.BytesIO(data))
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"docker import of {tarball} failed")
    return name


def base() -> str:
    """The base image to build FROM: $CARBONTRACK_BASE_IMAGE, or Debian bookworm + python3 made here."""
    explicit = os.environ.get("CARBONTRACK_BASE_IMAGE")
    if explicit:
        return explicit
    tarball = rootfs("python", PYTHON_PACKAGES)
    return import_rootfs(tarball, "carbontrack-local/debian-python3", extra=host_ca_files())


def build_image(name: str | None = None) -> str:
    name = name or image_name()
    base_image = base()
    log(f"docker build {name} FROM {base_image}")
    subprocess.run(
        ["nice", "-n", "10", "docker", "build", "--build-arg", f"BASE={base_image}", "-t", name, str(ROOT)],
        check=True,
        env=docker_env(),
    )
    return name


def smoke(name: str | None = None) -> None:
    """Both commands start in the image as it runs in the cluster: non-root, read-only root filesystem."""
    name = name or image_name()
    run = ["docker", "run", "--rm", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
    user = subprocess.run(
        [*run, "--entrypoint", "id", name, "-u"], check=True, capture_output=True, text=True
    ).stdout.strip()
    if user == "0":
        raise RuntimeError("the image runs as root")
    # The sidecar serves /healthz; the operator starts kopf, which (no cluster here) fails to log in.
    cid = subprocess.run(
        [*run[:-1], "-d", "-e", "CARBONTRACK_ENERGY_BACKEND=simulated", name, "sidecar"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        for _ in range(60):
            r = subprocess.run(
                ["docker", "exec", cid, "python3", "-c",
                 "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9478/healthz').status)"],
                capture_output=True, text=True,
            )  # fmt: skip
            if r.returncode == 0 and r.stdout.strip() == "200":
                break
            time.sleep(0.5)
        else:
            logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True)
            raise RuntimeError(f"sidecar did not serve /healthz: {logs.stdout}{logs.stderr}")
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    log(f"sidecar: serves /healthz as uid {user} on a read-only root filesystem")
    # Without a cluster kopf's startup activity fails to find one and retries: that log line means it ran.
    cid = subprocess.run([*run[:-1], "-d", name], check=True, capture_output=True, text=True).stdout.strip()
    try:
        for _ in range(120):
            logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True)
            if "kopf.activities.startup" in logs.stdout + logs.stderr:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"operator did not start kopf: {(logs.stdout + logs.stderr)[-2000:]}")
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    log("operator: kopf started (and, without a cluster, looks for one)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["base", "image", "smoke"])
    args = parser.parse_args()
    if args.action == "base":
        print(base())
    elif args.action == "image":
        print(build_image())
    else:
        smoke()
    return 0


if __name__ == "__main__":
    sys.exit(main())
