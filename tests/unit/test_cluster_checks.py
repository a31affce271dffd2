"""controller.cluster_checks against a fake apiserver: Kueue's API served or not, watched namespaces that
exist or not, with a Warning Event and a gauge when one is missing (and no Event again while it stays so)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from carbontrack.controller.cluster_checks import ClusterChecks
from carbontrack.state import metrics
from carbontrack.state.config import OperatorConfig

KUEUE = "/apis/kueue.x-k8s.io/v1beta2"
WORKLOADS = {"name": "workloads", "singularName": "workload", "namespaced": True, "kind": "Workload",
             "verbs": ["get"]}  # fmt: skip
RESOURCES = {"kind": "APIResourceList", "groupVersion": "kueue.x-k8s.io/v1beta2", "resources": [WORKLOADS]}


class FakeApiserver:
    def __init__(self, kueue: bool, namespaces: set[str]) -> None:
        self.kueue, self.namespaces = kueue, namespaces
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def discovery(self, request: web.Request) -> web.Response:
        if not self.kueue:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.json_response(RESOURCES)

    async def namespaces_named(self, request: web.Request) -> web.Response:
        name = request.query["fieldSelector"].removeprefix("metadata.name=")
        items = [{"metadata": {"name": name}}] if name in self.namespaces else []
        return web.json_response({"kind": "NamespaceList", "metadata": {}, "items": items})

    async def event(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.events.append((request.match_info["ns"], body))
        return web.json_response(body, status=201)


def run_checks(fake: FakeApiserver, config: OperatorConfig, rounds: list[Any]) -> ClusterChecks:
    """Check once per entry of `rounds`, calling it (a change to the fake) before each check."""

    async def main() -> ClusterChecks:
        app = web.Application()
        app.router.add_get(KUEUE, fake.discovery)
        app.router.add_get("/api/v1/namespaces", fake.namespaces_named)
        app.router.add_post("/api/v1/namespaces/{ns}/events", fake.event)
        async with TestServer(app) as server:
            api = client.ApiClient(client.Configuration(host=str(server.make_url(""))))
            checks = ClusterChecks(api, config)
            for change in rounds:
                change()
                await checks.check()
            await api.close()
            return checks

    return asyncio.run(main())


def gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_kueue_served_or_not_is_seen_on_every_check() -> None:
    """Kueue installed after the operator started is seen at the next check."""
    fake = FakeApiserver(kueue=False, namespaces=set())
    found: list[bool | None] = []

    def install() -> None:
        fake.kueue = True

    checks = run_checks(fake, OperatorConfig(), [lambda: None])
    found.append(checks.facts.kueue_served)
    assert gauge("carbontrack_kueue_api_served") == 0
    checks = run_checks(fake, OperatorConfig(), [lambda: None, install])
    found.append(checks.facts.kueue_served)
    assert found == [False, True] and gauge("carbontrack_kueue_api_served") == 1


def test_a_missing_watched_namespace_is_one_warning_event_and_a_gauge_until_it_exists() -> None:
    fake = FakeApiserver(kueue=False, namespaces={"team-a"})
    config = OperatorConfig(watch_namespaces=("team-a", "team-b"), namespace="ops", pod_name="op-0")

    def create_b() -> None:
        fake.namespaces.add("team-b")

    checks = run_checks(fake, config, [lambda: None, lambda: None])
    assert checks.facts.missing_namespaces == {"team-b"}
    assert gauge("carbontrack_watched_namespace_missing", namespace="team-b") == 1
    assert gauge("carbontrack_watched_namespace_missing", namespace="team-a") == 0
    ((where, event),) = fake.events  # two checks, one Event
    assert where == "ops" and event["type"] == "Warning" and event["reason"] == "WatchedNamespaceMissing"
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "ops", "name": "op-0"}
    assert event["message"].startswith("namespace team-b does not exist: the operator is told to watch it")
    run_checks(fake, config, [create_b])
    assert gauge("carbontrack_watched_namespace_missing", namespace="team-b") == 0


def test_without_its_pod_the_event_is_on_the_missing_namespace() -> None:
    fake = FakeApiserver(kueue=True, namespaces=set())
    run_checks(fake, OperatorConfig(watch_namespaces=("gone",)), [lambda: None])
    ((where, event),) = fake.events
    assert where == "default" and event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "name": "gone",
    }
