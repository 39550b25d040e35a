"""Relaxations: gelu (placeholder, filled in by its owner)."""
