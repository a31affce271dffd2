"""The operator's Kubernetes client does not look up proxies or a ~/.netrc for every request."""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client

from carbontrack.controller.startup import ignore_environment


def test_the_client_session_ignores_the_environment_on_the_same_connector() -> None:
    async def run() -> None:
        api = client.ApiClient()
        before = api.rest_client.pool_manager
        connector = before.connector
        ignore_environment(api)
        after = api.rest_client.pool_manager
        assert before.closed and connector is not None and not connector.closed  # detached, not closed
        assert after.connector is connector and after.trust_env is False
        await api.close()
        assert connector.closed  # closing the client still closes its connections

    asyncio.run(run())
