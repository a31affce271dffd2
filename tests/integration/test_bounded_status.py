"""Status stays bounded on the real control plane: the attack of issue 12 (thousands of distinct boot ids
from one pod's own token) once grew status.telemetry.sources until etcd refused the object and status
never changed again. And a live provider's key the operator cannot read is a condition, not a log line.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from tests.integration.conftest import apply
from tests.integration.harness import (
    Operator,
    ctj,
    pod_token,
    post,
    running_pods,
    status,
    wait,
    wait_for_energy,
)

JOULES = 0.25
"""Per boot: a multiple of 2**-2, so every total is exact in binary and compared with ==."""


class Sender:
    """One kept-alive HTTPS connection, as a sidecar holds: thousands of batches in seconds."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPSConnection(
            parts.hostname or "localhost", parts.port, context=ssl.create_default_context(), timeout=10
        )
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def post(self, body: dict[str, Any]) -> tuple[int, str]:
        self.conn.request("POST", "/v1/telemetry", json.dumps(body), self.headers)
        response = self.conn.getresponse()
        return response.status, response.read().decode()


def test_thousands_of_boot_ids_from_one_pod_keep_status_bounded_exact_and_updating(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("flood", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "flood", 1)
    wait(lambda: status(cluster, namespace, "flood").get("phase") == "Canary", what="phase Canary")
    token = pod_token(cluster, namespace, pod, uid)

    def batch(boot: str, seq: int = 1, joules: float = JOULES) -> dict[str, Any]:
        return {
            "version": 1, "job": {"namespace": namespace, "name": "flood"},
            "pod": {"namespace": namespace, "name": pod}, "bootId": boot, "seq": seq, "sentAt": time.time(),
            "method": "simulated", "gpus": [{"index": 0, "energyJoules": joules}],
        }  # fmt: skip

    sender = Sender(operator.url, token)

    def flood(first: int, count: int) -> float:
        """`count` batches, each under a new boot id, in order; the seconds it took."""
        began = time.monotonic()
        codes = [sender.post(batch(f"boot-{i:06d}"))[0] for i in range(first, first + count)]
        assert codes == [200] * count, {c: codes.count(c) for c in set(codes)}
        return time.monotonic() - began

    took = flood(0, 1500)
    wait_for_energy(cluster, namespace, "flood", 1500 * JOULES)
    operator.kill()  # mid-attack, after the status write: the next operator resumes from status alone
    operator.start()
    sender = Sender(operator.url, token)
    took += flood(1500, 1500)
    st = wait_for_energy(cluster, namespace, "flood", 3000 * JOULES)
    telemetry = st["telemetry"]
    assert [s["bootId"] for s in telemetry["sources"]] == ["boot-002998", "boot-002999"]
    (fold,) = telemetry["folded"]
    assert (fold["pod"], fold["boots"], fold["energyJoules"]) == (pod, 2998, 2998 * JOULES)
    assert fold["bootIds"] == [f"boot-{i:06d}" for i in range(2982, 2998)]
    assert telemetry["refused"] == {"backwards": 0, "absurd": 0, "implausible": 0, "tooManyPods": 0,
                                    "statusFull": 0}  # fmt: skip
    size = len(json.dumps(st))
    assert size < 8000, size  # once: 6000 sources, past etcd's 1.5 MiB
    # a replay of a folded boot, or of a live one, changes nothing
    code, answer = post(operator.url, token, batch("boot-002990"))
    assert code == 409 and "folded" in answer, answer
    assert post(operator.url, token, batch("boot-002999"))[0] == 409
    # and status keeps changing: the live boot grows, the total follows to the quarter joule
    assert post(operator.url, token, batch("boot-002999", seq=2, joules=JOULES * 5))[0] == 200
    st = wait_for_energy(cluster, namespace, "flood", 3004 * JOULES)
    assert st["emissionsGrams"] > 0 and st["phase"] == "Canary"
    print(f"3000 boot ids in {took:.1f} s; status {size} bytes")


def test_an_unreadable_provider_key_is_a_condition_the_fallback_figure_and_no_read_per_batch(
    operator: Operator, namespace: str
) -> None:
    """The job names a key Secret the operator cannot read (here: there is none; a 403 takes the same
    path): IntensityResolved=False says which and what is used, emissions use the static table's figure
    marked fallback, and the read is not repeated for every batch (backoff, 30 s first)."""
    cluster = operator.cluster
    obj = ctj("keyless", 1)
    obj["spec"]["carbon"]["intensity"] = {"provider": "electricitymaps", "secretName": "no-such-key"}
    assert apply(cluster, namespace, obj).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "keyless", 1)
    wait(lambda: status(cluster, namespace, "keyless").get("phase") == "Canary", what="phase Canary")
    token = pod_token(cluster, namespace, pod, uid)
    sender = Sender(operator.url, token)
    for seq in range(1, 21):
        body = {
            "version": 1, "job": {"namespace": namespace, "name": "keyless"},
            "pod": {"namespace": namespace, "name": pod}, "bootId": "b", "seq": seq, "sentAt": time.time(),
            "method": "simulated", "gpus": [{"index": 0, "energyJoules": float(seq)}],
        }  # fmt: skip
        assert sender.post(body)[0] == 200

    def condition() -> dict[str, Any] | None:
        conditions = status(cluster, namespace, "keyless").get("conditions") or []
        return next((c for c in conditions if c["type"] == "IntensityResolved"), None)

    found = wait(condition, what="the IntensityResolved condition")
    assert found["status"] == "False" and found["reason"] == "SecretUnreadable"
    assert f"Secret {namespace}/no-such-key" in found["message"] and "does not exist" in found["message"]
    st = wait_for_energy(cluster, namespace, "keyless", 20.0)
    assert st["intensity"]["source"] == "static:ember-2023:fallback"
    reads = [
        line
        for line in operator.logs.read_text().splitlines()
        if "intensity key unreadable" in line and f"{namespace}/no-such-key" in line
    ]
    assert len(reads) == 1, reads  # 20 batches, one read
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "IntensitySecretUnreadable" in events
