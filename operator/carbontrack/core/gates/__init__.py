"""Gate judgement: threshold profiles, metric gates, privacy accounting, evidence from CI reports."""
