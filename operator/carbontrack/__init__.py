"""carbontrack: per-step GPU energy and CO2e for Kubernetes training jobs, with gated scale-up."""

__version__ = "0.1.0"
