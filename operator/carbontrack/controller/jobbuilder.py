"""What the Job should look like: a pure function of the CarbonTrackedJob (no I/O).

The user's pod template gets the sidecar as a *native sidecar* (an init container with
restartPolicy: Always, so the Job completes when the trainer exits), the env the trainer's client
needs, the downward-API pod identity, and a projected service-account token with audience
`carbontrack` that the operator verifies with a TokenReview. Injection is idempotent: injecting an
already injected template changes nothing.
"""

from __future__ import annotations

import copy
from typing import Any

from carbontrack.api.contract import (
    CA_CONFIGMAP,
    CA_DIR,
    CA_VOLUME,
    ENV_ENERGY_BACKEND,
    ENV_HEALTH_PORT,
    ENV_JOB_NAME,
    ENV_JOB_NAMESPACE,
    ENV_OPERATOR_URL,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_POD_UID,
    ENV_SIDECAR_ADDR,
    ENV_TOKEN_FILE,
    HEALTH_PORT,
    INJECTED_ANNOTATION,
    LABEL_JOB,
    LABEL_MANAGED,
    SIDECAR_ADDR,
    SIDECAR_NAME,
    TOKEN_AUDIENCE,
    TOKEN_DIR,
    TOKEN_FILE,
    TOKEN_VOLUME,
)
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.controller.config import OperatorConfig

__all__ = ["CA_CONFIGMAP", "SIDECAR_NAME", "InjectionError", "build_job", "inject", "job_name_for"]


class InjectionError(ValueError):
    """The template cannot be injected (say, it already has a container named like the sidecar)."""


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def sidecar_container(job_name: str, namespace: str, config: OperatorConfig) -> dict[str, Any]:
    return {
        "name": SIDECAR_NAME,
        "image": config.sidecar_image,
        "args": ["sidecar"],
        "restartPolicy": "Always",
        "env": [
            _env(ENV_OPERATOR_URL, config.operator_url),
            _env(ENV_JOB_NAME, job_name),
            _env(ENV_JOB_NAMESPACE, namespace),
            _env(ENV_ENERGY_BACKEND, config.sidecar_backend),
            _env(ENV_SIDECAR_ADDR, SIDECAR_ADDR),
            _env(ENV_HEALTH_PORT, str(HEALTH_PORT)),
            _env(ENV_TOKEN_FILE, TOKEN_FILE),
            # No GPU for the sidecar by default: the trainer's client reads its own GPUs. Only the opt-in
            # nvml mode asks the nvidia runtime for the node's GPUs (NVIDIA's hardening guide forbids this
            # in most clusters; CDI and GKE ignore it), and measures only the trainer's NVML UUIDs there.
            *([_env("NVIDIA_VISIBLE_DEVICES", "all")] if config.sidecar_backend == "nvml" else []),
            _field_env(ENV_POD_NAME, "metadata.name"),
            _field_env(ENV_POD_NAMESPACE, "metadata.namespace"),
            _field_env(ENV_POD_UID, "metadata.uid"),
        ],
        "resources": {
            "requests": {"cpu": config.sidecar_cpu, "memory": config.sidecar_memory},
            "limits": {"cpu": config.sidecar_cpu, "memory": config.sidecar_memory},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "startupProbe": {
            # no `host`: restricted Pod Security forbids probe hosts; the kubelet probes the pod IP
            "httpGet": {"path": "/healthz", "port": HEALTH_PORT},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}],
    }


def uses_tls(config: OperatorConfig) -> bool:
    return config.operator_url.startswith("https://")


def inject(template: dict[str, Any], job_name: str, namespace: str, config: OperatorConfig) -> dict[str, Any]:
    """The user's pod template with the sidecar, the client env and the token volume added."""
    out = copy.deepcopy(template)
    meta = out.setdefault("metadata", {})
    spec = out.setdefault("spec", {})
    if meta.get("annotations", {}).get(INJECTED_ANNOTATION) == "true":
        return out
    names = {c.get("name") for c in spec.get("containers", []) + spec.get("initContainers", [])}
    if SIDECAR_NAME in names:
        raise InjectionError(f"the pod template already has a container named {SIDECAR_NAME!r}")
    for volume in (TOKEN_VOLUME, CA_VOLUME):
        if volume in {v.get("name") for v in spec.get("volumes", [])}:
            raise InjectionError(f"the pod template already has a volume named {volume!r}")
    if not spec.get("containers"):
        raise InjectionError("the pod template has no containers")
    meta.setdefault("labels", {}).update({LABEL_JOB: job_name, LABEL_MANAGED: "true"})
    meta.setdefault("annotations", {})[INJECTED_ANNOTATION] = "true"
    sidecar = sidecar_container(job_name, namespace, config)
    if uses_tls(config):  # the sidecar verifies the operator's certificate against the published CA
        sidecar["env"].append(_env("CARBONTRACK_CA_FILE", f"{CA_DIR}/ca.crt"))
        sidecar["volumeMounts"].append({"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True})
        spec.setdefault("volumes", []).append(
            {
                "name": CA_VOLUME,
                "configMap": {"name": CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]},
            }
        )
    spec["initContainers"] = [sidecar, *spec.get("initContainers", [])]
    for container in spec["containers"]:
        env = container.setdefault("env", [])
        if not any(e.get("name") == ENV_SIDECAR_ADDR for e in env):
            env.append(_env(ENV_SIDECAR_ADDR, SIDECAR_ADDR))
    spec.setdefault("volumes", []).append(
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": TOKEN_AUDIENCE,
                            "expirationSeconds": 3600,
                            "path": "token",
                        }
                    }
                ]
            },
        }
    )
    spec.setdefault("restartPolicy", "Never")
    return out


def job_name_for(ctj_name: str) -> str:
    return ctj_name[:63]


def build_job(
    name: str, namespace: str, uid: str, spec: CarbonTrackedJobSpec, replicas: int, config: OperatorConfig
) -> dict[str, Any]:
    """The Indexed Job for a CarbonTrackedJob at `replicas` workers (parallelism = completions)."""
    template = inject(spec.template, name, namespace, config)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name_for(name),
            "namespace": namespace,
            "labels": {LABEL_JOB: name, LABEL_MANAGED: "true", "app.kubernetes.io/managed-by": "carbontrack"},
            "ownerReferences": [
                {
                    "apiVersion": "carbontrack.io/v1alpha1",
                    "kind": "CarbonTrackedJob",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": replicas,
            "parallelism": replicas,
            "backoffLimitPerIndex": 2,
            "maxFailedIndexes": 0,
            "suspend": spec.suspend,
            "podReplacementPolicy": "Failed",
            "template": template,
        },
    }
