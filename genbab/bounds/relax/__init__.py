"""Linear relaxations of nonlinear functions, one module per operator family.

Each relaxation is a pure function of the input interval (and of optional
optimizable parameters) that returns a value; see :mod:`.base`. The registry
:data:`UNARY_FAMILIES` maps the names used by :class:`genbab.model.ops.Unary` to
their :class:`~.base.UnaryFamily`.
"""

from __future__ import annotations

from genbab.bounds.relax.base import (
    PlaneRelaxation,
    Relaxation,
    UnaryFamily,
)

UNARY_FAMILIES: dict[str, UnaryFamily] = {}


def register(family: UnaryFamily) -> UnaryFamily:
    """Add ``family`` to :data:`UNARY_FAMILIES` under its name."""
    UNARY_FAMILIES[family.name] = family
    return family


__all__ = ["PlaneRelaxation", "Relaxation", "UnaryFamily", "UNARY_FAMILIES", "register"]

# The family modules register themselves on import.
from genbab.bounds.relax import (  # noqa: E402, F401
    bivariate,
    convex,
    gelu,
    relu,
    s_shaped,
    trig,
)
