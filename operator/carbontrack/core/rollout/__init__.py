"""The rollout: the promotion state machine, one judgement round and its conditions, the halt
protocol, approvals."""
