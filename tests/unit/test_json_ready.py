"""Status patches skip the client library's walk of the body (issue 15: 11 % of the operator's CPU)."""

from __future__ import annotations

import asyncio
import datetime as dt

from kubernetes_asyncio import client

from carbontrack.controller.registry import JsonReady, skip_sanitizing_json_ready


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
