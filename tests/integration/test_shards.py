"""Three operator shards: each job claimed by the rendezvous winner of its uid, reconciled by that shard
alone, its telemetry taken by that shard alone (the others answer 421); a SIGKILLed active replica
replaced by its standby with nothing lost and the other shards undisturbed; a fourth shard that moves
no running job.

Runs on a control plane of its own: the session's operator is unsharded and cluster-wide and would
reconcile these jobs too. Each shard's replicas run as the chart's ServiceAccount with the chart's
ClusterRole, peer under the shard's own name as the chart names them, and sit behind a stand-in for the
shard's Service (ReadyService: the ready replica only); that stand-in's address is the one each shard
writes into its jobs' pods.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hack.controlplane import ControlPlane
from hack.render import render

from carbontrack.ha.sharding import rendezvous
from tests.integration.harness import (
    ROOT,
    Operator,
    apply,
    chart_identity,
    ctj,
    metric_value,
    phase_is,
    pod_token,
    post_batch,
    running_pods,
    status,
    step_all,
    wait,
    wait_for_energy,
)
from tests.integration.service import ReadyService
from tests.integration.sidecars import Sidecar

LIFETIME_S = 6
NS = "sharded"
SHARD_LABEL = "carbontrack.io/shard"
LEGACY = "built-unsharded"


def peering(k: int) -> str:
    """The chart's peering name for shard k: shard 0 keeps the unsharded operator's."""
    return "carbontrack" if k == 0 else f"carbontrack-shard-{k}"


class Shard:
    """One shard: its operator replicas and the Service in front of them."""

    def __init__(self, cluster: ControlPlane, logs: Path, k: int) -> None:
        self.cluster, self.logs, self.k = cluster, logs, k
        self.replicas: list[Operator] = []
        self.service = ReadyService(lambda: [r.url for r in self.live()])
        self.service.__enter__()
        self.started = itertools.count()

    def add_replica(self, shards: int) -> Operator:
        log = self.logs / f"shard{self.k}-{next(self.started)}.log"
        env = {
            "CARBONTRACK_SHARD": str(self.k),
            "CARBONTRACK_SHARDS": str(shards),
            "CARBONTRACK_OPERATOR_URL": self.service.url,  # what the shard writes into its jobs' pods
            "CARBONTRACK_PEERING_LIFETIME_S": str(LIFETIME_S),
            "CARBONTRACK_PEERING_POLL_S": "0.5",
            "CARBONTRACK_TLS_SERVING_DAYS": "1",
            "CARBONTRACK_TLS_CHECK_S": "60",
            "KUBECONFIG": str(self.cluster.operator_kubeconfig),  # type: ignore[attr-defined]  # the chart's RBAC
        }
        op = Operator(self.cluster, log, args=("--peering", peering(self.k)), standby=True, **env)
        op.start(timeout_s=90)  # several operators start on a machine the control plane shares
        self.replicas.append(op)
        return op

    def active(self) -> Operator | None:
        return next((r for r in self.live() if r.ready()), None)

    def reconciled(self, name: str) -> bool:
        """kopf logs each handler's success with the object it ran for."""
        pattern = rf"""Handler 'reconcile' succeeded.*"{name}"|"{name}".*Handler 'reconcile' succeeded"""
        return any(re.search(pattern, r.logs.read_text()) for r in self.replicas)

    def live(self) -> list[Operator]:
        return [r for r in self.replicas if r.proc and r.proc.poll() is None]

    def stop(self) -> None:
        for r in self.live():
            assert r.proc is not None
            r.proc.terminate()  # all at once, then each waited for
        for r in self.replicas:
            r.stop()
        self.service.__exit__()


def in_parallel(*calls: Callable[[], Any]) -> list[Any]:
    """The calls run at once (an operator's start or stop mostly waits on its process); their results."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


pytestmark = pytest.mark.own_control_plane(
    "several operator shards watch the whole cluster; one is failed over"
)


@pytest.fixture(scope="module")
def shard_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("shards-controlplane"))
    try:
        cp.up(nodes=4)  # 32 GPUs: every job's pod runs
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.wait_established()
        for k in range(4):
            peer = {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": peering(k)},
            }
            cp.kubectl("apply", "-f", "-", input=json.dumps(peer))
        cp.operator_kubeconfig = chart_identity(cp)  # type: ignore[attr-defined]
        cp.kubectl("create", "namespace", NS)
        # a job an operator without shards had reconciled (it has a phase) before the shards start
        assert apply(cp, NS, ctj(LEGACY, 1)).returncode == 0
        phase = json.dumps({"status": {"phase": "Pending"}})
        cp.kubectl("patch", "ctj", LEGACY, "-n", NS, "--subresource=status", "--type=merge", "-p", phase)
        yield cp
    finally:
        cp.down()


@pytest.fixture(scope="module")
def shards(shard_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Shard]]:
    """Shards 0, 1 and 2, each with an active replica; shard 1 also with a standby."""
    logs = tmp_path_factory.mktemp("shard-logs")
    out = [Shard(shard_cluster, logs, k) for k in range(3)]
    try:
        in_parallel(*(partial(shard.add_replica, 3) for shard in (out[0], out[1], out[1], out[2])))
        for shard in out:
            wait(lambda s=shard: s.active() is not None, timeout=60, what=f"shard {shard.k} active")
        yield out
    finally:
        in_parallel(*(shard.stop for shard in out))


def ctj_object(cluster: ControlPlane, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", "ctj", name, "-n", NS, "-o", "json").stdout))


def claimed(cluster: ControlPlane, names: list[str], shards: int) -> dict[str, int]:
    """Each job's shard, once claimed: the rendezvous winner of its uid among `shards`."""
    owners = {}
    for name in names:
        label = wait(
            lambda n=name: (ctj_object(cluster, n)["metadata"].get("labels") or {}).get(SHARD_LABEL),
            what=f"{name} claimed",
        )
        obj = ctj_object(cluster, name)
        assert int(label) == rendezvous(obj["metadata"]["uid"], range(shards)), name
        owners[name] = int(label)
    return owners


