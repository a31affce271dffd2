"""What the Job should look like: a pure function of the CarbonTrackedJob (no I/O).

The user's pod template gets the sidecar as a *native sidecar* (an init container with
restartPolicy: Always, so the Job completes when the trainer exits), the env the trainer's client
needs, the downward-API pod identity, and a projected service-account token with audience
`carbontrack` that the operator verifies with a TokenReview. Injection is idempotent: injecting an
already injected template changes nothing. The sidecar's CARBONTRACK_OPERATOR_URL is the operator's own
address: with shards, the Service of the shard that builds the Job, which is the shard that serves the
job for its whole life (ha.sharding), so the pods' environment fixes where their telemetry goes; the
Job carries that shard's label, for its watch.

Distributed wiring (`spec.distributed.enabled`, on by default): the pods get `subdomain` = the job's
headless Service, so worker i is `<job>-<i>.<service>` in DNS (an Indexed Job names pod i's host
`<job>-<i>`), and every training container gets the env torchrun and torch.distributed read. Env
cannot change on a running pod and a running Job's template cannot change, so the per-stage value,
WORLD_SIZE, comes from a template annotation through a fieldRef: it is the stage the template was
written for (the canary at creation, the halted stage on a resume, when a suspended Job's template
annotations may change). Pods a scale-up adds get the same template: their WORLD_SIZE is that of the
older stage. Growth is therefore supported through torchrun's elastic rendezvous (PET_NNODES
`min:max`), which computes the world size itself at every re-rendezvous and overrides WORLD_SIZE,
RANK and MASTER_* for the processes it starts.
"""

from __future__ import annotations

import copy
from typing import Any

from carbontrack.api.contract import (
    CA_CONFIGMAP,
    CA_DIR,
    CA_VOLUME,
    COMPLETION_INDEX_ANNOTATION,
    ENV_ENERGY_BACKEND,
    ENV_HEALTH_PORT,
    ENV_JOB_NAME,
    ENV_JOB_NAMESPACE,
    ENV_OPERATOR_URL,
    ENV_POD_NAME,
    ENV_POD_NAMESPACE,
    ENV_POD_UID,
    ENV_RESUME_FROM,
    ENV_SIDECAR_ADDR,
    ENV_TOKEN_FILE,
    HEALTH_PORT,
    INJECTED_ANNOTATION,
    LABEL_JOB,
    LABEL_MANAGED,
    MASTER_PORT,
    RDZV_PORT,
    RESUME_ANNOTATION,
    SIDECAR_ADDR,
    SIDECAR_NAME,
    TOKEN_AUDIENCE,
    TOKEN_DIR,
    TOKEN_FILE,
    TOKEN_VOLUME,
    WORLD_SIZE_ANNOTATION,
    job_name_for,
    service_name_for,
)
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.state.config import SHARD_LABEL, OperatorConfig

__all__ = [
    "CA_CONFIGMAP",
    "SIDECAR_NAME",
    "InjectionError",
    "build_job",
    "build_service",
    "inject",
    "job_name_for",
    "service_name_for",
]


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


def _annotation_env(name: str, annotation: str) -> dict[str, Any]:
    return _field_env(name, f"metadata.annotations['{annotation}']")


def worker_host(ctj_name: str, index: int) -> str:
    """Worker `index`'s stable DNS name, relative to the job's namespace (the pod's DNS search path)."""
    return f"{job_name_for(ctj_name)}-{index}.{service_name_for(ctj_name)}"


def _check_names(ctj_name: str, replicas: int) -> None:
    """A Service name is a DNS-1035 label, and pod i's hostname `<job>-<i>` must fit in 63 characters."""
    svc = service_name_for(ctj_name)
    host = f"{job_name_for(ctj_name)}-{replicas - 1}"
    if "." in ctj_name or not svc[:1].isalpha() or len(host) > 63:
        raise InjectionError(
            f"distributed wiring needs a name that starts with a letter, has no dots and leaves room for "
            f"the worker index (at most {63 - len(str(replicas - 1)) - 1} characters): {ctj_name!r}; "
            "rename the job or set spec.distributed.enabled: false"
        )


