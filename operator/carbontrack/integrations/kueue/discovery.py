"""Whether the cluster serves Kueue's API: API discovery of kueue.x-k8s.io/v1beta2, read at start-up and
then every `cluster_check_s` (controller.cluster_checks), so Kueue installed or removed later is seen.

Discovery needs no permission beyond what every authenticated client has, and costs one small GET.
"""

from __future__ import annotations

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.integrations.kueue.client import GROUP, VERSION


async def workloads_served(api: client.ApiClient) -> bool:
    """The apiserver serves Kueue's Workloads (kueue.x-k8s.io/v1beta2 workloads)."""
    try:
        found = await client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION)
    except ApiException as exc:
        if exc.status == 404:  # no such group or version
            return False
        raise
    return any(r.name == "workloads" for r in found.resources or [])
