"""The cluster connection the command-line tools share (`carbontrack approve|reject`, `report`)."""

from __future__ import annotations

import sys


async def load_config(kubeconfig: str | None, context: str | None) -> bool:
    """Load the kubeconfig (`--kubeconfig`, else $KUBECONFIG or ~/.kube/config), else the in-cluster
    service account; False, with a line on stderr saying what to set, when neither is there. The client
    library is imported here, not at module level, so `carbontrack --help` starts fast."""
    from kubernetes_asyncio import config

    try:
        await config.load_kube_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError, TypeError):
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            print("no kubeconfig and not in a cluster: set KUBECONFIG or --kubeconfig", file=sys.stderr)
            return False
    return True
