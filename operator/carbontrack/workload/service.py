"""The job's headless Service, created or adopted: idempotent, so a handler that runs twice converges.

A Service of the same name that is already there is adopted when it can serve (headless, owned by
nobody else): it gets the owner reference, selector and ports the operator would have created it
with. One that cannot (a ClusterIP Service, whose clusterIP is immutable, or another owner's) is a
conflict the user must resolve: ServiceConflict names it.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.state.kube_writes import write


class ServiceConflict(ValueError):
    """A Service of the job's name exists and cannot be made the job's headless Service."""


def adoption_conflict(existing: dict[str, Any], uid: str) -> str | None:
    """Why `existing` cannot be adopted, or None."""
    name = existing["metadata"]["name"]
    if (existing.get("spec") or {}).get("clusterIP") != "None":
        return f"Service {name!r} exists and is not headless (clusterIP is immutable): delete or rename it"
    for ref in existing["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") != uid:
            return f"Service {name!r} exists and is controlled by {ref.get('kind')}/{ref.get('name')}"
    return None


async def ensure_service(api: client.ApiClient, service: dict[str, Any], uid: str) -> bool:
    """Create the Service, or adopt the one there. True when it was created now."""
    core = client.CoreV1Api(api)
    meta = service["metadata"]
    try:
        body: Any = service  # the client takes a plain dict as well as a V1Service
        await write(core.create_namespaced_service, meta["namespace"], body)
        return True
    except ApiException as exc:
        if exc.status != 409:
            raise
    existing = api.sanitize_for_serialization(
        await core.read_namespaced_service(meta["name"], meta["namespace"])
    )
    why = adoption_conflict(existing, uid)
    if why is not None:
        raise ServiceConflict(why)
    adopt = {
        "metadata": {"labels": meta["labels"], "ownerReferences": meta["ownerReferences"]},
        "spec": {k: service["spec"][k] for k in ("selector", "publishNotReadyAddresses", "ports")},
    }
    await core.patch_namespaced_service(meta["name"], meta["namespace"], adopt)
    return False
