"""Container image archives written directly: tar layers and `docker save`-format archives (what
`ctr images import` and `docker load` read), for images built without a registry or a Dockerfile."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
    tar.addfile(info)


def add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
    tar.addfile(info)


def add_file(tar: tarfile.TarFile, name: str, path: Path, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = path.stat().st_size, mode, 0
    with path.open("rb") as f:
        tar.addfile(info, f)


def binary_layer(path: Path, binary: Path, dest: str, links: tuple[str, ...] = ()) -> Path:
    """A layer with one static binary at `dest` (+ symlinks to it in its directory) and a /tmp."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        parts = dest.strip("/").split("/")
        for i in range(1, len(parts)):
            add_dir(tar, "/".join(parts[:i]))
        add_dir(tar, "tmp", 0o1777)
        add_file(tar, dest.strip("/"), binary, 0o755)
        folder = "/".join(parts[:-1])
        for link in links:
            add_symlink(tar, f"{folder}/{link}", parts[-1])
    return path


def write_image_archive(path: Path, tags: list[str], layers: list[Path], config: dict[str, object]) -> Path:
    """A `docker save`-format archive of `layers` under `tags`; kept when it exists (cached by path)."""
    if path.exists():
        return path
    diff_ids = [f"sha256:{sha256_file(layer)}" for layer in layers]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "hack/kindnode.py"} for _ in layers],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    partial = path.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.GNU_FORMAT) as tar:
        layer_names = []
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            name = f"{diff_id.removeprefix('sha256:')}/layer.tar"
            add_dir(tar, name.split("/")[0])
            add_file(tar, name, layer, 0o644)
            layer_names.append(name)
        add_bytes(tar, config_name, config_bytes)
        manifest = [{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]
        add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    partial.rename(path)
    return path
