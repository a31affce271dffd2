"""The apiserver as the scale benchmark sees it: a client with the admin certificate, the running pods
500 to a page, pod-bound tokens, a watch for new Jobs, and the audit log read back (the operator's
requests, create -> Job latency on the apiserver's clock, and the apiserver's own time per request)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from common import percentile
from hack.controlplane import ControlPlane


class Api:
    """Minimal apiserver client with the admin certificate (urllib: no extra dependency)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.base = cp.server
        self.ctx = ssl.create_default_context(cafile=str(cp.pki / "ca.crt"))
        self.ctx.load_cert_chain(str(cp.pki / "admin.crt"), str(cp.pki / "admin.key"))

    def connection(self) -> http.client.HTTPSConnection:
        """A connection of its own to keep alive (urllib's `call` makes one per request)."""
        where = urllib.parse.urlsplit(self.base)
        return http.client.HTTPSConnection(where.hostname or "", where.port, context=self.ctx, timeout=60)

    def call(self, method: str, path: str, body: Any = None, accept: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": accept}
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
            raw = r.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode()


METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def running_pods(api: Api, ns: str) -> list[dict[str, Any]]:
    """Name, uid and labels of the namespace's running pods, 500 to a page. A whole LIST of 8000 pods
    (each with its injected sidecar) is over 70 MB, and the saturated apiserver cut it off mid-answer."""
    items: list[dict[str, Any]] = []
    page = ""
    while True:
        query = "fieldSelector=status.phase%3DRunning&limit=500"
        if page:
            query += "&continue=" + urllib.parse.quote(page)
        got = api.call("GET", f"/api/v1/namespaces/{ns}/pods?{query}", accept=METADATA_ONLY)
        items.extend({"metadata": p["metadata"]} for p in got["items"])
        page = got["metadata"].get("continue", "")
        if not page:
            return items


def apiserver_requests(api: Api) -> float:
    total = 0.0
    for line in str(api.call("GET", "/metrics")).splitlines():
        if line.startswith("apiserver_request_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


OPERATOR_USER = "system:serviceaccount:carbontrack-system:carbontrack"


def _at(stamp: str) -> float:
    """An audit event's timestamp (RFC 3339, `Z`) as unix time."""
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _kind(event: dict[str, Any]) -> str:
    """`verb resource[/subresource]` of an audit event."""
    ref = event.get("objectRef", {})
    sub = "/" + ref["subresource"] if ref.get("subresource") else ""
    return f"{event['verb']} {ref.get('resource', '?')}{sub}"


def operator_requests(audit_log: Path, since: float, until: float) -> tuple[int, Counter[str]]:
    """Requests the operator's ServiceAccount made in [since, until) (wall clock), from the audit log."""
    count, kinds = 0, Counter[str]()
    with audit_log.open() as f:
        for line in f:
            if OPERATOR_USER not in line:
                continue
            event = json.loads(line)
            if event.get("user", {}).get("username") != OPERATOR_USER:
                continue
            if since <= _at(event["stageTimestamp"]) < until:
                count += 1
                kinds[_kind(event)] += 1
    return count, kinds


def audit_latencies(audit_log: Path) -> list[float]:
    """Create -> Job latency per CarbonTrackedJob from the apiserver's own clock: the CR's create
    completing, then the operator's create of its Job completing (the benchmark's threads, which share
    a GIL, take no part in the timing)."""
    created: dict[str, float] = {}
    jobs: dict[str, float] = {}
    with audit_log.open() as f:
        for line in f:
            if '"verb":"create"' not in line:
                continue
            e = json.loads(line)
            ref = e.get("objectRef", {})
            if e.get("stage") != "ResponseComplete" or e.get("responseStatus", {}).get("code") != 201:
                continue
            at = _at(e["stageTimestamp"])
            if ref.get("resource") == "carbontrackedjobs" and not ref.get("subresource"):
                created[ref["name"]] = at
            elif ref.get("resource") == "jobs" and e.get("user", {}).get("username") == OPERATOR_USER:
                jobs[ref["name"]] = at  # job_name_for(): the CR's own name when it is short, as here
    return sorted(max(jobs[n] - t, 0.0) for n, t in created.items() if n in jobs)


def apiserver_times(audit_log: Path) -> dict[str, list[float]]:
    """Seconds the apiserver itself spent (received -> response complete) on the CRs' creates and on
    the operator's requests, by verb and resource: tells a slow apiserver from a slow operator."""
    out: dict[str, list[float]] = {}
    with audit_log.open() as f:
        for line in f:
            e = json.loads(line)
            if e.get("stage") != "ResponseComplete":
                continue
            who = "operator" if e.get("user", {}).get("username") == OPERATOR_USER else "others"
            took = _at(e["stageTimestamp"]) - _at(e["requestReceivedTimestamp"])
            out.setdefault(f"{who} {_kind(e)}", []).append(took)
    return out


def print_apiserver_times(audit_log: Path) -> None:
    times = apiserver_times(audit_log)
    print("apiserver time per request (count, p50 s, p99 s):")
    for key, got in sorted(times.items(), key=lambda kv: -len(kv[1]))[:14]:
        got.sort()
        print(f"  {key}: {len(got)}, {percentile(got, 50):.3f}, {percentile(got, 99):.3f}")


def watch_jobs(api: Api, ns: str, seen: dict[str, float], stop: threading.Event) -> None:
    """When each Job appears, from a watch (listing 1000 Jobs every 100 ms would load the apiserver)."""
    while not stop.is_set():
        req = urllib.request.Request(
            f"{api.base}/apis/batch/v1/namespaces/{ns}/jobs?watch=1&timeoutSeconds=60"
        )
        try:
            with urllib.request.urlopen(req, context=api.ctx, timeout=70) as r:
                for line in r:
                    event = json.loads(line)
                    if event["type"] == "ADDED":
                        seen.setdefault(event["object"]["metadata"]["name"], time.monotonic())
                    if stop.is_set():
                        return
        except (OSError, ValueError):
            time.sleep(0.5)


_kept = threading.local()


def pod_token(api: Api, ns: str, pod: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A pod-bound token for the `carbontrack` audience (TokenRequest), on one kept-alive connection per
    thread: a TLS handshake per token is most of the cost at 8000 pods."""
    bound = {
        "kind": "Pod",
        "apiVersion": "v1",
        "name": pod["metadata"]["name"],
        "uid": pod["metadata"]["uid"],
    }
    req = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": ["carbontrack"], "expirationSeconds": 3600, "boundObjectRef": bound},
    }
    conn = getattr(_kept, "conn", None) or api.connection()
    _kept.conn = conn
    conn.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/default/token", json.dumps(req),
                 {"Content-Type": "application/json"})  # fmt: skip
    answer = conn.getresponse()
    out = json.loads(answer.read())
    if answer.status != 201:
        raise RuntimeError(f"TokenRequest for {pod['metadata']['name']}: {answer.status} {out}")
    return pod, str(out["status"]["token"])
