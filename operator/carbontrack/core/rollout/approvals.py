"""A person's approve/reject annotation, read into a decision the promotion step can act on (pure).

Who decided: the apiserver does not put the requesting user on the object, so `carbontrack
approve|reject` asks it who the caller is (a SelfSubjectReview) and writes `{"by":USER,"reason":...}`;
the chart's admission policy (`<release>-job-decisions`) refuses any such annotation whose value does
not begin `{"by":"<the requesting user>","reason":"`. A CEL expression cannot parse JSON, so the policy
checks that prefix, and this module reads the *first* `by` of the value: a second `by` further on
cannot name another user. Without the policy the value is only what its writer claims. A bare
`kubectl annotate ... ="reason"` (refused by the policy) is recorded as its field manager, with
"user not recorded".

Separation of duties (`gates.approval.distinctFrom: creator`): the creator is the job's
`carbontrack.io/created-by` annotation, which the policy lets only the creating user write, at
creation, and never change. The policy refuses the creator's approval at the apiserver; this module
refuses it again (and an approval whose approver or creator is not recorded), for a cluster without
the policy. A rejection is never refused: halting is always safe.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carbontrack.api.contract import APPROVE_ANNOTATION, REJECT_ANNOTATION
from carbontrack.api.crd import ApprovalSpec
from carbontrack.core.rollout.promotion import PersonDecision

CREATED_BY_ANNOTATION = "carbontrack.io/created-by"
"""The user who created the job, as the apiserver authenticated them (the chart's policy checks it)."""


def annotation_value(by: str, reason: str) -> str:
    """What `carbontrack approve|reject` writes: `by` first, compact, non-ASCII kept as it is, so the
    value begins exactly as the admission policy spells the user (`{"by":"` + the name + `","reason":"`)."""
    return json.dumps({"by": by, "reason": reason}, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class _Written:
    """An annotation's value as a decision: who (empty when the value names nobody) and why."""

    by: str
    reason: str


def _first_of_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members, the first of each key kept (as the admission policy's prefix reads it)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def _written(value: str) -> _Written:
    """`{"by": ..., "reason": ...}`, or a bare reason. Any other JSON, or none, is a bare reason."""
    try:
        doc = json.loads(value, object_pairs_hook=_first_of_each)
    except (ValueError, RecursionError):  # an annotation can nest `[` far past the parser's depth
        doc = None
    if not isinstance(doc, dict):
        return _Written("", value.strip())
    by, reason = doc.get("by"), doc.get("reason")
    return _Written(
        by.strip() if isinstance(by, str) else "", reason.strip() if isinstance(reason, str) else ""
    )


def _setter(key: str, managed_fields: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The managedFields entry that owns the annotation (the last one, if several claim it)."""
    found = None
    for entry in managed_fields:
        fields = entry.get("fieldsV1") or {}
        annotations = (fields.get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{key}" in annotations:
            found = entry
    return found


def refusal(approve: bool, by: str, creator: str, approval: ApprovalSpec | None) -> str:
    """Why this approval may not count under gates.approval.distinctFrom (empty: it may)."""
    if not approve or approval is None or approval.distinct_from != "creator":
        return ""
    if not creator:
        return f"the job's creator is not recorded ({CREATED_BY_ANNOTATION}): no approver is known to differ"
    if not by:
        return "the approver is not recorded, so it cannot be told apart from the creator"
    if by == creator:
        return f"{by} created this job and may not approve it (gates.approval.distinctFrom: creator)"
    return ""


def person_decision(
    annotations: Mapping[str, str] | None,
    managed_fields: Sequence[Mapping[str, Any]] | None,
    now: dt.datetime,
    approval: ApprovalSpec | None = None,
) -> PersonDecision | None:
    """The decision on the object, or None. Both annotations at once: the rejection stands (the safe
    side). The token hashes the key, the value and when it was set, so each decision is used once.
    `approval` is the spec's gates.approval: with distinctFrom, an approval it rules out is `refused`."""
    annotations = annotations or {}
    key = REJECT_ANNOTATION if REJECT_ANNOTATION in annotations else APPROVE_ANNOTATION
    if key not in annotations:
        return None
    value = annotations[key]
    setter = _setter(key, managed_fields or [])
    written = _written(value)
    set_at = str(setter.get("time", "")) if setter else ""
    by = written.by
    if not by:
        if setter is not None:
            manager, operation = setter.get("manager", "?"), setter.get("operation", "?")
            by = f"{manager} ({operation} at {set_at}; user not recorded)"
        else:
            by = "unknown (no managedFields entry; user not recorded)"
    approve = key == APPROVE_ANNOTATION
    creator = annotations.get(CREATED_BY_ANNOTATION, "").strip()
    token = hashlib.sha256(f"{key}\0{value}\0{set_at}".encode()).hexdigest()[:32]
    return PersonDecision(
        approve=approve,
        by=by[:512],
        reason=written.reason[:1024],
        token=token,
        at=now,
        refused=refusal(approve, written.by, creator, approval),
    )
