"""Approvals people can trust: who decided is read as the admission policy checked it, an approval that
gates.approval.distinctFrom rules out is refused, and no decision moves a job before its log keeps it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from carbontrack.api.contract import APPROVE_ANNOTATION, Phase
from carbontrack.api.crd import ApprovalSpec, CarbonTrackedJobSpec, DecisionRecord
from carbontrack.controller import decisions
from carbontrack.controller.context import JobCall
from carbontrack.core.rollout.approvals import (
    CREATED_BY_ANNOTATION,
    annotation_value,
    person_decision,
    refusal,
)
from carbontrack.core.rollout.evaluation import Inputs, Plan, evaluate
from carbontrack.core.rollout.promotion import State
from carbontrack.state.decision_log import (
    LABEL,
    DecisionLogError,
    JobRef,
    entry_body,
    entry_name,
    is_entry_of,
    label_value,
    record_of,
)
from tests.cases.crs import merged_spec
from tests.cases.evaluation import canary_aggregate, inputs

AT = dt.datetime(2026, 12, 1, 22, 0, tzinfo=dt.UTC)
DISTINCT = ApprovalSpec.model_validate({"stages": [100], "distinctFrom": "creator"})
PLAIN = ApprovalSpec.model_validate({"stages": [100]})
PAUSED = State(Phase.PAUSED, -1, 0, paused_from=Phase.CANARY, pause_reason="Inconclusive")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def policy_prefix(user: str) -> str:
    """What the chart's admission policy requires a decision's value to begin with, as its CEL builds it."""
    return '{"by":"' + user.replace("\\", "\\\\").replace('"', '\\"') + '","reason":"'


@pytest.mark.parametrize("user", ["alice", "system:serviceaccount:ml:owner", "josé@example.com", 'o"dd\\one'])
def test_the_cli_value_begins_as_the_admission_policy_spells_the_user(user: str) -> None:
    value = annotation_value(user, "fine")
    assert value.startswith(policy_prefix(user)) and value.endswith('"}')
    decided = person_decision({APPROVE_ANNOTATION: value}, [], AT)
    assert decided is not None and decided.by == user


def test_the_first_by_counts_so_a_later_one_cannot_name_another_user() -> None:
    """The policy checks the value's beginning; a second `by` after it must not win."""
    forged = policy_prefix("mallory") + 'x","by":"cto@example.com"}'
    decided = person_decision({APPROVE_ANNOTATION: forged}, [], AT)
    assert decided is not None and (decided.by, decided.reason) == ("mallory", "x")


@pytest.mark.parametrize("value", ["[" * 100_000, '{"by": 5, "reason": ["x"]}', "null", '"just text"'])
def test_a_value_that_is_no_decision_document_names_nobody_and_raises_nothing(value: str) -> None:
    decided = person_decision({APPROVE_ANNOTATION: value}, [], AT)
    assert decided is not None and decided.by == "unknown (no managedFields entry; user not recorded)"


@pytest.mark.parametrize(
    ("approve", "by", "creator", "approval", "refused"),
    [
        (True, "alice", "alice", DISTINCT, "alice created this job and may not approve it"),
        (True, "bob", "alice", DISTINCT, ""),
        (False, "alice", "alice", DISTINCT, ""),  # a creator may still reject: halting is always safe
        (True, "alice", "alice", PLAIN, ""),  # no distinctFrom: the creator may approve
        (True, "alice", "alice", None, ""),
        (True, "bob", "", DISTINCT, "the job's creator is not recorded (carbontrack.io/created-by)"),
        (True, "", "alice", DISTINCT, "the approver is not recorded"),
    ],
)
def test_distinct_from_creator_refuses_only_approvals_it_cannot_tell_apart(
    approve: bool, by: str, creator: str, approval: ApprovalSpec | None, refused: str
) -> None:
    said = refusal(approve, by, creator, approval)
    assert said.startswith(refused) and bool(said) == bool(refused)


def test_a_self_approval_under_distinct_from_is_refused_recorded_and_used_up() -> None:
    spec = CarbonTrackedJobSpec.model_validate(
        merged_spec({"approval": {"stages": [100], "distinctFrom": "creator"}})
    )
    annotations = {APPROVE_ANNOTATION: annotation_value("alice", "mine"), CREATED_BY_ANNOTATION: "alice"}
    person = person_decision(annotations, [], AT, spec.gates.approval)
    plan = evaluate(inputs(canary_aggregate(), spec=spec, state=PAUSED, person=person))
    assert person is not None and plan.decision.state == dataclasses.replace(
        PAUSED, consumed_decision=person.token
    )  # still Paused, waiting for someone else; this annotation is used up
    assert plan.scale is None and plan.clear_decision
    record = plan.decision.record
    assert record is not None and (record.decision, record.by, record.reason) == ("Refused", "alice", "mine")
    (event,) = plan.events
    assert (event.type, event.reason) == ("Warning", "ApprovalRefused")
    assert "alice created this job and may not approve it" in event.message
    other = {**annotations, APPROVE_ANNOTATION: annotation_value("bob", "checked")}
    approved = evaluate(
        inputs(
            canary_aggregate(),
            spec=spec,
            state=PAUSED,
            person=person_decision(other, [], AT, spec.gates.approval),
        )
    )
    assert approved.decision.record is not None and approved.decision.record.decision == "Approved"


# --- the decision log ----------------------------------------------------------------------------

