"""Status patches skip the client library's walk of the body, which costs CPU on every patch."""

from __future__ import annotations

import asyncio
import datetime as dt

from kubernetes_asyncio import client

from carbontrack.state.registry import JsonReady, skip_sanitizing_json_ready


def test_a_json_ready_body_is_sent_as_it_is_and_others_are_still_walked() -> None:
    async def make() -> client.ApiClient:
        return client.ApiClient()  # its HTTP pool wants a running loop

    api = asyncio.run(make())
    skip_sanitizing_json_ready(api)
    ready = JsonReady({"status": {"energyJoules": 1.5, "sources": [{"pod": "p", "seq": 3}]}})
    assert api.sanitize_for_serialization(ready) is ready
    when = dt.datetime(2026, 12, 2, 1, 0, tzinfo=dt.UTC)
    assert api.sanitize_for_serialization({"at": when, "n": [1, None]}) == {
        "at": "2026-12-02T01:00:00+00:00",
        "n": [1, None],
    }


def test_a_status_patch_sends_the_json_ready_body_as_a_merge_patch() -> None:
    """Through the real client library to a local server: the same JSON, as a merge patch."""
    import json

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from carbontrack.state.registry import merge_patch_status

    got: list[tuple[str, object]] = []

    async def patch(request: web.Request) -> web.Response:
        got.append((request.content_type, json.loads(await request.read())))
        return web.json_response({})

    async def main() -> None:
        app = web.Application()
        app.router.add_patch("/apis/carbontrack.io/v1alpha1/namespaces/ns/carbontrackedjobs/j/status", patch)
        async with TestServer(app) as server:
            api = client.ApiClient(client.Configuration(host=str(server.make_url(""))))
            skip_sanitizing_json_ready(api)
            body = {"status": {"energyJoules": 1.5, "sources": [{"pod": "p", "window": [3, 1.0, 0.3]}]}}
            await merge_patch_status(client.CustomObjectsApi(api), "ns", "j", JsonReady(body))
            await api.close()
            assert got == [("application/merge-patch+json", body)]

    asyncio.run(main())
