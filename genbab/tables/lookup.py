"""Looking up branching points: :class:`BranchingPoints`.

For an interval ``[l, u]`` the table entry is the innermost grid interval
``[g_l, g_u]`` inside it (:meth:`genbab.tables.grid.Grid.cell`), with the stored
relative position ``t`` in ``(0, 1)``. Two ways to turn it into a point:

* ``mode="cell"`` (as in alpha-beta-CROWN): the point stored for the
  entry, ``g_l + t (g_u - g_l)``. Since ``l <= g_l < g_u <= u`` it lies strictly
  inside ``(l, u)``.
* ``mode="scaled"`` (default): the same relative position in the interval
  itself, ``l + t (u - l)``. On random intervals that are not grid intervals
  this was about 1% better than ``"cell"`` for every function
  (``benchmarks/bench_tables.py``, columns ``off t/mid`` and ``off rel/mid``);
  for ``mul`` and ``square``, whose best split is always the midpoint,
  ``"cell"`` is worse than the midpoint and ``"scaled"`` gives it exactly.

Either way the result is checked (after the cast to the bounds' dtype), and the
midpoint is used wherever the check fails, the entry is invalid (interval
outside the range, narrower than its grid cells, NaN) or no table exists.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genbab.tables.grid import Grid, pair_index
from genbab.tables.keys import MUL_KEY
from genbab.tables.store import (
    QUANT,
    StoredTable,
    TableError,
    read_manifest,
    read_table,
)

__all__ = ["MODES", "BranchingPoints", "default_directory", "load_branching_points"]

#: How a stored position becomes a point (module docs).
MODES = ("cell", "scaled")

logger = logging.getLogger(__name__)


def default_directory() -> Path:
    """The ``lookup_tables/`` folder shipped next to the ``genbab`` package.

    In a source checkout (and an editable install, which points into one) this is
    ``<repository>/lookup_tables``.
    """
    return Path(__file__).resolve().parents[2] / "lookup_tables"


def load_branching_points(
    directory: str | os.PathLike[str] | None = None, *, mode: str = "scaled"
) -> BranchingPoints:
    """Load the branching-point tables of a folder.

    Problems are logged as warnings naming the file (a missing folder or
    manifest, another format version, a missing, altered or mismatching table
    file); the functions concerned then get midpoints. Nothing is raised for
    them.

    Args:
        directory: Table folder; None for :func:`default_directory`.
        mode: ``"cell"`` or ``"scaled"`` (module docs).

    Returns:
        The usable tables.

    Raises:
        ValueError: Unknown ``mode``.
    """
    _check_mode(mode)
    folder = default_directory() if directory is None else Path(directory)
    try:
        infos = read_manifest(folder)
    except TableError as exc:
        logger.warning("no branching-point tables: %s; splitting at midpoints", exc)
        return BranchingPoints({}, mode=mode)
    tables = {}
    for key, info in infos.items():
        try:
            tables[key] = read_table(folder, info)
        except TableError as exc:
            logger.warning("table '%s' not used: %s; splitting at midpoints", key, exc)
    logger.debug("branching-point tables from %s: %s", folder, ", ".join(tables))
    return BranchingPoints(tables, mode=mode)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown lookup mode '{mode}' (known: {', '.join(MODES)})")


class _Table:
    """One loaded table: grids and positions, copied to devices on demand."""

    def __init__(self, stored: StoredTable) -> None:
        self.kind = stored.info.kind
        self.grid: Grid = stored.info.grid
        self.grid_y: Grid | None = stored.info.grid_y
        codes = torch.from_numpy(stored.codes.astype(np.int32))
        # q / 2^16 is exact in float32, which halves the memory of float64.
        self._positions = {torch.device("cpu"): codes.float() / QUANT}

    def positions(self, device: torch.device) -> Tensor:
        """Relative positions ``[entries]`` (float32, exact) on ``device``."""
        if device not in self._positions:
            cpu = self._positions[torch.device("cpu")]
            self._positions[device] = cpu.to(device)
        return self._positions[device]


class BranchingPoints:
    """Branching points from lookup tables, with midpoint fallback.

    Keys are genbab's ``Unary`` function names (``"sigmoid"``, ``"tanh"``,
    ``"sin"``, ``"cos"``, ``"gelu"``, ``"exp"``, ``"reciprocal"``, ``"sqrt"``),
    ``"square"`` for ``pow`` with exponent 2 (see
    :func:`genbab.tables.table_key`), and ``"mul"`` for products.

    Args:
        tables: Tables read by :func:`genbab.tables.store.read_table`, by key.
        mode: ``"cell"`` or ``"scaled"`` (module docs).
    """

    def __init__(self, tables: dict[str, StoredTable], mode: str = "scaled") -> None:
        _check_mode(mode)
        self.mode = mode
        self._tables = {key: _Table(stored) for key, stored in tables.items()}

    @property
    def functions(self) -> tuple[str, ...]:
        """Keys of the tables loaded."""
        return tuple(sorted(self._tables))

    def has(self, func: str) -> bool:
        """Whether a table for ``func`` is loaded."""
        return func in self._tables

    def points(self, func: str, lower: Tensor, upper: Tensor) -> Tensor:
        """Branching point of every interval ``[lower, upper]``.

        Args:
            func: Table key (see the class docs).
            lower: Lower bounds, any shape broadcastable with ``upper``.
            upper: Upper bounds.

        Returns:
            Points of the broadcast shape, dtype and device of the bounds:
            strictly inside ``(lower, upper)`` wherever ``lower < upper`` (the
            midpoint where the table has no entry or there is no table).
        """
        lower, upper = torch.broadcast_tensors(lower.detach(), upper.detach())
        mid = (lower + upper) / 2
        table = self._tables.get(func)
        if table is None or table.kind != "unary":
            return mid
        i, j, valid = table.grid.cell(lower, upper)
        t = table.positions(lower.device)[pair_index(i, j, table.grid.size)]
        return self._checked(table.grid, i, j, t, valid, lower, upper, mid)

    def mul_points(self, xl: Tensor, xu: Tensor, yl: Tensor, yu: Tensor) -> Tensor:
        """Branching point of ``x`` in ``[xl, xu]`` for the product ``x * y``.

        Args:
            xl: Lower bounds of ``x`` (the input split); all four broadcast
                together like torch tensors.
            xu: Upper bounds of ``x``.
            yl: Lower bounds of ``y`` (the other input).
            yu: Upper bounds of ``y``.

        Returns:
            Points in ``(xl, xu)`` of the broadcast shape, dtype and device of
            the bounds (the midpoint of ``x`` where there is no entry).
        """
        xl, xu, yl, yu = torch.broadcast_tensors(
            xl.detach(), xu.detach(), yl.detach(), yu.detach()
        )
        mid = (xl + xu) / 2
        table = self._tables.get(MUL_KEY)
        if table is None or table.kind != "mul" or table.grid_y is None:
            return mid
        i, j, valid_x = table.grid.cell(xl, xu)
        k, m, valid_y = table.grid_y.cell(yl, yu)
        index = pair_index(i, j, table.grid.size) * table.grid_y.pairs + pair_index(
            k, m, table.grid_y.size
        )
        t = table.positions(xl.device)[index]
        return self._checked(table.grid, i, j, t, valid_x & valid_y, xl, xu, mid)

    def _checked(
        self,
        grid: Grid,
        i: Tensor,
        j: Tensor,
        t: Tensor,
        valid: Tensor,
        lower: Tensor,
        upper: Tensor,
        mid: Tensor,
    ) -> Tensor:
        """The point in the bounds' dtype; ``mid`` unless strictly inside."""
        if self.mode == "scaled":
            lo, hi = lower.double(), upper.double()
        else:
            lo = grid.range_l + i.double() * grid.step
            hi = grid.range_l + j.double() * grid.step
        point = (lo + t * (hi - lo)).to(lower.dtype)
        ok = valid & (point > lower) & (point < upper)
        return torch.where(ok, point, mid)
