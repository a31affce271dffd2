"""High availability and shards: which replica is active (kopf's peering rule) and the polling that
tracks it; which shard serves a job (rendezvous hashing) and the claimer that records it."""
