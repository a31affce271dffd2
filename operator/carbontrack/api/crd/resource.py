"""The resource itself: its group, version and names, and the object that holds the spec and status."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from carbontrack.api.base import KubeModel
from carbontrack.api.crd.spec import CarbonTrackedJobSpec
from carbontrack.api.crd.status import CarbonTrackedJobStatus

GROUP = "carbontrack.io"
VERSION = "v1alpha1"
KIND = "CarbonTrackedJob"
PLURAL = "carbontrackedjobs"
SINGULAR = "carbontrackedjob"
SHORT_NAMES = ["ctj"]


class CarbonTrackedJob(KubeModel):
    """A training job whose energy and emissions are measured per step, scaled up only through gates."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_attribute_docstrings=True
    )

    api_version: Literal["carbontrack.io/v1alpha1"] = "carbontrack.io/v1alpha1"
    kind: Literal["CarbonTrackedJob"] = "CarbonTrackedJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: CarbonTrackedJobSpec
    status: CarbonTrackedJobStatus | None = None
