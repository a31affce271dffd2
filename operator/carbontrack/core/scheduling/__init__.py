"""When a job runs: carbon-aware deferral planning and the Kueue admission policy."""
