"""benchmarks/run_all rewrites only the generated table in RESULTS.md, never the notes around it."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def run_all() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("run_all", str(ROOT / "benchmarks" / "run_all"))
    spec = importlib.util.spec_from_loader("run_all", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


ENTRY = {
    "command": "python benchmarks/client_overhead.py --calls 10",
    "machine": "a box",
    "date": "2026-11-22",
    "rows": [{"figure": "p50 (µs)", "ours": "3.1", "peer": "Zeus 25", "target": "≤ 3", "met": "no"}],
}


def test_the_table_is_replaced_between_the_markers_and_the_notes_kept() -> None:
    ra = run_all()
    text = f"# Results\nintro\n\n{ra.BEGIN}\nold table\n{ra.END}\n\n## Notes\nkept\n"
    out = ra.render({"client": ENTRY}, text)
    assert "old table" not in out
    assert out.startswith("# Results\nintro\n") and out.endswith("## Notes\nkept\n")
    cmd = "`python benchmarks/client_overhead.py --calls 10`"
    line = f"| p50 (µs) | 3.1 | Zeus 25 | ≤ 3 | no | {cmd} | a box | 2026-11-22 |"
    assert line in out
    assert ra.render({"client": ENTRY}, out) == out  # idempotent


def test_the_committed_results_render_to_the_committed_table() -> None:
    import json

    ra = run_all()
    entries = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert ra.render(entries, text) == text, (
        "RESULTS.md's table is not results.json's: run benchmarks/run_all"
    )
