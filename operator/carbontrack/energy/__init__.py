"""Energy measurement backends behind one small interface."""
