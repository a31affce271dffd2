"""core/ is pure logic: it imports no I/O library, so it can be read and tested on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import carbontrack.core

FORBIDDEN = {
    "kopf",
    "kubernetes",
    "kubernetes_asyncio",
    "aiohttp",
    "pynvml",
    "prometheus_client",
    "socket",
    "urllib",
    "http",
    "requests",
    "subprocess",
}


def test_core_imports_no_io_library() -> None:
    core = Path(carbontrack.core.__file__).parent
    for path in core.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
