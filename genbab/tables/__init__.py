"""Pre-optimized branching points: lookup tables that genbab generates itself.

When branch-and-bound splits the input ``x`` of a nonlinearity at ``p``, the
children ``[l, p]`` and ``[p, u]`` are relaxed afresh. The tables hold, for a
grid of intervals, the ``p`` minimising the area between the upper and lower
default relaxations of both children (the volume, for ``x * y``); the verifier
looks the point up for each neuron and falls back to the midpoint outside the
grid::

    from genbab.tables import load_branching_points, table_key

    points = load_branching_points()          # the shipped lookup_tables/
    p = points.points("sigmoid", lower, upper)  # strictly inside (lower, upper)
    q = points.mul_points(xl, xu, yl, yu)       # split x of x * y

Keys are the ``Unary`` op names (``node.op.func``) and ``"square"`` for ``pow``
with exponent 2 (:func:`table_key` maps an op to its key), plus ``"mul"``.
``genbab tables build`` (re)generates the tables and ``genbab tables show``
lists them. Modules: :mod:`.objective` (the loss), :mod:`.search` and
:mod:`.cells` (the vectorised search), :mod:`.build` (building one table),
:mod:`.grid` (grid and lookup rule), :mod:`.store` (file format),
:mod:`.lookup` (:class:`BranchingPoints`), :mod:`.make` (what the CLI calls).
"""

from __future__ import annotations

from genbab.tables.lookup import (
    BranchingPoints,
    default_directory,
    load_branching_points,
)
from genbab.tables.objective import MUL_KEY, UNARY_KEYS, table_key
from genbab.tables.store import FORMAT_VERSION, TableError

__all__ = [
    "FORMAT_VERSION",
    "MUL_KEY",
    "UNARY_KEYS",
    "BranchingPoints",
    "TableError",
    "default_directory",
    "load_branching_points",
    "table_key",
]
