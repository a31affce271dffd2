"""A person's decision is acted on only once the job's decision log keeps it (state.decision_log).

The judgement's plan carries the decision's record (status.decisions shows it); before the plan is
applied, the record goes into the log. When the log cannot take it (the apiserver refuses or cannot be
reached, or the entry's name is taken), the round goes on as if the annotation were not there: it stays
on the object, the next round tries again, and the DecisionLogged condition says why, with a Warning
Event when it turns False. A decision therefore never moves a job without a durable record of it.
"""

from __future__ import annotations

import dataclasses

from carbontrack.controller.context import JobCall
from carbontrack.controller.services import Services
from carbontrack.core.events import ConditionUpdate, Event
from carbontrack.core.rollout.evaluation import Inputs, Plan, evaluate
from carbontrack.state.decision_log import LABEL, ConfigMapDecisionLog, DecisionLogError, JobRef, label_value

CONDITION = "DecisionLogged"


async def logged(call: JobCall, services: Services, inputs: Inputs, plan: Plan) -> Plan:
    """The plan to apply: `plan` once its decision (if any) is in the log, else the round without it."""
    record, token = plan.decision.record, plan.decision.state.consumed_decision
    if record is None or token is None:
        return plan
    job = JobRef(call.namespace, call.name, str(call.body.metadata.uid))
    try:
        await ConfigMapDecisionLog(services.api).append(job, record, token)
    except DecisionLogError as exc:
        message = f"a decision waits on the object until the decision log keeps it: {exc}"
        without = evaluate(dataclasses.replace(inputs, person=None))
        unlogged = ConditionUpdate(CONDITION, False, "LogUnwritable", message)
        events = (
            without.events
            if _said(call, message)
            else (*without.events, Event("Warning", "DecisionNotLogged", message))
        )
        return dataclasses.replace(without, conditions=(*without.conditions, unlogged), events=events)
    where = f"every decision is kept in the ConfigMaps labelled {LABEL}={label_value(call.name)}"
    kept = ConditionUpdate(CONDITION, True, "Kept", where)
    return dataclasses.replace(plan, conditions=(*plan.conditions, kept))


def _said(call: JobCall, message: str) -> bool:
    """The condition already says this in status (its Event was posted)."""
    conditions = call.status.get("conditions") or []
    return any(c.get("type") == CONDITION and c.get("message") == message for c in conditions)
