"""Gate judgement: threshold profiles, metric gates, privacy accounting, evidence read from CI reports."""
