"""The pod template's schema (Kubernetes' own PodTemplateSpec, vendored) and the operator's check of it.

The CRD carries the schema (api/crdgen.py inserts it), so the apiserver refuses an unknown field or a
wrong type before the operator sees the object; the same schema checks a template in the pydantic
model, so the operator and the CLI refuse what the apiserver refuses (one table of malformed
objects, tests/cases/crs.py, tests both). The check is only as strict as the apiserver's schema
(unknown fields, JSON types, required fields; formats and patterns are the apiserver's and the Job's).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def pod_template_schema() -> dict[str, Any]:
    """The structural PodTemplateSpec schema vendored by api/make_podtemplate.py."""
    text = resources.files("carbontrack.api").joinpath("podtemplatespec.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def _has_type(kind: str | None, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def schema_problems(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """What the apiserver's schema validation would refuse in `value`, each naming its field path."""
    if value is None or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{path}: must be an integer or a string"]
    kind = schema.get("type")
    if not _has_type(kind, value):
        return [f"{path}: must be of type {kind}"]
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if props is not None and key in props:
                found += schema_problems(sub, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += schema_problems(sub, extra, f"{path}.{key}")
            elif props is not None:
                found.append(f'unknown field "{path}.{key}"')
        found += [f"{path}.{r}: Required value" for r in schema.get("required", ()) if value.get(r) is None]
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += schema_problems(item, schema["items"], f"{path}[{i}]")
    return found


def check_template(template: dict[str, Any]) -> None:
    """ValueError naming the first fields the apiserver would refuse, as `spec.template....`."""
    found = schema_problems(template, pod_template_schema(), "spec.template")
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise ValueError("; ".join(found[:3]) + more)
