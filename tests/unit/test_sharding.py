"""Shards by job: the rendezvous choice (exact values), the claim, the configuration, and what each
shard registers, builds, loads and answers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_asyncio import client

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.ha.claims import ShardClaimer
from carbontrack.ha.sharding import (
    DIFFBASE_ANNOTATION,
    UNLABELLED_SELECTOR,
    claim,
    job_selector,
    managed_job_selector,
    rendezvous,
    score,
)
from carbontrack.state import metrics
from carbontrack.state.config import SHARD_LABEL, OperatorConfig, Sharding
from carbontrack.state.registry import ForeignJob, Registry
from carbontrack.telemetry.server import TelemetryServer
from carbontrack.workload.jobbuilder import build_job
from tests.cases.crs import valid_spec
from tests.cases.registry import registered
from tests.cases.telemetry_fakes import FakeAuth, FakeRegistry, body

UIDS = [f"6f1c1e0a-0000-4000-8000-00000000000{i}" for i in range(1, 7)]
FLEET = [str(uuid.UUID(int=i * 7919 + 12345)) for i in range(3000)]


def test_scores_are_blake2b_of_uid_and_shard_the_same_in_every_process() -> None:
    assert score(UIDS[0], 0) == 11213761384058531042
    assert score(UIDS[0], 1) == 14736744570737590036


@pytest.mark.parametrize(
    ("uid", "winners"),
    [
        (UIDS[0], [0, 1, 1, 1, 1]),
        (UIDS[1], [0, 1, 2, 2, 2]),
        (UIDS[2], [0, 0, 0, 3, 3]),
        (UIDS[3], [0, 1, 1, 1, 1]),
        (UIDS[4], [0, 0, 0, 0, 0]),
        (UIDS[5], [0, 0, 0, 3, 3]),
    ],
)
def test_the_winner_for_one_to_five_shards(uid: str, winners: list[int]) -> None:
    assert [rendezvous(uid, range(n)) for n in range(1, 6)] == winners


def test_jobs_spread_evenly_and_a_fourth_shard_takes_a_quarter_from_the_others_only() -> None:
    three = {u: rendezvous(u, range(3)) for u in FLEET}
    four = {u: rendezvous(u, range(4)) for u in FLEET}
    assert Counter(three.values()) == {0: 995, 1: 1000, 2: 1005}
    assert Counter(four.values()) == {0: 751, 1: 748, 2: 757, 3: 744}
    moved = [u for u in FLEET if three[u] != four[u]]
    assert len(moved) == 744 and all(four[u] == 3 for u in moved)


@given(st.uuids().map(str), st.integers(min_value=1, max_value=12))
def test_adding_a_shard_moves_a_job_only_to_the_new_shard(uid: str, shards: int) -> None:
    before, after = rendezvous(uid, range(shards)), rendezvous(uid, range(shards + 1))
    assert after in (before, shards)


@given(st.uuids().map(str), st.integers(min_value=2, max_value=12), st.data())
def test_draining_a_shard_moves_only_the_jobs_it_would_have_won(uid: str, shards: int, data: Any) -> None:
    drained = data.draw(st.integers(min_value=0, max_value=shards - 1))
    every = rendezvous(uid, range(shards))
    accepting = Sharding(0 if drained else 1, shards, frozenset({drained})).accepting
    assert drained not in accepting
    assert rendezvous(uid, accepting) == every or every == drained


def ctj(uid: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, "labels": labels or {}, "annotations": extra.get("annotations")},
        **extra,
    }


def test_a_new_job_is_claimed_by_the_winner_among_the_shards_taking_new_jobs() -> None:
    assert claim(ctj(UIDS[1]), Sharding(0, 3)) == 2
    assert claim(ctj(UIDS[1]), Sharding(0, 3, frozenset({2}))) == rendezvous(UIDS[1], (0, 1)) == 1


def test_a_labelled_job_is_never_claimed_again() -> None:
    assert claim(ctj(UIDS[1], {SHARD_LABEL: "0"}), Sharding(2, 3)) is None


def test_a_job_an_unsharded_operator_built_stays_with_shard_0_even_while_it_drains() -> None:
    handled = ctj(UIDS[1], annotations={DIFFBASE_ANNOTATION: "{}"})
    phased = {**ctj(UIDS[1]), "status": {"phase": "Running"}}
    for job in (handled, phased):
        assert claim(job, Sharding(1, 3, frozenset({0}))) == 0


def test_the_watches_ask_the_apiserver_for_this_shards_objects_only() -> None:
    assert job_selector(Sharding(2, 3)) == "carbontrack.io/shard=2"
    assert UNLABELLED_SELECTOR == "!carbontrack.io/shard"
    managed = "carbontrack.io/managed=true"
    assert managed_job_selector(Sharding(2, 3), managed) == f"{managed},carbontrack.io/shard=2"
    # shard 0 also watches the Jobs built before sharding (notin selects Jobs without the label)
    assert managed_job_selector(Sharding(0, 4), managed) == f"{managed},carbontrack.io/shard notin (1,2,3)"


def test_the_shard_comes_from_the_environment_and_one_shard_is_no_sharding() -> None:
    assert OperatorConfig.from_env({}).sharding == Sharding(0, 1) and not Sharding().enabled
    env = {"CARBONTRACK_SHARD": "2", "CARBONTRACK_SHARDS": "4", "CARBONTRACK_SHARDS_DRAINING": "3, 1"}
    sharding = OperatorConfig.from_env(env).sharding
    assert sharding == Sharding(2, 4, frozenset({1, 3})) and sharding.enabled
    assert sharding.accepting == (0, 2)


@pytest.mark.parametrize(
    ("shard", "shards", "draining", "words"),
    [(3, 3, (), "CARBONTRACK_SHARD=3"), (0, 2, (2,), "0..1"), (0, 2, (0, 1), "at least one")],
)
def test_a_shard_outside_the_count_or_no_shard_taking_jobs_is_refused_at_start(
    shard: int, shards: int, draining: tuple[int, ...], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        Sharding(shard, shards, frozenset(draining))


def test_ownership_by_label_and_every_job_without_shards() -> None:
    assert Sharding().owns({SHARD_LABEL: "5"}) and Sharding().owns(None)
    assert Sharding(1, 3).owns({SHARD_LABEL: "1"}) and not Sharding(1, 3).owns({SHARD_LABEL: "2"})
    assert Sharding(0, 3).owns({}) and not Sharding(1, 3).owns({})  # unlabelled: built unsharded
    assert Sharding(0, 3).owner({SHARD_LABEL: "x"}) is None and not Sharding(0, 3).owns({SHARD_LABEL: "x"})


def test_a_shard_handles_only_its_labelled_jobs_and_the_jobs_it_built() -> None:
    handlers = registered(OperatorConfig(sharding=Sharding(1, 3), kueue_admission_check=True))
    for name in ("reconcile", "reconcile/spec", "deleted", "promote", "publish_ca"):
        assert all(h.labels == {SHARD_LABEL: "1"} for h in handlers[name]), name
    (watch,) = handlers["job_event"]
    owns = watch.labels[SHARD_LABEL]
    assert watch.labels["carbontrack.io/managed"] == "true"
    assert owns("1") and not owns("0") and not owns(None)
    assert "start_sharding" in handlers and "stop_sharding" in handlers
    assert "on_workload" not in handlers  # Kueue's checks are answered by shard 0 alone
    zero = registered(OperatorConfig(sharding=Sharding(0, 3), kueue_admission_check=True))
    assert zero["job_event"][0].labels[SHARD_LABEL](None) and "on_workload" in zero


def test_without_shards_nothing_is_filtered_or_added() -> None:
    handlers = registered(OperatorConfig())
    assert all(h.labels is None for h in handlers["reconcile"])
    assert handlers["job_event"][0].labels == {"carbontrack.io/managed": "true"}
    assert "start_sharding" not in handlers


def test_a_shards_job_carries_its_label_and_its_address() -> None:
    spec = CarbonTrackedJobSpec.model_validate(valid_spec())
    url = "https://carbontrack-shard-2.carbontrack-system.svc:8443"
    job = build_job("llama", "ml", "u", spec, 1, OperatorConfig(operator_url=url, sharding=Sharding(2, 3)))
    assert job["metadata"]["labels"][SHARD_LABEL] == "2"
    sidecar = job["spec"]["template"]["spec"]["initContainers"][0]
    assert {e["name"]: e.get("value") for e in sidecar["env"]}["CARBONTRACK_OPERATOR_URL"] == url
    assert SHARD_LABEL not in build_job("llama", "ml", "u", spec, 1, OperatorConfig())["metadata"]["labels"]


class ElsewhereRegistry(FakeRegistry):
    async def get(self, namespace: str, name: str) -> Any:
        raise ForeignJob(namespace, name, 2)


def test_a_batch_for_another_shards_job_is_refused_421_and_counted() -> None:
    def count() -> float:
        value = metrics.REGISTRY.get_sample_value(
            "carbontrack_telemetry_rejected_total", {"reason": "misdirected"}
        )
        return value or 0.0

    async def run() -> tuple[int, str]:
        server = TelemetryServer(ElsewhereRegistry(), FakeAuth(), max_body_bytes=4096)  # type: ignore[arg-type]
        async with TestClient(TestServer(server.app)) as http:
            resp = await http.post(
                "/v1/telemetry", data=json.dumps(body(1)), headers={"Authorization": "Bearer good"}
            )
            return resp.status, await resp.text()

    before = count()
    status, text = asyncio.run(run())
    assert status == 421 and "served by shard 2" in json.loads(text)["message"]
    assert count() == before + 1


class OneJobApi:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels

    async def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return {"metadata": {"labels": self.labels}, "spec": valid_spec()}


def test_the_registry_never_loads_another_shards_job() -> None:
    async def load(labels: dict[str, str]) -> Registry:
        api = client.ApiClient()
        try:
            registry = Registry(api, OperatorConfig(sharding=Sharding(1, 3)))
            registry.custom = OneJobApi(labels)  # type: ignore[assignment]
            with pytest.raises(ForeignJob, match="served by shard 2"):
                await registry.get("ml", "llama")
            return registry
        finally:
            await api.close()

    assert asyncio.run(load({SHARD_LABEL: "2"})).jobs == {}


class PatchRecorder:
    """Stands in for CustomObjectsApi: records merge patches, answers each with `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.patches: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        self.patches.append((args, kwargs))
        outer = self

        class Answer:
            status = outer.status
            reason, headers = "answer", {}

            async def read(self) -> bytes:
                return b"{}"

            def release(self) -> None:
                pass

        return Answer()


def claims(body: dict[str, Any], shard: int, active: bool = True, status: int = 200) -> PatchRecorder:
    async def run() -> PatchRecorder:
        api = client.ApiClient()
        try:
            claimer = ShardClaimer(api, Sharding(shard, 3), [], lambda: active)
            claimer.custom = PatchRecorder(status)  # type: ignore[assignment]
            assert await claimer.claim(body) is (bool(active) and shard == 2 and status == 200)
            return claimer.custom  # type: ignore[return-value]
        finally:
            await api.close()

    return asyncio.run(run())


def new_job() -> dict[str, Any]:
    meta = {"uid": UIDS[1], "name": "llama", "namespace": "ml", "resourceVersion": "41", "labels": {}}
    return {"metadata": meta}  # UIDS[1] goes to shard 2 of 3


def test_the_winner_labels_a_new_job_only_at_the_version_it_decided_on() -> None:
    (args, kwargs), *_ = claims(new_job(), shard=2).patches
    assert args[2:5] == ("ml", "carbontrackedjobs", "llama")
    assert args[5] == {"metadata": {"labels": {SHARD_LABEL: "2"}, "resourceVersion": "41"}}
    assert kwargs["_content_type"] == "application/merge-patch+json"


def test_a_loser_or_a_standby_writes_nothing_and_a_conflict_is_left_to_the_next_event() -> None:
    assert claims(new_job(), shard=0).patches == []
    assert claims(new_job(), shard=2, active=False).patches == []
    assert len(claims(new_job(), shard=2, status=409).patches) == 1  # claim() is False: changed since
