"""Kueue: the Workload client and the handlers that answer its admission checks."""