def spread(cluster: ControlPlane, first: int, shards: int, until: Any) -> dict[str, int]:
    """Create jobs (four at a time) until `until(owners)` holds; their owners."""
    owners: dict[str, int] = {}
    for batch in range(first, first + 32, 4):
        names = [f"j{i:02d}" for i in range(batch, batch + 4)]
        for name in names:
            assert apply(cluster, NS, ctj(name, 1)).returncode == 0
        owners |= claimed(cluster, names, shards)
        if until(owners):
            return owners
    raise AssertionError(f"no spread as wanted over {len(owners)} jobs: {owners}")


def jobs_now(cluster: ControlPlane) -> dict[str, dict[str, Any]]:
    items = json.loads(cluster.kubectl("get", "ctj", "-n", NS, "-o", "json").stdout)["items"]
    return {o["metadata"]["name"]: o for o in items}


def operator_url(cluster: ControlPlane, name: str) -> str:
    """The address the job's pods were given, from its Job's sidecar."""
    job = json.loads(cluster.kubectl("get", "job", name, "-n", NS, "-o", "json").stdout)
    sidecar = job["spec"]["template"]["spec"]["initContainers"][0]
    assert (
        job["metadata"]["labels"][SHARD_LABEL]
        == (ctj_object(cluster, name)["metadata"]["labels"][SHARD_LABEL])
    )
    return str(next(e["value"] for e in sidecar["env"] if e["name"] == "CARBONTRACK_OPERATOR_URL"))


def sidecar(tmp: Path, cluster: ControlPlane, name: str) -> tuple[Sidecar, str, str]:
    """The real sidecar for the job's pod, with the address and token its pod has; and the pod."""
    ((pod, uid),) = running_pods(cluster, NS, name, 1)
    car = Sidecar(
        tmp, operator_url(cluster, name), token=pod_token(cluster, NS, pod, uid),
        CARBONTRACK_JOB_NAME=name, POD_NAMESPACE=NS, POD_NAME=pod, POD_UID=uid,
        CARBONTRACK_SIM_GPUS="1",  # the pod holds one GPU: a batch listing more is refused
    )  # fmt: skip
    return car, pod, uid


def test_each_job_is_served_by_one_shard_and_a_shard_failover_loses_nothing(
    shard_cluster: ControlPlane, shards: list[Shard], tmp_path: Path
) -> None:
    cluster = shard_cluster
    legacy = wait(lambda: ctj_object(cluster, LEGACY)["metadata"].get("labels"), what="the old job claimed")
    assert legacy == {SHARD_LABEL: "0"}  # its pods would report to the unsharded Service: shard 0's
    owners = spread(cluster, 0, 3, lambda o: len(set(o.values())) == 3)
    print(f"shards of {len(owners)} jobs: {sorted(owners.items())}")
    for name, k in owners.items():
        wait(lambda n=name, s=shards[k]: s.reconciled(n), what=f"{name} reconciled by shard {k}")
        assert operator_url(cluster, name) == shards[k].service.url
    time.sleep(2)  # a shard that would reconcile another's job has had its chance
    for name, k in owners.items():
        assert [s.k for s in shards if s.reconciled(name)] == [k], name

    # one job of each shard reports through the address in its pods, to its shard alone
    picked = {k: next(n for n, o in sorted(owners.items()) if o == k) for k in range(3)}
    cars = {k: sidecar(tmp_path, cluster, name) for k, name in picked.items()}
    trainers = [car.client() for car, _, _ in cars.values()]
    step_all(trainers, 1, 10)
    for name in picked.values():
        wait(lambda n=name: status(cluster, NS, n).get("steps") == 10, what=f"{name} at step 10")
    for k, name in picked.items():
        _served_by_its_shard_alone(cluster, shards, k, name, cars[k][1:])
    # SIGKILL shard 1's active replica: its standby takes over; shards 0 and 2 carry on meanwhile
    step, takeover = _shard_1_taken_over(cluster, shards, [picked[0], picked[2]], trainers, 10)
    step_all(trainers, step + 1, step + 20)
    step += 20
    finals = {k: car.final_energy(car.stop()) for k, (car, _, _) in cars.items()}
    for k, name in picked.items():
        st = wait_for_energy(cluster, NS, name, finals[k], timeout=60)
        assert st["steps"] == step, name
        # judged and promoted: the judgement waits for the Job, which only its shard's Job watch shows
        assert phase_is(cluster, NS, name, "Running")["phase"] == "Running"
    assert takeover < LIFETIME_S + 3, f"takeover took {takeover:.1f} s"


