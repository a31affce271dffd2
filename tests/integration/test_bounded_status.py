"""Status stays bounded on the real control plane: thousands of distinct boot ids from one pod's own token
once grew status.telemetry.sources until etcd refused the object and status never changed again; now
they are refused while the pod's boots are live, and fold once quiet. And a live provider's key the
operator cannot read is a condition, not a log line.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.cases.bodies import batch_doc
from tests.integration.harness import (
    Operator,
    apply,
    chart_identity,
    ctj,
    operator_instead,
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


def test_thousands_of_boot_ids_at_once_are_refused_while_the_pods_two_boots_are_live(
    operator: Operator, namespace: str
) -> None:
    """3000 boot ids from one pod's token in a few seconds, an operator SIGKILL half-way: the first two are
    the pod's live boots, every other one is a counted 429 (live-boots), also after the restart (the
    restored boots get a full live window), and status stays two sources."""
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("burst", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "burst", 1)
    wait(lambda: status(cluster, namespace, "burst").get("phase") == "Canary", what="phase Canary")
    token = pod_token(cluster, namespace, pod, uid)

    def batch(boot: str, seq: int = 1, joules: float = JOULES) -> dict[str, Any]:
        return batch_doc(namespace, "burst", pod, boot=boot, seq=seq, joules=joules)

    def flood(sender: Sender, first: int, count: int) -> list[int]:
        return [sender.post(batch(f"boot-{i:06d}"))[0] for i in range(first, first + count)]

    codes = flood(Sender(operator.url, token), 0, 1500)
    assert codes[:2] == [200, 200] and set(codes[2:]) == {429}, {c: codes.count(c) for c in set(codes)}

    def refused(count: int) -> dict[str, Any]:
        return dict(
            wait(
                lambda: (
                    (s := status(cluster, namespace, "burst"))["telemetry"]["refused"]["liveBoots"] == count
                    and s
                ),
                what=f"{count} refusals in status",
            )
        )

    assert refused(1498)["energyJoules"] == 2 * JOULES
    operator.kill()  # after the status write: the next operator resumes from status alone
    operator.start()
    sender = Sender(operator.url, token)
    code, answer = sender.post(batch("boot-001500"))
    assert code == 429 and "has 2 live sidecar boots" in answer, answer
    assert set(flood(sender, 1501, 1499)) == {429}
    # the live boots keep counting: the total follows them to the quarter joule
    assert sender.post(batch("boot-000001", seq=2, joules=JOULES * 5))[0] == 200
    st = wait_for_energy(cluster, namespace, "burst", 6 * JOULES)
    st = refused(2998)
    telemetry = st["telemetry"]
    assert [s["bootId"] for s in telemetry["sources"]] == ["boot-000000", "boot-000001"]
    assert telemetry["folded"] == [] and len(json.dumps(st)) < 8000


def test_thousands_of_ended_boots_fold_and_keep_status_bounded_exact_and_updating(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """The attack of issue 12 (thousands of distinct boot ids from one pod's own token) once grew
    status.telemetry.sources until etcd refused the object. Boots fold once quiet: an operator whose live
    window is 0 (CARBONTRACK_LIVE_BOOT_WINDOW_S) takes each boot as quiet at once, as boots that each
    went quiet in turn; 3000 of them, and a SIGKILL half-way."""
    cluster = operator.cluster
    with operator_instead(operator, tmp_path / "folding.log", CARBONTRACK_LIVE_BOOT_WINDOW_S="0") as folding:
        folding.start()
        assert apply(cluster, namespace, ctj("flood", 1)).returncode == 0
        ((pod, uid),) = running_pods(cluster, namespace, "flood", 1)
        wait(lambda: status(cluster, namespace, "flood").get("phase") == "Canary", what="phase Canary")
        token = pod_token(cluster, namespace, pod, uid)
        _fold_thousands(folding, namespace, pod, token)


def _fold_thousands(operator: Operator, namespace: str, pod: str, token: str) -> None:
    cluster = operator.cluster

    def batch(boot: str, seq: int = 1, joules: float = JOULES) -> dict[str, Any]:
        return batch_doc(namespace, "flood", pod, boot=boot, seq=seq, joules=joules)

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
                                    "statusFull": 0, "liveBoots": 0, "tooManyGpus": 0,
                                    "finished": 0}  # fmt: skip
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
        body = batch_doc(namespace, "keyless", pod, seq=seq, joules=float(seq))
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


def test_a_pod_beyond_the_jobs_cap_is_refused_counted_and_a_condition_across_a_restart(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """An operator that keeps one pod per job (CARBONTRACK_MAX_PODS_PER_JOB=1) stands in for a job with
    more pods than status holds: the second pod's batches are 422 too-many-pods, counted, not in any
    total, and TelemetryAccepted=False says so, also after a restart."""
    cluster = operator.cluster
    with operator_instead(operator, tmp_path / "capped.log", CARBONTRACK_MAX_PODS_PER_JOB="1") as capped:
        capped.start()
        assert apply(cluster, namespace, ctj("capped", 2)).returncode == 0
        (first, second) = running_pods(cluster, namespace, "capped", 2)
        wait(lambda: status(cluster, namespace, "capped").get("phase") == "Canary", what="phase Canary")

        def batch(pod: str, seq: int, joules: float) -> dict[str, Any]:
            return batch_doc(namespace, "capped", pod, seq=seq, joules=joules)

        tokens = {pod: pod_token(cluster, namespace, pod, uid) for pod, uid in (first, second)}
        assert post(capped.url, tokens[first[0]], batch(first[0], 1, 10.0))[0] == 200
        code, answer = post(capped.url, tokens[second[0]], batch(second[0], 1, 7.0))
        assert code == 422 and "1 pods in status" in answer, answer

        def refused_condition() -> dict[str, Any] | None:
            st = status(cluster, namespace, "capped")
            found = [c for c in st.get("conditions") or [] if c["type"] == "TelemetryAccepted"]
            return found[0] if found and st["telemetry"]["refused"]["tooManyPods"] >= 1 else None

        found = wait(refused_condition, what="TelemetryAccepted=False")
        assert (found["status"], found["reason"]) == ("False", "PodLimit")
        assert "pods beyond the 1 a job's status holds" in found["message"]
        capped.kill()
        capped.start()
        code, _ = post(capped.url, tokens[second[0]], batch(second[0], 2, 9.0))
        assert code == 422  # the pods in status are restored with it
        assert post(capped.url, tokens[first[0]], batch(first[0], 2, 12.0))[0] == 200
        st = wait_for_energy(cluster, namespace, "capped", 12.0)
        assert st["telemetry"]["refused"]["tooManyPods"] == 2
        assert [s["pod"] for s in st["telemetry"]["sources"]] == [first[0]]
        events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        assert '"reason": "TelemetryRefused"' in events  # once per warning: unit-tested


def test_a_403_on_the_jobs_key_secret_under_the_charts_rbac_is_a_condition(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """The operator as the chart deploys it (its ServiceAccount and RBAC, no carbon.jobSecretNames) may
    not read the Secret the job names: once a 403 swallowed and retried on every batch, now
    IntensityResolved=False says so, and the table's figure stands in."""
    cluster = operator.cluster
    cluster.kubectl("create", "secret", "generic", "em-key", "-n", namespace, "--from-literal=apiKey=k")
    with operator_instead(
        operator, tmp_path / "charted.log", KUBECONFIG=str(chart_identity(cluster))
    ) as charted:
        charted.start()
        obj = ctj("forbidden", 1)
        obj["spec"]["carbon"]["intensity"] = {"provider": "electricitymaps", "secretName": "em-key"}
        assert apply(cluster, namespace, obj).returncode == 0
        ((pod, uid),) = running_pods(cluster, namespace, "forbidden", 1)
        wait(lambda: status(cluster, namespace, "forbidden").get("phase") == "Canary", what="phase Canary")
        sender = Sender(charted.url, pod_token(cluster, namespace, pod, uid))
        for seq in range(1, 11):
            body = batch_doc(namespace, "forbidden", pod, seq=seq, joules=1.0 * seq)
            assert sender.post(body)[0] == 200

        def condition() -> dict[str, Any] | None:
            conditions = status(cluster, namespace, "forbidden").get("conditions") or []
            return next((c for c in conditions if c["type"] == "IntensityResolved"), None)

        found = wait(condition, what="the IntensityResolved condition")
        assert (found["status"], found["reason"]) == ("False", "SecretUnreadable")
        assert f"Secret {namespace}/em-key" in found["message"]
        assert "carbon.jobSecretNames" in found["message"], found["message"]
        st = wait_for_energy(cluster, namespace, "forbidden", 10.0)
        assert st["intensity"]["source"] == "static:ember-2023:fallback"
        reads = [line for line in charted.logs.read_text().splitlines() if "intensity key unreadable" in line]
        assert len(reads) == 1 and '"status": 403' in reads[0], reads
