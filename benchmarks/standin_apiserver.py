"""A stand-in apiserver for the ingest benchmark: what the operator's telemetry path reads (TokenReview,
the pod, its Job, the CarbonTrackedJob) and writes (status patches), each counted, and the counts at
/stats. A token is `namespace/pod/uid`, so any simulated pod is who it says it is."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

GPUS = 8


def ctj_object(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "carbontrack.io/v1alpha1", "kind": "CarbonTrackedJob",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}"},
        "spec": {
            "replicas": 8, "totalSteps": 100000, "carbon": {"zone": "DE"},
            "canary": {"replicas": 8, "minSteps": 1000000, "stages": [100]}, "gates": {"allowEmpty": True},
            "template": {"spec": {"containers": [{"name": "trainer", "image": "trainer:bench"}]}},
        },
        "status": {},
    }  # fmt: skip


class StandIn:
    """The handlers, and how many requests of each kind they answered."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.started = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    async def review(self, request: web.Request) -> web.Response:
        self.count("tokenreview")
        doc = await request.json()
        ns, pod, uid = doc["spec"]["token"].split("/")
        extra = {
            "authentication.kubernetes.io/pod-name": [pod],
            "authentication.kubernetes.io/pod-uid": [uid],
        }
        user = {"username": f"system:serviceaccount:{ns}:default", "extra": extra}
        status = {"authenticated": True, "audiences": ["carbontrack"], "user": user}
        return web.json_response({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                  "spec": doc["spec"], "status": status})  # fmt: skip

    async def pod(self, request: web.Request) -> web.Response:
        self.count("pod")
        ns, name = request.match_info["ns"], request.match_info["name"]
        job = name.rsplit("-", 1)[0]
        owner = {"kind": "Job", "name": job, "uid": f"uid-job-{job}", "controller": True}
        return web.json_response({
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "ownerReferences": [owner]},
            "spec": {"containers": [{"name": "t", "resources": {"limits": {"nvidia.com/gpu": str(GPUS)}}}]},
            "status": {"startTime": self.started},
        })  # fmt: skip

    async def job(self, request: web.Request) -> web.Response:
        self.count("job")
        ns, name = request.match_info["ns"], request.match_info["name"]
        return web.json_response({
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-job-{name}",
                         "ownerReferences": [{"kind": "CarbonTrackedJob", "name": name, "uid": f"uid-{name}",
                                              "controller": True}]},
        })  # fmt: skip

    async def ctj(self, request: web.Request) -> web.Response:
        self.count("ctj-get")
        return web.json_response(ctj_object(request.match_info["ns"], request.match_info["name"]))

    async def patch(self, request: web.Request) -> web.Response:
        self.count("status-patch")
        await request.read()
        return web.json_response(ctj_object(request.match_info["ns"], request.match_info["name"]))

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts)


def run_apiserver(port: int) -> None:
    """Serve the stand-in on 127.0.0.1:`port` until killed."""
    standin = StandIn()
    base = "/apis/carbontrack.io/v1alpha1/namespaces/{ns}/carbontrackedjobs/{name}"
    app = web.Application()
    app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", standin.review)
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", standin.pod)
    app.router.add_get("/apis/batch/v1/namespaces/{ns}/jobs/{name}", standin.job)
    app.router.add_get(base, standin.ctj)
    app.router.add_patch(base + "/status", standin.patch)
    app.router.add_get("/stats", standin.stats)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
