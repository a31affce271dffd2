"""Reports of a finished or running job: table, JSON, CSV and model-card formats."""
