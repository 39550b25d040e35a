"""Relaxations: convex (placeholder, filled in by its owner)."""
