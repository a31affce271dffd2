"""The rollout: the promotion state machine, one judgement round, the halt protocol, approvals."""
