"""A person's approve/reject annotation, read into a decision the promotion step can act on (pure).

Who decided: the apiserver does not put the requesting user on the object; managedFields name only
the field manager (`kubectl-annotate`, `carbontrack`), the operation and the time. So
`carbontrack approve|reject` asks the apiserver who the caller is (a SelfSubjectReview) and writes
`{"by": USER, "reason": ...}` as the annotation's value; a bare `kubectl annotate ... ="reason"` is
recorded as its field manager, with "user not recorded". The value is what the writer claims: who may
write it at all is the RBAC verb `patch` on carbontrackedjobs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from carbontrack.api.contract import APPROVE_ANNOTATION, REJECT_ANNOTATION
from carbontrack.core.rollout.promotion import PersonDecision


def annotation_value(by: str, reason: str) -> str:
    """What `carbontrack approve|reject` writes."""
    return json.dumps({"by": by, "reason": reason}, separators=(",", ":"))


def _setter(key: str, managed_fields: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The managedFields entry that owns the annotation (the last one, if several claim it)."""
    found = None
    for entry in managed_fields:
        fields = entry.get("fieldsV1") or {}
        annotations = (fields.get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{key}" in annotations:
            found = entry
    return found


def person_decision(
    annotations: Mapping[str, str] | None,
    managed_fields: Sequence[Mapping[str, Any]] | None,
    now: dt.datetime,
) -> PersonDecision | None:
    """The decision on the object, or None. Both annotations at once: the rejection stands (the safe
    side). The token hashes the key, the value and when it was set, so each decision is used once."""
    annotations = annotations or {}
    key = REJECT_ANNOTATION if REJECT_ANNOTATION in annotations else APPROVE_ANNOTATION
    if key not in annotations:
        return None
    value = annotations[key]
    setter = _setter(key, managed_fields or [])
    by, reason = "", value.strip()
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        by = str(doc.get("by") or "").strip()
        reason = str(doc.get("reason") or "").strip()
    set_at = str(setter.get("time", "")) if setter else ""
    if not by:
        if setter is not None:
            manager, operation = setter.get("manager", "?"), setter.get("operation", "?")
            by = f"{manager} ({operation} at {set_at}; user not recorded)"
        else:
            by = "unknown (no managedFields entry; user not recorded)"
    token = hashlib.sha256(f"{key}\0{value}\0{set_at}".encode()).hexdigest()[:32]
    return PersonDecision(
        approve=key == APPROVE_ANNOTATION, by=by[:512], reason=reason[:1024], token=token, at=now
    )
