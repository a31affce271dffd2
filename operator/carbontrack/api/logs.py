"""Structured logs: one JSON object per line, with every `extra=` field kept, for Loki and friends."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

# kopf attaches its whole settings object and internal flags to every record: noise in a log line.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "settings", "k8s_skip"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


ROUTINE = ("Timer 'promote' succeeded.", "Handler 'job_event' succeeded.")
"""kopf's per-run success lines for the handlers that run all the time: with 1000 jobs, 100 lines a
second that say nothing (and cost the event loop). Kept at DEBUG; failures are always logged."""


class RoutineSuccessFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        routine = record.levelno == logging.INFO and record.msg in ROUTINE
        return not (record.name == "kopf.objects" and routine)


def setup_logging(level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    chosen = (level or os.environ.get("CARBONTRACK_LOG_LEVEL", "INFO")).upper()
    if chosen != "DEBUG":
        handler.addFilter(RoutineSuccessFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
