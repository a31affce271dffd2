"""Real data-parallel training across the workers of a CarbonTrackedJob, from the canary through a
promotion, with the env the operator injected into the pods the Job controller created.

The control plane is real (kwok runs the pods, so no container runs): each pod's trainer is a
`torchrun` process on this machine, started with that pod's env as the kubelet would resolve it. Two
things differ from a cluster and are said here and in the README: the headless Service's names
(`ddp-0.ddp`) are mapped to 127.0.0.1 (no cluster DNS here), and CARBONTRACK_SIDECAR_ADDR points at
the test's sidecar process for that pod. torchrun's own knobs the test sets for speed: a 1 s last call
(the default waits 30 s for more nodes) and a 0.5 s monitor interval.

The canary trains alone (world size 1) and checkpoints; the operator promotes the job after 10 steps;
the new worker's torchrun joins the rendezvous on worker 0, the running agent restarts its worker,
both re-rendezvous at world size 2, load the last checkpoint and train on; afterwards both workers
hold identical parameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cases.jobs import elastic
from tests.integration.harness import Operator, apply, running_pods, start_sidecar, status, wait
from tests.integration.objects import pods, resolved_env

torch = pytest.importorskip(
    "torch", reason="torch is not installed: `pip install -e '.[distributed]'` (CPU is enough)"
)

SCRIPT = Path(__file__).with_name("ddp_train.py")
STEPS_AT_FULL_SIZE = 20


def torchrun(
    env: dict[str, str], workdir: Path, node: str, sidecar_udp: int, logs: Path
) -> subprocess.Popen[bytes]:
    """One pod's trainer: `torchrun --nproc-per-node=1 ddp_train.py` with the pod's env."""
    mapped = {k: v.replace("ddp-0.ddp", "127.0.0.1") for k, v in env.items()}  # no cluster DNS here
    full = {
        **os.environ, **mapped, "CARBONTRACK_SIDECAR_ADDR": f"127.0.0.1:{sidecar_udp}",
        "CARBONTRACK_NVML": "off", "TEST_NODE": node, "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    args = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", "--monitor-interval=0.5",
        "--rdzv-conf=last_call_timeout=1", str(SCRIPT), str(workdir), "2", str(STEPS_AT_FULL_SIZE),
    ]  # fmt: skip
    out = (logs / f"torchrun-{node}.log").open("wb")
    return subprocess.Popen(args, env=full, stdout=out, stderr=subprocess.STDOUT)


def test_workers_train_together_through_a_promotion_and_end_with_identical_parameters(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, elastic("ddp")).returncode == 0
    wait(lambda: status(cluster, namespace, "ddp").get("phase") == "Canary", what="phase Canary")
    ((pod0, uid0),) = running_pods(cluster, namespace, "ddp", 1)
    env0 = resolved_env(pods(cluster, namespace, "ddp")["0"])
    assert env0["PET_NNODES"] == "1:2" and env0["PET_RDZV_ENDPOINT"] == "ddp-0.ddp:29400"
    work = tmp_path / "shared"  # the job's checkpoint volume
    work.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    sidecars = []
    try:
        sidecars.append(start_sidecar(tmp_path, operator, cluster, namespace, "ddp", pod0, uid0))
        procs.append(torchrun(env0, work, "0", sidecars[0].udp, tmp_path))
        wait(
            lambda: status(cluster, namespace, "ddp").get("phase") == "Running", timeout=180, what="promoted"
        )
        running = dict(running_pods(cluster, namespace, "ddp", 2))
        pod1 = next(p for p in running if p != pod0)
        env1 = resolved_env(pods(cluster, namespace, "ddp")["1"])
        assert env1["PET_NODE_RANK"] == "1" and env1["PET_RDZV_ENDPOINT"] == env0["PET_RDZV_ENDPOINT"]
        sidecars.append(start_sidecar(tmp_path, operator, cluster, namespace, "ddp", pod1, running[pod1]))
        procs.append(torchrun(env1, work, "1", sidecars[1].udp, tmp_path))
        for p in procs:
            assert p.wait(timeout=300) == 0, (tmp_path / "torchrun-0.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for s in sidecars:
            s.stop()
    _resumed_from_the_canarys_checkpoint_with_one_model(work)


def _resumed_from_the_canarys_checkpoint_with_one_model(work: Path) -> None:
    """Both ranks end with the same parameters; the canary started from scratch, and the re-rendezvous
    at world size 2 from its newest checkpoint."""
    a, b = (torch.load(work / f"params-rank{r}.pt") for r in (0, 1))
    assert a["world"] == b["world"] == 2 and a["step"] == b["step"]
    assert torch.equal(a["params"], b["params"])  # data-parallel: one model, two workers
    log = [
        json.loads(line) for n in ("0", "1") for line in (work / f"log-{n}.jsonl").read_text().splitlines()
    ]
    starts = [e for e in log if e["event"] == "start"]
    canary = [e for e in starts if e["world"] == 1]
    full = [e for e in starts if e["world"] == 2]
    assert canary and canary[0]["step"] == 0 and len(full) == 2, starts
    canary_steps = max(e["step"] for e in log if e["event"] == "step" and e["world"] == 1)
    resumed = full[0]["step"]
    # the re-rendezvous continued from the newest checkpoint of the canary: a multiple of 5, at most
    # 4 steps behind where the canary got to, and never from scratch
    assert resumed > 0 and resumed % 5 == 0 and canary_steps - 4 <= resumed <= canary_steps, (
        resumed,
        canary_steps,
    )
    assert {e["step"] for e in full} == {resumed} and a["step"] == resumed + STEPS_AT_FULL_SIZE
    print(
        f"canary trained to step {canary_steps}; re-rendezvous at world size 2 from checkpoint step "
        f"{resumed}; finished at step {a['step']} with identical parameters ({a['params'].numel()} values)"
    )
