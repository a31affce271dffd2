"""Structured logs: kopf's routine per-run success lines are dropped unless debugging; nothing else is."""

from __future__ import annotations

import logging

from carbontrack.api.logs import RoutineSuccessFilter


def record(name: str, level: int, msg: str) -> logging.LogRecord:
    return logging.makeLogRecord({"name": name, "levelno": level, "levelname": "x", "msg": msg})


def test_routine_successes_are_dropped_and_everything_else_kept() -> None:
    f = RoutineSuccessFilter()
    assert not f.filter(record("kopf.objects", logging.INFO, "Timer 'promote' succeeded."))
    assert not f.filter(record("kopf.objects", logging.INFO, "Handler 'job_event' succeeded."))
    assert f.filter(record("kopf.objects", logging.INFO, "Handler 'reconcile' succeeded."))
    assert f.filter(record("kopf.objects", logging.ERROR, "Timer 'promote' failed with an exception."))
    assert f.filter(record("carbontrack.operator", logging.INFO, "Timer 'promote' succeeded."))