JOB = JobRef("ml", "llama", "0b6f-uid")
RECORD = DecisionRecord(
    decision="Approved", by="bob", reason="checked", at=AT, stage="canary", phase="Paused"
)


def test_an_entry_is_an_immutable_configmap_the_job_owns() -> None:
    body = entry_body(JOB, RECORD, "a" * 32)
    assert body["immutable"] is True
    assert body["metadata"]["name"] == "llama-decision-" + "a" * 16
    assert body["metadata"]["labels"][LABEL] == "llama"
    (owner,) = body["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("CarbonTrackedJob", "llama", "0b6f-uid")
    assert body["data"] == {
        "decision": "Approved", "by": "bob", "reason": "checked", "at": "2026-12-01T22:00:00Z",
        "stage": "canary", "phase": "Paused", "token": "a" * 32,
    }  # fmt: skip
    assert record_of(body["data"]) == RECORD


@pytest.mark.parametrize("name", ["a" * 253, "a" * 62 + "-b" * 40, "x.y." + "z" * 249])
def test_names_and_labels_stay_within_kubernetes_limits(name: str) -> None:
    entry = entry_name(name, "f" * 32)
    assert len(entry) <= 253 and DNS_SUBDOMAIN.fullmatch(entry), entry
    value = label_value(name)
    assert len(value) <= 63 and value[-1].isalnum()


def test_a_taken_name_is_this_decisions_entry_only_when_label_owner_and_hash_agree() -> None:
    body = entry_body(JOB, RECORD, "a" * 32)

    def meta(labels: dict[str, str], uid: str) -> Any:
        return SimpleNamespace(labels=labels, owner_references=[SimpleNamespace(uid=uid)])

    mine = meta(body["metadata"]["labels"], JOB.uid)
    assert is_entry_of(JOB, "a" * 32, mine, body["data"])
    assert not is_entry_of(JOB, "b" * 32, mine, body["data"])
    assert not is_entry_of(JOB, "a" * 32, meta(body["metadata"]["labels"], "other"), body["data"])
    assert not is_entry_of(JOB, "a" * 32, meta({}, JOB.uid), body["data"])


# --- the judgement acts on a decision only once the log keeps it -----------------------------------


class FakeLog:
    def __init__(self, api: Any, fail: str | None = None) -> None:
        self.fail = fail
        self.kept: list[tuple[JobRef, DecisionRecord, str]] = []

    async def append(self, job: JobRef, record: DecisionRecord, token: str) -> None:
        if self.fail:
            raise DecisionLogError(self.fail)
        self.kept.append((job, record, token))


def _approved_round(conditions: list[dict[str, Any]]) -> tuple[JobCall, Any]:
    annotations = {APPROVE_ANNOTATION: annotation_value("bob", "checked")}
    person = person_decision(annotations, [], AT)
    given = inputs(canary_aggregate(), state=PAUSED, person=person)
    meta = {"name": "llama", "namespace": "ml", "uid": "0b6f-uid"}
    body = kopf.Body({"metadata": meta, "status": {"conditions": conditions}})
    call = JobCall(body, "llama", "ml", body.status, kopf.Patch(), given.spec, None, 1)
    return call, given


def logged(call: JobCall, given: Inputs, plan: Plan) -> Plan:
    """`decisions.logged` as the judgement calls it (the log is faked: no apiserver is used)."""
    return asyncio.run(decisions.logged(call, SimpleNamespace(api=None), given, plan))  # type: ignore[arg-type]


def test_a_kept_decision_is_acted_on(monkeypatch: pytest.MonkeyPatch) -> None:
    log = FakeLog(None)
    monkeypatch.setattr(decisions, "ConfigMapDecisionLog", lambda api: log)
    call, given = _approved_round([])
    plan = logged(call, given, evaluate(given))
    ((job, record, token),) = log.kept
    assert job == JOB and record.decision == "Approved" and token == given.person.token
    assert plan.decision.state.phase == Phase.PROMOTING and plan.clear_decision
    kept = next(c for c in plan.conditions if c.type == "DecisionLogged")
    assert (kept.status, kept.reason) == (True, "Kept") and f"{LABEL}=llama" in kept.message


def test_a_decision_the_log_cannot_keep_waits_on_the_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        decisions, "ConfigMapDecisionLog", lambda api: FakeLog(api, "creating ConfigMap x: 403")
    )
    call, given = _approved_round([])
    plan = logged(call, given, evaluate(given))
    assert plan.decision.state == PAUSED and plan.decision.record is None  # not acted on, not used up
    assert not plan.clear_decision  # the annotation stays for the next round
    waiting = next(c for c in plan.conditions if c.type == "DecisionLogged")
    assert (waiting.status, waiting.reason) == (False, "LogUnwritable") and "403" in waiting.message
    assert [e.reason for e in plan.events] == ["DecisionNotLogged"]
    said = [{"type": "DecisionLogged", "status": "False", "message": waiting.message}]
    call, given = _approved_round(said)
    again = logged(call, given, evaluate(given))
    assert again.events == ()  # said once, not every round


def test_a_round_without_a_decision_touches_no_log(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_log(api: Any) -> FakeLog:
        raise AssertionError("a log was opened")

    monkeypatch.setattr(decisions, "ConfigMapDecisionLog", no_log)
    call, given = _approved_round([])
    given = dataclasses.replace(given, person=None)
    plan = evaluate(given)
    assert logged(call, given, plan) is plan
