"""Pure logic: attribution, emissions, gates, privacy, promotion. No I/O imports here (a test checks)."""
