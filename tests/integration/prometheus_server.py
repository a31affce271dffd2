"""A real Prometheus (Debian's package) for the scrape, dashboard, alert-rule and metric-gate tests: the
rule that skips them without it, and its HTTP query API. The `prometheus` fixture (conftest) runs one
scraping the session's operator."""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from typing import Any

import pytest

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="needs Debian's prometheus package (prometheus and promtool); .ci/run installs it",
)


def query(url: str, expr: str) -> list[dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(
            f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=5
        ) as r:
            body = json.loads(r.read())
    except OSError:
        return None
    assert body["status"] == "success", body
    return list(body["data"]["result"])
