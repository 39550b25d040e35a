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
:mod:`.lookup` (:class:`BranchingPoints`), :mod:`.make` (what the CLI calls),
:mod:`.keys` (the keys). Names are imported lazily, so importing
``genbab.tables.keys`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ALL_KEYS",
    "FORMAT_VERSION",
    "MUL_KEY",
    "UNARY_KEYS",
    "BranchingPoints",
    "TableError",
    "default_directory",
    "load_branching_points",
    "table_key",
]

_LAZY = {
    "ALL_KEYS": "genbab.tables.keys",
    "MUL_KEY": "genbab.tables.keys",
    "UNARY_KEYS": "genbab.tables.keys",
    "table_key": "genbab.tables.keys",
    "FORMAT_VERSION": "genbab.tables.store",
    "TableError": "genbab.tables.store",
    "BranchingPoints": "genbab.tables.lookup",
    "default_directory": "genbab.tables.lookup",
    "load_branching_points": "genbab.tables.lookup",
}


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        message = f"module 'genbab.tables' has no attribute '{name}'"
        raise AttributeError(message) from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
