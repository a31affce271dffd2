"""Render the Helm chart as deploy/carbontrack.yaml expects it: `python tests/cluster/render.py`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.cluster.controlplane import BIN, KUBERNETES, build

ROOT = Path(__file__).resolve().parents[2]
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
