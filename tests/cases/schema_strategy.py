"""Hypothesis strategies from the CRD's structural schema, which `carbontrack crd` generates from the
pydantic models: every value drawn is one the apiserver's schema admits (CEL rules aside).

Written here rather than taken from hypothesis-jsonschema, whose current release does not run with
this hypothesis, and because the CRD dialect (OpenAPI 3.0 booleans for exclusive bounds, the
x-kubernetes-* markers) is small.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

TEXT = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))


def from_schema(
    schema: Mapping[str, Any], overrides: Mapping[str, st.SearchStrategy[Any]] | None = None, path: str = ""
) -> st.SearchStrategy[Any]:
    """A strategy for `schema`; `overrides` replace the strategy at a dotted path (e.g. "template")."""
    overrides = overrides or {}
    if path in overrides:
        return overrides[path]
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    if kind == "object":
        return _object(schema, overrides, path)
    if kind == "integer":
        lo = schema.get("minimum", -(2**53)) + (1 if schema.get("exclusiveMinimum") is True else 0)
        hi = schema.get("maximum", 2**53) - (1 if schema.get("exclusiveMaximum") is True else 0)
        return st.integers(lo, hi)
    if kind == "number":
        return st.floats(
            schema.get("minimum"), schema.get("maximum"),
            exclude_min=schema.get("exclusiveMinimum") is True and "minimum" in schema,
            exclude_max=schema.get("exclusiveMaximum") is True and "maximum" in schema,
            allow_nan=False, allow_infinity=False,
        )  # fmt: skip
    if kind == "string":
        alphabet = (
            TEXT if path.endswith(("metric", "zone")) else st.sampled_from(string.ascii_lowercase + "-")
        )
        return st.text(
            alphabet, min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 40)
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        items = from_schema(schema["items"], overrides, f"{path}[]")
        return st.lists(
            items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 5), 5),
            unique=schema.get("x-kubernetes-list-type") == "set",
        )  # fmt: skip
    raise ValueError(f"no strategy for {path}: {schema}")


def _object(
    schema: Mapping[str, Any], overrides: Mapping[str, st.SearchStrategy[Any]], path: str
) -> st.SearchStrategy[Any]:
    """Its required properties always, the others sometimes; a free-form object (no properties, as
    x-kubernetes-preserve-unknown-fields) is {} unless overridden."""
    props = schema.get("properties")
    if not props:
        return st.just({})

    def child(name: str) -> st.SearchStrategy[Any]:
        return from_schema(props[name], overrides, f"{path}.{name}" if path else name)

    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {n: child(n) for n in props if n in required},
        optional={n: child(n) for n in props if n not in required},
    )
