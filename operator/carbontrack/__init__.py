"""carbontrack: per-step GPU energy and CO2e for Kubernetes training jobs, with gated scale-up."""

from carbontrack import _moved

__version__ = "0.1.0"

_moved.install()