def _served_by_its_shard_alone(
    cluster: ControlPlane, shards: list[Shard], k: int, name: str, pod_uid: tuple[str, str]
) -> None:
    """Shard k exports the job's steps; every other shard refuses its telemetry (421, naming shard k) and
    exports no series of it."""
    pod, uid = pod_uid
    token = pod_token(cluster, NS, pod, uid)
    for other in shards:
        active = other.active()
        assert active is not None
        series = metric_value(active.metrics(), "carbontrack_training_steps_total", NS, name)
        if other.k == k:
            assert series == 10
            continue
        code, body = post_batch(active.url, token, NS, name, pod, seq=99)
        assert code == 421 and f"served by shard {k}" in body, (other.k, body)
        assert series is None, f"shard {other.k} exports {name}"


def _shard_1_taken_over(
    cluster: ControlPlane, shards: list[Shard], others: list[str], trainers: list[Any], step: int
) -> tuple[int, float]:
    """SIGKILL shard 1's active replica and step on until its standby is active, the other shards' jobs
    counting on meanwhile: (the last step, the seconds the takeover took)."""
    victim = shards[1].active()
    assert victim is not None
    before = {n: status(cluster, NS, n)["energyJoules"] for n in others}
    victim.kill()
    killed = time.monotonic()
    while shards[1].active() is None:
        step_all(trainers, step + 1, step + 2)
        step += 2
        assert time.monotonic() - killed < LIFETIME_S + 10, "the standby did not take over"
    takeover = time.monotonic() - killed
    during = {n: status(cluster, NS, n)["energyJoules"] for n in others}
    assert all(during[n] > before[n] for n in others), (before, during)
    print(f"shard 1 taken over after {takeover:.1f} s; shards 0 and 2 counted on: {before} -> {during}")
    return step, takeover


def test_a_fourth_shard_moves_no_running_job(
    shard_cluster: ControlPlane, shards: list[Shard], tmp_path: Path
) -> None:
    cluster = shard_cluster
    running = jobs_now(cluster)
    if len(running) < 3:  # run alone: jobs for every shard first
        spread(cluster, 0, 3, lambda o: len(set(o.values())) == 3)
        running = jobs_now(cluster)
    labels = {n: o["metadata"]["labels"][SHARD_LABEL] for n, o in running.items()}
    urls = {n: operator_url(cluster, n) for n in running}
    picked = {k: next(n for n in sorted(labels) if labels[n] == str(k)) for k in range(3)}
    energy = {n: status(cluster, NS, n).get("energyJoules", 0.0) for n in picked.values()}
    cars = {k: sidecar(tmp_path, cluster, name) for k, name in picked.items()}
    trainers = [car.client() for car, _, _ in cars.values()]
    step_all(trainers, 1001, 1010)

    # the chart's upgrade to four shards: shard 3 starts, each old shard rolls to a replica that knows four
    fourth = Shard(cluster, tmp_path, 3)
    shards.append(fourth)
    old = {shard.k: shard.live() for shard in shards[:3]}
    in_parallel(*(partial(shard.add_replica, 4) for shard in shards))
    in_parallel(*(r.stop for replicas in old.values() for r in replicas))  # a clean shutdown hands over
    step = 1010
    while any(s.active() is None or s.active() in old.get(s.k, ()) for s in shards):
        step_all(trainers, step + 1, step + 1)
        step += 1
    step_all(trainers, step + 1, step + 10)
    step += 10

    after = jobs_now(cluster)
    assert {n: after[n]["metadata"]["labels"][SHARD_LABEL] for n in running} == labels
    assert {n: operator_url(cluster, n) for n in running} == urls
    assert not any(fourth.reconciled(n) for n in running)
    finals = {k: car.final_energy(car.stop()) for k, (car, _, _) in cars.items()}
    for k, name in picked.items():
        st = wait_for_energy(cluster, NS, name, energy[name] + finals[k], timeout=60)
        assert st["steps"] == step, name

    # new jobs spread over four shards, and shard 3 gets some
    first = max(int(n[1:]) for n in running if n[1:].isdigit()) + 1
    new = spread(cluster, first, 4, lambda o: 3 in o.values())
    name = next(n for n, k in new.items() if k == 3)
    wait(lambda: fourth.reconciled(name), what=f"{name} reconciled by shard 3")
    assert operator_url(cluster, name) == fourth.service.url


def test_the_apiserver_accepts_three_shards(shard_cluster: ControlPlane) -> None:
    manifests = render("--set", "operator.shards=3,replicaCount=2", include_crds=False)
    shard_cluster.kubectl("create", "namespace", "carbontrack-system", check=False)
    result = shard_cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-n", "carbontrack-system", "-f", "-",
        input=manifests, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
