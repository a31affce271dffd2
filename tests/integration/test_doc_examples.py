"""Every CarbonTrackedJob example in the README and the docs, sent to the real apiserver (a server-side
dry run against the CRD): the valid ones are accepted, the ones marked `# invalid:` refused."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING

import pytest

from tests.cases.doc_examples import DocExample, examples

if TYPE_CHECKING:  # the fixture's type only
    from hack.controlplane import ControlPlane


@pytest.mark.parametrize("example", examples(), ids=lambda e: e.where)
def test_example_passes_a_server_dry_run_as_it_is_marked(
    crd_installed: ControlPlane, namespace: str, example: DocExample
) -> None:
    body = copy.deepcopy(example.body)
    body["metadata"]["namespace"] = namespace  # each test in its own namespace
    result = crd_installed.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(body), check=False
    )
    if example.invalid:
        assert result.returncode != 0, f"{example.where} is marked invalid, but the apiserver accepted it"
        assert "is invalid" in result.stderr or "BadRequest" in result.stderr, result.stderr
    else:
        assert result.returncode == 0, f"{example.where}: {result.stderr}"
