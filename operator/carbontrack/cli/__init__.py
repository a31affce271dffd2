"""Every `carbontrack` command: the operator, the sidecar, gates, decisions, reports and the CRD."""

from carbontrack.cli.main import main

__all__ = ["main"]
