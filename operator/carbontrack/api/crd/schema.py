"""What every model of the resource shares: the contexts a job runs in, schema defaults spelled out in
full, CEL rules carried into the generated schema, and durations (`90m`, `1h30m`) bounded alike by the
CRD and the models."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

from carbontrack.api.base import KubeModel

Context = Literal["development", "staging", "production"]
CONTEXTS: tuple[Context, ...] = ("development", "staging", "production")
JsonDict = dict[str, JsonValue]
StagePercent = Annotated[int, Field(ge=1, le=100)]


def default_of(model: type[KubeModel]) -> JsonDict:
    """Schema default for an omitted sub-object: the model's own defaults, spelled out in full.

    The apiserver checks a default against the CEL rules without applying nested defaults first, so
    `default: {}` would not do; spelling it out keeps one source of truth (the model).
    """
    return {"default": model().model_dump(by_alias=True, exclude_none=True, mode="json")}


def with_rules(*rules: JsonDict) -> ConfigDict:
    """Model config carrying CEL rules into the generated schema as x-kubernetes-validations."""
    validations: list[JsonValue] = [*rules]
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={"x-kubernetes-validations": validations},
    )


_DURATION = r"^([0-9]+(s|m|h))+$"
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
MAX_DURATION = "8760h"
"""The longest duration a spec may give: a year, beyond any forecast and well inside what a datetime
(the deadline computed from it) and the apiserver's CEL duration (int64 nanoseconds) can hold."""
MAX_DURATION_S = 8760 * 3600
# Numbers no longer than MAX_DURATION's in each unit (8760h, 525600m, 31536000s): a longer one is above it,
# and within the fields' 32 characters no such sum overflows CEL's duration(), so the rule never errors.
_DURATION_DIGITS = "^([0-9]{1,8}s|[0-9]{1,6}m|[0-9]{1,4}h)+$"
_TOO_LONG = f"must be at most {MAX_DURATION} (365 days)"


def duration_s(text: str) -> float:
    """`90m`, `1h30m`, `24h` -> seconds (the pattern of a duration field admits only these)."""
    total, number = 0, ""
    for ch in text:
        if ch.isdigit():
            number += ch
        else:
            total += int(number) * _UNIT_S[ch]
            number = ""
    return float(total)


def _at_most_max_duration(text: str) -> str:
    if not re.fullmatch(_DURATION_DIGITS, text) or duration_s(text) > MAX_DURATION_S:
        raise ValueError(_TOO_LONG)
    return text


_AT_MOST_MAX_DURATION: JsonDict = {
    "rule": f"self.matches('{_DURATION_DIGITS}') && duration(self) <= duration('{MAX_DURATION}')",
    "message": _TOO_LONG,
    "reason": "FieldValueInvalid",
}
Duration = Annotated[
    str,
    Field(
        pattern=_DURATION,
        max_length=32,
        json_schema_extra={"x-kubernetes-validations": [_AT_MOST_MAX_DURATION]},
    ),
    AfterValidator(_at_most_max_duration),
]
"""A duration such as 90m, 1h30m or 24h, at most MAX_DURATION (the CRD and the models refuse alike)."""
