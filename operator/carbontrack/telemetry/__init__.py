"""The HTTPS ingestion path: server, pod-token authentication, TLS, pod facts, process tuning."""
