"""Every alert links to a runbook page that exists in the docs and in the site's nav."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = yaml.safe_load((ROOT / "helm" / "carbontrack" / "files" / "alerts.rules.yaml").read_text())
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
SITE = yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def nav_pages(node: Any) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, list):
        return {p for item in node for p in nav_pages(item)}
    if isinstance(node, dict):
        return {p for value in node.values() for p in nav_pages(value)}
    return set()


def page_of(url: str) -> str:
    """The docs page a site URL serves (MkDocs' directory URLs: a/b/ is a/b.md or a/b/index.md)."""
    site_url: str = SITE["site_url"]
    assert url.startswith(site_url), f"{url} is not under the site's address {site_url}"
    path = url.removeprefix(site_url).split("#")[0].strip("/")
    for candidate in (f"{path}.md", f"{path}/index.md"):
        if (ROOT / "docs" / candidate).exists():
            return candidate
    raise AssertionError(f"{url}: no page docs/{path}.md or docs/{path}/index.md")


def test_the_rule_file_has_alerts() -> None:
    assert len(ALERTS) >= 7


@pytest.mark.parametrize("rule", ALERTS, ids=lambda r: r["alert"])
def test_alert_has_a_runbook_page_in_the_nav(rule: dict[str, Any]) -> None:
    url = rule.get("annotations", {}).get("runbook_url")
    assert url, f"{rule['alert']} has no annotations.runbook_url"
    page = page_of(url)
    assert page.startswith("operations/runbooks/")
    assert page in nav_pages(SITE["nav"]), f"{page} is not in mkdocs.yml's nav"
    text = (ROOT / "docs" / page).read_text()
    assert text.startswith(f"# {rule['alert']}\n")
    for section in ("## What it means", "## How to confirm", "## What to do"):
        assert section in text, f"{page} lacks {section!r}"