def distributed_env(ctj_name: str, uid: str, spec: CarbonTrackedJobSpec) -> list[dict[str, Any]]:
    """What torchrun (PET_*) and torch.distributed (MASTER_*, RANK, WORLD_SIZE) read."""
    master = worker_host(ctj_name, 0)
    return [
        _env("PET_NNODES", f"{spec.canary.replicas}:{spec.replicas}"),
        _env("PET_RDZV_BACKEND", "c10d"),
        _env("PET_RDZV_ENDPOINT", f"{master}:{RDZV_PORT}"),
        _env("PET_RDZV_ID", uid or ctj_name),
        _annotation_env("PET_NODE_RANK", COMPLETION_INDEX_ANNOTATION),
        _annotation_env("RANK", COMPLETION_INDEX_ANNOTATION),
        _annotation_env("WORLD_SIZE", WORLD_SIZE_ANNOTATION),
        _env("MASTER_ADDR", master),
        _env("MASTER_PORT", str(MASTER_PORT)),
        # torchrun >= 2.4 shares the rendezvous TCPStore with the workers and publishes its address only
        # in the first round a node is rank 0: at a scale-up the worker 0 that survives skips it, and the
        # new node waits for MASTER_ADDR until it times out (torch 2.15: after 60 s, and then both
        # agents fail). Opting out rebuilds the workers' store in every round.
        _env("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1"),
    ]


def with_job_wiring(
    template: dict[str, Any], ctj_name: str, uid: str, spec: CarbonTrackedJobSpec, replicas: int
) -> dict[str, Any]:
    """The injected template with the halt's grace period, the resume env and (unless turned off) the
    distributed wiring. Env a container already sets is the user's and is kept."""
    out = copy.deepcopy(template)
    meta, pod = out.setdefault("metadata", {}), out["spec"]
    annotations = meta.setdefault("annotations", {})
    grace = spec.halt.grace_period_seconds
    pod["terminationGracePeriodSeconds"] = max(grace, int(pod.get("terminationGracePeriodSeconds") or 0))
    env = [_annotation_env(ENV_RESUME_FROM, RESUME_ANNOTATION)]
    if spec.distributed.enabled:
        _check_names(ctj_name, spec.replicas)
        subdomain = pod.get("subdomain")
        if subdomain not in (None, service_name_for(ctj_name)):
            raise InjectionError(
                f"the pod template sets subdomain {subdomain!r}: the distributed wiring uses the Service "
                f"{service_name_for(ctj_name)!r}; remove it or set spec.distributed.enabled: false"
            )
        pod["subdomain"] = service_name_for(ctj_name)
        annotations.setdefault(WORLD_SIZE_ANNOTATION, str(replicas))
        env += distributed_env(ctj_name, uid, spec)
    for container in pod["containers"]:
        have = {e.get("name") for e in container.setdefault("env", [])}
        container["env"].extend(e for e in env if e["name"] not in have)
    return out


def build_service(name: str, namespace: str, uid: str) -> dict[str, Any]:
    """The headless Service that gives each worker a DNS name. publishNotReadyAddresses: workers find
    each other while they start (rendezvous comes before any readiness)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name_for(name),
            "namespace": namespace,
            "labels": {LABEL_JOB: name, LABEL_MANAGED: "true", "app.kubernetes.io/managed-by": "carbontrack"},
            "ownerReferences": [_owner_reference(name, uid)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {LABEL_JOB: name},
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": "rendezvous", "port": RDZV_PORT, "targetPort": RDZV_PORT},
                {"name": "master", "port": MASTER_PORT, "targetPort": MASTER_PORT},
            ],
        },
    }


def _owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "carbontrack.io/v1alpha1",
        "kind": "CarbonTrackedJob",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_job(
    name: str, namespace: str, uid: str, spec: CarbonTrackedJobSpec, replicas: int, config: OperatorConfig
) -> dict[str, Any]:
    """The Indexed Job for a CarbonTrackedJob at `replicas` workers (parallelism = completions)."""
    template = with_job_wiring(inject(spec.template, name, namespace, config), name, uid, spec, replicas)
    labels = {LABEL_JOB: name, LABEL_MANAGED: "true", "app.kubernetes.io/managed-by": "carbontrack"}
    if config.sharding.enabled:  # the shard whose address the sidecars got, and whose Job watch sees it
        labels[SHARD_LABEL] = str(config.sharding.shard)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name_for(name),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [_owner_reference(name, uid)],
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
