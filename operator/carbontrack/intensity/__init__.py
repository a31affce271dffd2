"""Grid carbon intensity: an embedded static table, and live providers that fall back to it."""
