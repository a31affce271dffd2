"""High availability: which replica is active (kopf's peering rule) and the polling that tracks it."""
