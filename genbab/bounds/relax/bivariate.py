"""Relaxations: bivariate (placeholder, filled in by its owner)."""
