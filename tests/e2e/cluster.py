"""The kind cluster as the e2e tests use it: kubectl and helm with its kubeconfig, the release and the
namespaces the chart and the jobs go to, and a wait."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hack.binaries import BIN

from tests.cases.crs import manifest

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "carbontrack"
OPERATOR_NS = "carbontrack-system"
JOBS_NS = "e2e"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@dataclass
class Kind:
    kubeconfig: Path
    image: str

    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig))

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "kubectl"), *args],
            input=input,
            text=True,
            capture_output=True,
            env=self.env(),
            check=check,
            timeout=300,
        )

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "helm"), *args],
            text=True,
            capture_output=True,
            env=self.env(),
            check=True,
            timeout=600,
        )

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def wait(cond: Any, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
    "readOnlyRootFilesystem": True,
}


def ctj(name: str, image: str, replicas: int, steps: int, canary: dict[str, Any]) -> dict[str, Any]:
    """The CarbonTrackedJob the e2e tests run, the one docs/getting-started.md shows (a test holds that)."""
    spec = {
        "replicas": replicas,
        "totalSteps": steps,
        "canary": canary,
        "carbon": {"zone": "DE", "pue": 1.2},
        "gates": {"quality": {"metric": "eval_accuracy", "minScore": 0.9}},
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "trainer",
                        "image": image,
                        "command": ["python3", "/opt/trainer/trainer.py"],
                        "env": [
                            {"name": "TRAIN_STEPS", "value": str(steps)},
                            {"name": "TRAIN_STEP_SECONDS", "value": "0.1"},
                        ],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        "securityContext": RESTRICTED_CONTAINER,
                        "volumeMounts": [{"name": "trainer", "mountPath": "/opt/trainer"}],
                    }
                ],
                "volumes": [{"name": "trainer", "configMap": {"name": "trainer"}}],
            }
        },
    }
    return manifest(name, spec, namespace=JOBS_NS)


def first_job(name: str, image: str) -> dict[str, Any]:
    """The lifecycle test's job: two workers after a one-worker canary, 300 steps, a quality gate."""
    return ctj(
        name, image, replicas=2, steps=300, canary={"replicas": 1, "minSteps": 20, "stages": [50, 100]}
    )
