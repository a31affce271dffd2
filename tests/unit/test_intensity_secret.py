"""A live provider's key the operator cannot read: the static figure as a fallback, a backoff instead of
a read per batch, and the words for the IntensityResolved condition."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.rollout.evaluation import evaluate
from carbontrack.state.config import OperatorConfig
from carbontrack.state.intensity_resolution import IntensityResolution
from tests.cases.crs import minimal_spec
from tests.cases.evaluation import canary_aggregate, inputs

SPEC = CarbonTrackedJobSpec.model_validate(
    minimal_spec(carbon={"zone": "DE", "intensity": {"provider": "electricitymaps", "secretName": "em-key"}})
)


class Secrets:
    """CoreV1Api's Secret read: forbidden until `allowed`."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, str]] = []
        self.allowed = False

    async def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        self.reads.append((namespace, name))
        if not self.allowed:
            raise ApiException(status=403, reason="Forbidden")
        return SimpleNamespace(data={"apiKey": "a2V5"})


def test_a_forbidden_secret_falls_back_to_the_table_backs_off_and_says_why() -> None:
    asyncio.run(forbidden_secret())


async def forbidden_secret() -> None:
    now = [100.0]
    api = client.ApiClient()
    resolution = IntensityResolution(api, OperatorConfig(), clock=lambda: now[0])
    secrets = Secrets()
    resolution.core = secrets  # type: ignore[assignment]

    async def batches(n: int) -> list[Any]:
        return [await resolution.current("ml", "llama", SPEC, "p0") for _ in range(n)]

    figures = await batches(50)
    assert {(f.g_per_kwh, f.zone, f.source) for f in figures} == {(380.9, "DE", "static:ember-2023:fallback")}
    assert secrets.reads == [("ml", "em-key")]  # once, not once per batch
    problem = resolution.problem("ml", SPEC)
    assert problem is not None and problem.startswith("cannot read Secret ml/em-key with the electricitymaps")
    assert "carbon.jobSecretNames" in problem and "fallback" in problem
    now[0] += 30.0  # the first retry after 30 s, then 60 s
    await batches(5)
    now[0] += 59.0
    await batches(5)
    assert len(secrets.reads) == 2
    secrets.allowed = True
    now[0] += 1.0
    assert await resolution._resolver("ml", SPEC) is not None
    assert len(secrets.reads) == 3 and resolution.problem("ml", SPEC) is None
    await resolution.close()
    await api.close()


def test_an_unreadable_key_is_a_condition_and_one_warning_until_read() -> None:
    agg = canary_aggregate(step=5)
    why = "cannot read Secret ml/em-key with the electricitymaps API key: it does not exist; ..."
    first = evaluate(inputs(agg, intensity_problem=why))
    assert [(c.type, c.status, c.reason, c.message) for c in first.conditions] == [
        ("IntensityResolved", False, "SecretUnreadable", why)
    ]
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "IntensitySecretUnreadable")]
    again = evaluate(inputs(agg, intensity_problem=why, intensity_warned=True))
    assert again.conditions == first.conditions and again.events == ()
    read = evaluate(inputs(agg, intensity_warned=True)).conditions
    assert [(c.type, c.status, c.reason) for c in read] == [("IntensityResolved", True, "ProviderKeyRead")]
    assert evaluate(inputs(agg)).conditions == ()
