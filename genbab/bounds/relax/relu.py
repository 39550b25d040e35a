"""Relaxations: relu (placeholder, filled in by its owner)."""
