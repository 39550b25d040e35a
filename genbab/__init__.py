"""genbab."""
