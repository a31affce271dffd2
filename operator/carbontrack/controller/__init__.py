"""The operator: kopf handlers, Job building and sidecar injection, telemetry ingestion, status, metrics."""
