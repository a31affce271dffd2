"""The README is a short front door, and the site's nav has the four parts a reader looks for."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SITE = yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_readme_is_short_with_the_install_near_the_top() -> None:
    lines = README.splitlines()
    assert len(lines) <= 200
    headings = [(i, line) for i, line in enumerate(lines, 1) if line.startswith("## ")]
    install = next(i for i, line in headings if line.startswith("## Install"))
    assert install <= 60
    order = ["## Install", "## A first CarbonTrackedJob", "## Instrument", "## Contribute", "## Read on"]
    found = [next(i for i, line in headings if line.startswith(title)) for title in order]
    assert found == sorted(found), "what, install, first job, instrument, contribute, read on"


def test_readme_links_to_pages_that_exist() -> None:
    targets = re.findall(r"\]\(((?!https?://)[^)#]+)(?:#[^)]*)?\)", README)
    assert targets
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_readme_names_the_moved_trainer_imports() -> None:
    assert "from carbontrack.trainer import client" in README
    assert "from carbontrack.trainer.huggingface import CarbonTrackCallback" in README
    assert "from carbontrack import client" not in README


def test_nav_has_the_four_parts() -> None:
    parts = [next(iter(entry)) for entry in SITE["nav"] if isinstance(entry, dict)]
    assert parts[1:5] == ["Getting started", "User guide", "Operations", "Development"]
