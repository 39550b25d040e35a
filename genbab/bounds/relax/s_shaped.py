"""Relaxations: s_shaped (placeholder, filled in by its owner)."""
