"""The job state ingestion and judgement share: registry, typed status boundary, status writer, config."""
