"""Every person's decision on a job, kept where an edit of status cannot reach: the job's decision log.

status.decisions shows the last 10, and whoever may patch status may empty it; Events expire within
the hour. The log keeps each decision (Approved, Rejected, Ignored, Refused) as one ConfigMap of its
own in the job's namespace, created `immutable` (no one, an administrator included, can change its
data afterwards), owned by the CarbonTrackedJob (deleted with it) and labelled
`carbontrack.io/decision-log: <job>`. One object per decision makes the log append-only by
construction: the operator needs only `create`, never a read-modify-write of a shared object, and no
object grows towards the 1 MiB limit. The name comes from the annotation's hash, so a decision recorded
twice (the status patch after a create lost) is one object; a name already taken by anything else is
an error, never a second entry. The chart's admission policy (`<release>-decision-log`) lets only the
operator's ServiceAccount create such a ConfigMap, and nobody move its label.

    kubectl get cm -n ml -l carbontrack.io/decision-log=llama --sort-by=.data.at \\
      -o custom-columns=AT:.data.at,DECISION:.data.decision,BY:.data.by,STAGE:.data.stage,WHY:.data.reason

`DecisionLog` is the interface the judgement writes through: a database ledger can take the log over by
implementing it, and import these entries with `record_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.crd import GROUP, KIND, VERSION, DecisionRecord
from carbontrack.state.kube_writes import write

LABEL = "carbontrack.io/decision-log"
"""On each entry: the job's name (cut to a label value's 63 characters; the owner's uid tells apart
two jobs that share a cut name)."""
_FIELDS = ("decision", "by", "reason", "at", "stage", "phase")


class DecisionLogError(Exception):
    """The decision could not be kept: the judgement does not act on it until it is."""


@dataclass(frozen=True)
class JobRef:
    """The CarbonTrackedJob a decision is about: the owner of its log entries."""

    namespace: str
    name: str
    uid: str


class DecisionLog(Protocol):
    async def append(self, job: JobRef, record: DecisionRecord, token: str) -> None:
        """Keep the decision (idempotent per `token`), or raise DecisionLogError."""


def label_value(job: str) -> str:
    """The label value naming the job: at most 63 characters, ending alphanumeric."""
    return job[:63].rstrip("-.")


def entry_name(job: str, token: str) -> str:
    """`<job>-decision-<hash>`, within a DNS subdomain's 253 characters."""
    suffix = f"-decision-{token[:16]}"
    return job[: 253 - len(suffix)].rstrip("-.") + suffix


def entry_body(job: JobRef, record: DecisionRecord, token: str) -> dict[str, Any]:
    """The ConfigMap of one decision: each field of the record a data key, and the annotation's hash."""
    doc = record.model_dump(by_alias=True, mode="json")
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": job.name, "uid": job.uid}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": entry_name(job.name, token),
            "namespace": job.namespace,
            "labels": {LABEL: label_value(job.name), "app.kubernetes.io/name": "carbontrack"},
            "ownerReferences": [owner],
        },
        "immutable": True,
        "data": {**{key: str(doc[key]) for key in _FIELDS}, "token": token},
    }


def is_entry_of(job: JobRef, token: str, metadata: Any, data: dict[str, str] | None) -> bool:
    """An existing ConfigMap is this decision's entry: labelled, owned by this job, with this hash."""
    labels = getattr(metadata, "labels", None) or {}
    owners = getattr(metadata, "owner_references", None) or []
    return (
        labels.get(LABEL) == label_value(job.name)
        and any(o.uid == job.uid for o in owners)
        and (data or {}).get("token") == token
    )


def record_of(data: dict[str, str]) -> DecisionRecord:
    """One entry's data back as the record it was written from."""
    return DecisionRecord.model_validate({key: data[key] for key in _FIELDS})


def _why(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}"


class ConfigMapDecisionLog:
    """The log as immutable ConfigMaps, one per decision (needs `create` and `get` on configmaps)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    async def append(self, job: JobRef, record: DecisionRecord, token: str) -> None:
        body = entry_body(job, record, token)
        name = body["metadata"]["name"]
        try:
            await write(self._core.create_namespaced_config_map, job.namespace, body)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise DecisionLogError(f"creating ConfigMap {name}: {_why(exc)}") from exc
        try:  # the name is taken: this decision, kept by an earlier round, or something else
            found = await self._core.read_namespaced_config_map(name, job.namespace)
        except ApiException as exc:
            raise DecisionLogError(f"reading ConfigMap {name}: {_why(exc)}") from exc
        if not is_entry_of(job, token, found.metadata, found.data):
            raise DecisionLogError(f"ConfigMap {name} exists and is not this decision's entry")
