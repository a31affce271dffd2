"""telemetry.eventloop: asyncio's standard loop by default, uvloop where installed and asked for."""

from __future__ import annotations

import sys

import pytest

from carbontrack.state.config import OperatorConfig
from carbontrack.telemetry import eventloop


def test_the_operator_runs_on_the_standard_loop_by_default() -> None:
    assert OperatorConfig.from_env({}).event_loop == "asyncio"
    with eventloop.runner(OperatorConfig.from_env({}).event_loop) as runner:
        assert eventloop.loop_name(runner.get_loop()) == "asyncio"


def test_uvloop_on_request() -> None:
    cfg = OperatorConfig.from_env({"CARBONTRACK_EVENT_LOOP": "uvloop"})
    with eventloop.runner(cfg.event_loop) as runner:
        assert eventloop.loop_name(runner.get_loop()) == "uvloop"


def test_without_uvloop_the_standard_loop_and_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    with eventloop.runner("uvloop") as runner:
        assert eventloop.loop_name(runner.get_loop()) == "asyncio"
    assert "uvloop is not installed" in caplog.text
