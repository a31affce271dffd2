"""The CarbonTrackedJob examples in README.md and docs/: every one is checked, so none can rot.

A fenced ```yaml block whose documents include `kind: CarbonTrackedJob` is an example; one that says
`# invalid:` shows a mistake on purpose and must be refused. The unit tests judge each with the pydantic
models, the integration tests with the real apiserver (a server-side dry run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
INVALID = "# invalid:"


@dataclass(frozen=True)
class DocExample:
    """One CarbonTrackedJob written in a page; `where` is `path:line` of its block."""

    where: str
    body: dict[str, Any]
    invalid: bool


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def examples(root: Path = ROOT) -> list[DocExample]:
    """Every CarbonTrackedJob in a yaml block of the README and the docs, in page order."""
    found = []
    for page in pages(root):
        text = page.read_text()
        for block in FENCE.finditer(text):
            line = text.count("\n", 0, block.start()) + 1
            where = f"{page.relative_to(root)}:{line}"
            for doc in yaml.safe_load_all(block.group(1)):
                if isinstance(doc, dict) and doc.get("kind") == "CarbonTrackedJob":
                    found.append(DocExample(where, doc, INVALID in block.group(1)))
    return found
