"""The grid of a table and the innermost-cell lookup rule.

A grid has ``n`` sample points ``x_i = range_l + i * step`` (``i = 0 .. n - 1``,
the last one ``<= range_u``). A one-input table has one entry per pair
``i < j``: the interval ``[x_i, x_j]``. Entries are stored packed, row by row
(the order of ``torch.triu_indices(n, n, 1)``): the pair ``(i, j)`` is at
``i * (2 n - i - 1) / 2 + (j - i - 1)``.

Lookup of an interval ``[l, u]`` uses the innermost grid interval contained in
it: ``i = ceil((l - range_l) / step)``, ``j = floor((u - range_l) / step)``,
valid only where ``i < j``, ``range_l <= l`` and ``u <= range_u`` (ends within
:data:`SNAP` steps of a grid point count as on it, against rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SNAP", "Grid", "pair_count", "pair_index"]

#: Ends this close to a grid point (in steps) are taken as on it.
SNAP = 1e-6

# Slack when counting grid points, so that a range that is a whole number of
# steps (10 / 0.01) is not cut short by the rounding of the division.
_COUNT_SLACK = 1e-6


@dataclass(frozen=True)
class Grid:
    """Sample points of one table axis.

    Attributes:
        range_l: First sample point.
        range_u: Upper end of the range (the last sample is at most this).
        step: Distance between sample points.
    """

    range_l: float
    range_u: float
    step: float

    def __post_init__(self) -> None:
        values = (self.range_l, self.range_u, self.step)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"grid bounds and step must be finite, got {values}")
        if self.step <= 0:
            raise ValueError(f"grid step must be positive, got {self.step}")
        if self.range_u - self.range_l < self.step:
            raise ValueError(
                f"grid range [{self.range_l}, {self.range_u}] is shorter than one"
                f" step ({self.step})"
            )

    @property
    def size(self) -> int:
        """Number of sample points ``n``."""
        span = (self.range_u - self.range_l) / self.step
        return math.floor(span + _COUNT_SLACK) + 1

    @property
    def pairs(self) -> int:
        """Number of intervals ``[x_i, x_j]`` with ``i < j``."""
        return pair_count(self.size)

    def points(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The sample points ``[n]``."""
        i = torch.arange(self.size, dtype=torch.float64)
        return (self.range_l + i * self.step).to(dtype)

    def cell(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Innermost grid interval inside each ``[lower, upper]``.

        Args:
            lower: Lower ends, any shape (converted to float64).
            upper: Upper ends, same shape.

        Returns:
            ``(i, j, valid)``: long indices clamped into ``[0, n - 1]`` and a bool
            tensor, true where ``i < j`` and the interval lies inside the range
            (NaN bounds are never valid).
        """
        lo, hi = lower.double(), upper.double()
        n = self.size
        # An end within SNAP index units of a grid point counts as on it, so that
        # an interval whose ends are grid points (up to rounding) finds its own
        # entry. The cell may then start (end) a hair outside [l, u], but a
        # stored point is at least a 1/65536 of the cell inside it.
        fi = torch.ceil((lo - self.range_l) / self.step - SNAP)
        fj = torch.floor((hi - self.range_l) / self.step + SNAP)
        valid = (
            (lo >= self.range_l - SNAP * self.step)
            & (hi <= self.range_u + SNAP * self.step)
            & (fi >= 0) & (fj <= n - 1) & (fi < fj)
        )  # fmt: skip
        i = torch.where(valid, fi, 0.0).long().clamp(0, n - 1)
        j = torch.where(valid, fj, 1.0).long().clamp(0, n - 1)
        return i, j, valid


def pair_count(n: int) -> int:
    """Number of pairs ``i < j`` of ``n`` points."""
    return n * (n - 1) // 2


def pair_index(i: Tensor, j: Tensor, n: int) -> Tensor:
    """Packed index of the pairs ``(i, j)``, ``i < j < n`` (module docs)."""
    return i * (2 * n - i - 1) // 2 + (j - i - 1)
