"""The shape of the house, held by tests: every package in the import layers and in the architecture
page, short functions and files, no issue numbers in product code, no test module importing another."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "carbontrack"
MAX_FUNCTION_LINES = 50
MAX_FILE_LINES = 400
MAX_CONTROLLER_FILE_LINES = 250


def top_level_packages() -> set[str]:
    return {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}


def product_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_package_is_in_the_layers_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers" and "containers" not in c)["layers"]
    named = {name.strip().removeprefix("carbontrack.") for layer in layers for name in layer.split("|")}
    assert top_level_packages() - named == set()


def test_the_architecture_page_has_a_row_for_every_package() -> None:
    page = (ROOT / "docs" / "development" / "architecture.md").read_text()
    rows = set(re.findall(r"^\| `(\w+)/` \|", page, flags=re.M))
    assert rows == top_level_packages()


def test_no_product_function_is_longer_than_a_screen() -> None:
    long = []
    for f in product_files():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{f.relative_to(PACKAGE)}:{node.lineno} {node.name} ({size} lines)")
    assert long == []


def test_product_files_stay_short_and_controller_files_shorter() -> None:
    def too_long(f: Path) -> bool:
        rel = f.relative_to(PACKAGE).as_posix()
        limit = MAX_CONTROLLER_FILE_LINES if rel.startswith("controller/") else MAX_FILE_LINES
        return f.read_text().count("\n") > limit

    assert [f.relative_to(PACKAGE).as_posix() for f in product_files() if too_long(f)] == []


def test_product_code_names_no_issue_numbers() -> None:
    refs = [
        f"{f.relative_to(PACKAGE)}:{i}"
        for f in product_files()
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if re.search(r"\bissue \d", line)
    ]
    assert refs == []


def test_no_test_module_imports_another() -> None:
    sideways = []
    for f in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.split(".")[-1].startswith("test_") for n in names if n.startswith("tests.")):
                sideways.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert sideways == []


def test_tests_that_start_or_disturb_a_control_plane_say_why() -> None:
    """The integration tests share one control plane per worker. A module that starts its own, or a test
    that stops or restarts a part of one, carries the `own_control_plane(why)` marker, so that a reader
    (and the next person tempted to share it) sees the reason."""
    starts = re.compile(r"ControlPlane\(|\.restart\(")
    unmarked = [
        path.name
        for path in sorted((ROOT / "tests" / "integration").glob("test_*.py"))
        if starts.search(text := path.read_text()) and "own_control_plane(" not in text
    ]
    assert unmarked == []
