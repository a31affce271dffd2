"""The generated reference pages (hack/docs.py) match their sources, and name everything in them."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from carbontrack.api.crdgen import crd_manifest
from carbontrack.cli.main import build_parser
from carbontrack.state import metrics

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    """hack/docs.py is a script beside the other development tools, not a package: load it by path."""
    spec = importlib.util.spec_from_file_location("hack_docs", ROOT / "hack" / "docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docs = _load_generator()


def test_reference_pages_are_what_the_sources_give() -> None:
    assert docs.stale_pages() == [], "run `make docs` (python hack/docs.py) and commit the pages"


def test_the_check_names_a_page_that_drifted(tmp_path: Path) -> None:
    for page in docs.PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, tmp_path / page)
    assert docs.stale_pages(tmp_path) == []
    stale = tmp_path / "docs" / "reference" / "cli.md"
    stale.write_text(stale.read_text().replace("--reason", "--why"))
    (tmp_path / "docs" / "reference" / "metrics.md").unlink()
    assert docs.stale_pages(tmp_path) == ["docs/reference/cli.md", "docs/reference/metrics.md"]


def _schema_paths(node: dict[str, Any], path: str) -> Iterator[str]:
    yield path
    if path == "spec.template":
        return
    if "items" in node:
        yield from _schema_paths(node["items"], f"{path}[]")
    for name, child in (node.get("properties") or {}).items():
        yield from _schema_paths(child, f"{path}.{name}")


def test_crd_page_has_every_field() -> None:
    page = docs.crd_page()
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    paths = [p for part in ("spec", "status") for p in _schema_paths(schema["properties"][part], part)]
    assert len(paths) > 250
    assert [p for p in paths if f"| `{p}` |" not in page] == []
    assert "| `spec.canary.minSteps` | integer | `200` | 1 ≤ x |" in page


def test_cli_page_has_every_command_and_flag() -> None:
    page = docs.cli_page()
    commands = {"crd", "sidecar", "operator", "gates check", "approve", "reject", "report"}
    assert all(f"## carbontrack {c}\n" in page for c in commands)

    def options(parser: argparse.ArgumentParser) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from options(sub)
            elif not isinstance(action, argparse._HelpAction):
                yield from action.option_strings

    assert [o for o in options(build_parser()) if f"`{o}`" not in page] == []


def test_metrics_page_has_every_metric_with_type_and_labels() -> None:
    page = docs.metrics_page()
    families = [*metrics.REGISTRY.collect(), *metrics.JobCollector(lambda: ()).collect()]
    assert len(families) >= 15
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` | {family.type} |" in page, name
    assert "| `carbontrack_gate_passed` | gauge | `namespace`, `job_name`, `gate` |" in page
    assert "| `carbontrack_telemetry_rejected_total` | counter | `reason` |" in page


def test_values_page_has_every_chart_value() -> None:
    page = docs.values_page()
    schema = json.loads((ROOT / "helm" / "carbontrack" / "values.schema.json").read_text())
    paths = [p for name, node in schema["properties"].items() for p in _schema_paths(node, name)]
    assert [p for p in paths if f"| `{p}` |" not in page] == []
    assert "| `operator.statusBudgetBytes` | integer | `524288` | 65536 ≤ x ≤ 1048576 |" in page


def test_value_comments_follow_helm_docs_convention() -> None:
    text = "# -- top\nimage:\n  # -- the tag,\n  # continued\n  tag: x\n  plain: y\n# not a doc\nport: 1\n"
    assert docs.value_comments(text) == {"image": "top", "image.tag": "the tag, continued"}
