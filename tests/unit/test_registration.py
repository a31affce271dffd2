"""Every kopf handler is registered in one place, under the ids kopf stores its progress by."""

from __future__ import annotations

from carbontrack.state.config import OperatorConfig
from tests.cases.registry import registered


def test_the_handler_ids_kopf_persists_stay_what_they_were() -> None:
    handlers = registered(OperatorConfig())
    assert sorted(handlers) == [
        "cleanup", "deleted", "job_event", "promote", "publish_ca", "reconcile", "reconcile/spec", "startup",
    ]  # fmt: skip
    assert len(handlers["reconcile"]) == 2  # on create and on resume
    assert handlers["reconcile/spec"][0].field == ("spec",)
    assert handlers["deleted"][0].requires_finalizer is False  # optional: deletion is never blocked


def test_the_judgement_timer_runs_at_the_configured_interval() -> None:
    (timer,) = registered(OperatorConfig(judge_interval_s=7.0))["promote"]
    assert (timer.interval, timer.backoff, timer.initial_delay) == (7.0, 7.0, 1.0)


def test_the_kueue_handlers_only_where_the_operator_answers_admission_checks() -> None:
    plain = registered(OperatorConfig())
    kueue = registered(OperatorConfig(kueue_admission_check=True))
    assert set(kueue) - set(plain) == {"on_admission_check", "on_workload"}
    plurals = {h.selector.any_name for name in ("on_admission_check", "on_workload") for h in kueue[name]}
    assert plurals == {"admissionchecks", "workloads"}


def test_only_managed_jobs_are_watched() -> None:
    (watch,) = registered(OperatorConfig())["job_event"]
    assert (watch.selector.group, watch.selector.any_name) == ("batch", "jobs")
    assert watch.labels == {"carbontrack.io/managed": "true"}
