"""Framework integrations, each imported only when its framework is installed."""
