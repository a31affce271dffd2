"""A judgement round that fails says so, in condition `Judged` and an Event, and the next round tries again.

kopf stops a job's timer for good when the patch it applies after a round is refused (a 400 for a number
JSON cannot hold, a 422 for a value outside the schema), and a round that raises is retried with a log
line only. So `promote` runs each round through `guarded`:

- whatever the round raises (a computation error, a Job or Workload write that failed, a halt that could
  not be applied) voids the round's own patch and records `Judged=False` with a reason and the cause in
  one sentence;
- the round's patch is checked before kopf applies it: a body the apiserver would refuse is a failure of
  the round like any other, so the timer never dies on it;
- a Warning Event is posted when the condition turns False or its reason changes, not every round, and
  the log says it at the same moments;
- the next round (the timer's next tick, or a spec edit's) runs as usual; the first that succeeds turns
  the condition True (reason `JudgementResumed`) with a Normal Event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from carbontrack.api.crd import CarbonTrackedJobStatus
from carbontrack.controller.context import JobCall
from carbontrack.core.events import ConditionUpdate, Event
from carbontrack.state.conditions import set_condition

log = logging.getLogger("carbontrack.operator")

CONDITION = "Judged"
MESSAGE_CHARS = 300


class RoundFailed(Exception):
    """A round that could not do what it decided, with the condition's reason (CamelCase) and why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def describe(exc: BaseException, default_reason: str) -> tuple[str, str]:
    """(reason, message) for the condition: a RoundFailed's own, else the exception's type and words."""
    if isinstance(exc, RoundFailed):
        reason, words = exc.reason, str(exc)
    else:
        reason, words = default_reason, f"{type(exc).__name__}: {exc}"
    flat = " ".join(words.split())
    flat = flat if len(flat) <= MESSAGE_CHARS else flat[: MESSAGE_CHARS - 3] + "..."
    return reason, f"{flat}; tried again every judgement round"


def _current(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION), {})


def failed(status: Mapping[str, Any], reason: str, message: str) -> tuple[ConditionUpdate, Event | None]:
    """The condition for a failed round, and its Event when the condition turns False or changes reason."""
    before = _current(status)
    changed = before.get("status") != "False" or before.get("reason") != reason
    return ConditionUpdate(CONDITION, False, reason, message), (
        Event("Warning", reason, message) if changed else None
    )


def recovered(status: Mapping[str, Any]) -> tuple[ConditionUpdate, Event] | None:
    """After a failed round, the first one that succeeds: the condition True again, and its Event."""
    if _current(status).get("status") != "False":
        return None
    message = "the judgement runs again"
    return ConditionUpdate(CONDITION, True, "JudgementResumed", message), Event(
        "Normal", "JudgementResumed", message
    )


def refusal(patch: Mapping[str, Any]) -> str | None:
    """Why the apiserver would refuse the round's patch (None: it would not): a number JSON cannot hold,
    or a status field outside the status schema (the CRD is generated from the same models)."""
    try:
        json.dumps(patch, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"the round's status patch is not JSON the apiserver accepts: {exc}"
    written = {k: v for k, v in (patch.get("status") or {}).items() if v is not None}
    try:
        CarbonTrackedJobStatus.model_validate(written)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"the round's status patch does not fit the schema: status.{where}: {first['msg']}"
    return None


async def guarded(round_: Awaitable[None], call: JobCall, default_reason: str) -> None:
    """Run one round; a failure of any kind voids its patch and is recorded instead (module docstring)."""
    try:
        await round_
        why = refusal(call.patch)
        if why is not None:
            raise RoundFailed("StatusRefused", why)
    except Exception as exc:
        reason, message = describe(exc, default_reason)
        call.patch.clear()
        condition, event = failed(call.status, reason, message)
        _record(call, condition, event)
        if event is not None:  # once per failure, with the traceback of one the code did not expect
            trace = not isinstance(exc, RoundFailed | kopf.TemporaryError)
            log.warning("judgement round failed: %s", message, exc_info=trace, extra={"job": call.name})
        return
    back = recovered(call.status)
    if back is not None:
        _record(call, *back)


def _record(call: JobCall, condition: ConditionUpdate, event: Event | None) -> None:
    """The condition on top of what the round's patch sets (or status holds), and its Event."""
    written = call.patch.get("status") or {}
    current = written["conditions"] if "conditions" in written else call.status.get("conditions")
    call.patch.status["conditions"] = set_condition(
        current, condition.type, condition.status, condition.reason, condition.message, call.generation
    )
    if event is not None:
        call.post((event,))
