"""Foreign APIs the operator talks to, one module or package each: Kueue, Prometheus."""
