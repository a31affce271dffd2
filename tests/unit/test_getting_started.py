"""The getting-started page shows what the end-to-end tests run on kind: the same install, the same
restricted namespace, the same first CarbonTrackedJob and trainer. If one changes, this fails until the
other follows, so the page a new user copies from is the one a real cluster proves."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.e2e.cluster import OPERATOR_NS, RELEASE, RESTRICTED, first_job

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "getting-started.md").read_text()
IMAGE = "ghcr.io/carbontrack/carbontrack:0.1.0"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", PAGE, flags=re.S | re.M)


def test_the_install_is_the_e2e_tests_install() -> None:
    shell = "\n".join(blocks("sh"))
    assert f"helm upgrade --install {RELEASE} helm/carbontrack --namespace {OPERATOR_NS} --wait" in shell
    enforce = "pod-security.kubernetes.io/enforce"
    assert f"kubectl label namespace {OPERATOR_NS} {enforce}={RESTRICTED[enforce]}" in shell


def test_the_first_job_is_the_e2e_tests_job() -> None:
    first = next(yaml.safe_load(b) for b in blocks("yaml") if "kind: CarbonTrackedJob" in b)
    assert first["spec"] == first_job(first["metadata"]["name"], IMAGE)["spec"]


def test_the_trainer_the_page_mounts_is_the_e2e_tests_trainer() -> None:
    assert "--from-file=tests/e2e/trainer.py" in "\n".join(blocks("sh"))
    assert (ROOT / "tests" / "e2e" / "trainer.py").exists()
