"""Render the Helm chart as deploy/carbontrack.yaml expects it: `python hack/render.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

if not __package__:  # run as `python hack/render.py`: import hack/ as the package it is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hack.binaries import BIN, KUBERNETES, build

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# Rendered from helm/carbontrack with default values by `make deploy`; do not edit by hand.\n"


def render(*extra: str, include_crds: bool = True, release: str = "carbontrack") -> str:
    build()
    args = [
        str(BIN / "helm"), "template", release, str(ROOT / "helm" / "carbontrack"),
        "--namespace", "carbontrack-system", "--kube-version", KUBERNETES.lstrip("v"), *extra,
    ]  # fmt: skip
    if include_crds:
        args.append("--include-crds")
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


if __name__ == "__main__":
    sys.stdout.write(HEADER + render())
