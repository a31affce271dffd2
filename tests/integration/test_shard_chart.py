"""The chart with operator.shards: one shard renders the operator as without shards; N shards render a
Deployment, Service, peering object and disruption budget each, with one serving certificate for every
shard's Service; draining shards outside the count, or all of them, are refused at render time. (That
the apiserver accepts the rendered shards is in test_shards, on its control plane.)"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml
from hack.binaries import BIN
from hack.render import render

from tests.integration.harness import ROOT


def docs(
    *values: str, show: tuple[str, ...] = ("deployment", "service", "peering", "pdb")
) -> list[dict[str, Any]]:
    only = [a for name in show for a in ("--show-only", f"templates/{name}.yaml")]
    return [d for d in yaml.safe_load_all(render("--set", ",".join(values), *only, include_crds=False)) if d]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_one_shard_renders_the_operator_without_shards() -> None:
    assert render("--set", "operator.shards=1") == render()
    assert "carbontrack.io/shard" not in render() and "CARBONTRACK_SHARD" not in render()


def test_three_shards_render_a_deployment_service_peering_object_and_budget_each() -> None:
    objects = docs("operator.shards=3", "replicaCount=2", "operator.drainingShards={2}")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    names = {kind: [o["metadata"]["name"] for o in objs] for kind, objs in by_kind.items()}
    shard_names = ["carbontrack-shard-0", "carbontrack-shard-1", "carbontrack-shard-2"]
    assert names["Deployment"] == names["PodDisruptionBudget"] == shard_names
    # shard 0 keeps the unsharded Service and peering object: pods built before sharding report there
    assert names["Service"] == ["carbontrack", "carbontrack-shard-1", "carbontrack-shard-2"]
    assert names["ClusterKopfPeering"] == ["carbontrack", "carbontrack-shard-1", "carbontrack-shard-2"]
    hosts = [f"{n}.carbontrack-system.svc" for n in names["Service"]]
    for k, (deploy, service, pdb) in enumerate(
        zip(by_kind["Deployment"], by_kind["Service"], by_kind["PodDisruptionBudget"], strict=True)
    ):
        selector = deploy["spec"]["selector"]["matchLabels"]
        assert selector["carbontrack.io/shard"] == str(k)
        assert service["spec"]["selector"] == selector == pdb["spec"]["selector"]["matchLabels"]
        assert deploy["spec"]["template"]["metadata"]["labels"] == selector
        args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--peering={names['ClusterKopfPeering'][k]}" in args
        env = env_of(deploy)
        assert env["CARBONTRACK_OPERATOR_URL"] == f"https://{hosts[k]}:8443"
        assert (env["CARBONTRACK_SHARD"], env["CARBONTRACK_SHARDS"], env["CARBONTRACK_SHARDS_DRAINING"]) == (
            str(k), "3", "2",
        )  # fmt: skip
        assert env["CARBONTRACK_TLS_SERVER_NAMES"].split(",") == [
            name for h in hosts for name in (h, f"{h}.cluster.local")
        ]  # one certificate for every shard's Service
    managed = docs("operator.shards=3", "tls.certManager.enabled=true", show=("certmanager",))
    certificate = next(d for d in managed if d["kind"] == "Certificate" and not d["spec"].get("isCA"))
    assert certificate["spec"]["dnsNames"] == [name for h in hosts for name in (h, f"{h}.cluster.local")]


def test_namespaced_shards_get_a_peering_object_per_shard_and_namespace() -> None:
    objects = docs("operator.shards=2", "replicaCount=2", "watchNamespaces={ml,research}", show=("peering",))
    assert sorted((o["metadata"]["name"], o["metadata"]["namespace"]) for o in objects) == [
        ("carbontrack", "ml"), ("carbontrack", "research"),
        ("carbontrack-shard-1", "ml"), ("carbontrack-shard-1", "research"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ("operator.shards=2,operator.drainingShards={2}", "shard 2 is not one of 0..1"),
        ("operator.shards=2,operator.drainingShards={0,1}", "every shard is draining"),
        ("operator.shards=0", "shards"),
    ],
)
def test_draining_shards_outside_the_count_or_all_of_them_are_refused(values: str, words: str) -> None:
    result = subprocess.run(
        [str(BIN / "helm"), "template", "x", str(ROOT / "helm" / "carbontrack"), "--set", values],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and words in result.stderr, result.stderr
