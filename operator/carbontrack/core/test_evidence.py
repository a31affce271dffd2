"""Test and security-scan evidence as one typed value, from the JSON object CI writes.

The same object arrives two ways: the `results.json` of the ConfigMap named by
spec.gates.tests.fromConfigMap (read by the operator), and the files given to `carbontrack gates
check` (read by the CLI). Both convert it here, so the two judge the same evidence the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carbontrack.core.gates import TestResults


def tests_from(doc: Mapping[str, Any]) -> TestResults:
    """A results.json (CI output or the ConfigMap) as TestResults.

    Security counts are read from a nested `security` object when there is one, else from the top
    level (`{"passRate": 0.99, "critical": 0}` and `{"security": {"critical": 0}}` mean the same).
    """
    sec = doc.get("security") or doc
    return TestResults(
        pass_rate=doc.get("passRate"), coverage=doc.get("coverage"),
        critical=sec.get("critical"), high=sec.get("high"), medium=sec.get("medium"),
    )  # fmt: skip
