"""Shared base for every model that crosses a boundary (Kubernetes objects, the wire protocol).

Kubernetes speaks camelCase; Python speaks snake_case. The alias generator keeps both honest:
code uses attribute names, serialisation uses the API's names, and parsing accepts either.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class KubeModel(BaseModel):
    """A model serialised with Kubernetes-style camelCase names; unknown fields are rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_api(self) -> dict[str, object]:
        """The object as the apiserver expects it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
