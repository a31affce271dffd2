"""Names the operator, the sidecar and the trainer's client must agree on, defined once.

Standard library only: `carbontrack.trainer.client` imports it, and the client must run in any training
image (no pydantic there). A name changed here changes on every side at once.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Final

# The telemetry token: a projected service-account token with this audience, checked by TokenReview.
TOKEN_AUDIENCE: Final = "carbontrack"
TOKEN_VOLUME: Final = "carbontrack-token"
TOKEN_DIR: Final = "/var/run/secrets/carbontrack"
TOKEN_FILE: Final = f"{TOKEN_DIR}/token"

# The CA bundle sidecars trust for the operator's HTTPS: a ConfigMap (key ca.crt) the operator writes
# in each job's namespace, mounted into the sidecar.
CA_CONFIGMAP: Final = "carbontrack-ca"
CA_VOLUME: Final = "carbontrack-ca"
CA_DIR: Final = "/var/run/carbontrack/ca"

# The injected sidecar: markers on loopback UDP, health on the pod IP (the kubelet probes it).
SIDECAR_NAME: Final = "carbontrack-sidecar"
SIDECAR_PORT: Final = 9477
HEALTH_PORT: Final = 9478
SIDECAR_ADDR: Final = f"127.0.0.1:{SIDECAR_PORT}"

# Labels and annotations on the Job and its pods.
LABEL_JOB: Final = "carbontrack.io/job"
LABEL_MANAGED: Final = "carbontrack.io/managed"
INJECTED_ANNOTATION: Final = "carbontrack.io/injected"

# Distributed training: a headless Service per job gives every worker a stable DNS name
# (`<job>-<index>.<service>`), and the torch elastic env points at worker 0 (see workload.jobbuilder).
RDZV_PORT: Final = 29400
"""torchrun's c10d rendezvous store on worker 0 (torchrun's own default port)."""
MASTER_PORT: Final = 29500
"""torch.distributed's env:// store on worker 0, for trainers started without torchrun (torch's default)."""
COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
"""Set by the Job controller on every pod of an Indexed Job: the worker's index, read through a fieldRef."""
WORLD_SIZE_ANNOTATION: Final = "carbontrack.io/world-size"
"""Workers of the stage the pod template was last written for (creation, or a resume while suspended)."""
RESUME_ANNOTATION: Final = "carbontrack.io/resume-from"
"""The checkpoint a resumed job starts from (`<step> <uri>`), written on the template while suspended."""

# A person's decision on a Paused job, written by `carbontrack approve|reject` (or kubectl annotate).
APPROVE_ANNOTATION: Final = "carbontrack.io/approve"
REJECT_ANNOTATION: Final = "carbontrack.io/reject"
# pre-training | fine-tuning, for `carbontrack report --format model-card` (its flag wins).
TRAINING_TYPE_ANNOTATION: Final = "carbontrack.io/training-type"

# Environment the operator injects (the sidecar and the client read it).
ENV_PREFIX: Final = "CARBONTRACK_"
ENV_SIDECAR_ADDR: Final = "CARBONTRACK_SIDECAR_ADDR"
ENV_OPERATOR_URL: Final = "CARBONTRACK_OPERATOR_URL"
ENV_JOB_NAME: Final = "CARBONTRACK_JOB_NAME"
ENV_JOB_NAMESPACE: Final = "CARBONTRACK_JOB_NAMESPACE"
ENV_ENERGY_BACKEND: Final = "CARBONTRACK_ENERGY_BACKEND"
ENV_HEALTH_PORT: Final = "CARBONTRACK_HEALTH_PORT"
ENV_TOKEN_FILE: Final = "CARBONTRACK_TOKEN_FILE"
ENV_RESUME_FROM: Final = "CARBONTRACK_RESUME_FROM"
"""`<step> <uri>` of the checkpoint a resumed pod starts from; empty on a fresh start."""
ENV_POD_NAME: Final = "POD_NAME"
ENV_POD_NAMESPACE: Final = "POD_NAMESPACE"
ENV_POD_UID: Final = "POD_UID"


class Phase(StrEnum):
    """Where the job is in its life: Invalid means the spec or template cannot run (see conditions)."""

    PENDING = "Pending"
    DEFERRED = "Deferred"
    """Waiting for a clean grid (spec.carbon.schedule): the Job exists, suspended."""
    CANARY = "Canary"
    PROMOTING = "Promoting"
    RUNNING = "Running"
    HALTED = "Halted"
    PAUSED = "Paused"
    """A gate was Inconclusive, or a stage needs a person's approval: `carbontrack approve|reject`."""
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INVALID = "Invalid"
    """The spec or its template cannot be run; nothing was created. An edit retries."""

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


def job_name_for(ctj_name: str) -> str:
    """The Indexed Job a CarbonTrackedJob creates: its name, cut to a DNS label's 63 characters."""
    return ctj_name[:63]


def service_name_for(ctj_name: str) -> str:
    """The headless Service: named like the Job (a Service and a Job never clash)."""
    return job_name_for(ctj_name)


def kube_time(timestamp: object) -> float | None:
    """A timestamp as the apiserver writes it (RFC 3339, `2026-12-07T05:31:01Z`) in Unix seconds; None
    when it is missing or not one."""
    if not isinstance(timestamp, str):
        return None
    try:
        return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
