"""Relaxations: trig (placeholder, filled in by its owner)."""
