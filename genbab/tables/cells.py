"""The scan of a one-input table over grid-cell candidates, and its shortcuts.

For the entry ``[x_i, x_j]`` the candidates lie in its cells ``[x_k, x_{k+1}]``
(``i <= k < j``), at fixed offsets inside each cell. The loss of a candidate
``c`` is ``area(x_i, c) + area(c, x_j)``, and both areas are tabulated once for
all pairs, so scanning every cell of every entry (``n^3 / 6`` candidates per
offset) costs a few batched relaxations plus additions. The tables are laid out
so that the candidates of all entries of one width ``d`` are rectangular
slices: ``left[i, s] = area(x_i, c_{i+s})`` and ``right[j, n - r] =
area(c_{j-r}, x_j)``.

Candidates per cell (:func:`cell_offsets`):

* sin, cos and GeLU: 4 evenly spaced. Their default relaxations pick lines
  among discrete candidates, so the loss has kinks, and local minima can lie
  about a cell apart; one candidate per cell was seen to miss the deeper one.
* sigmoid and tanh: the centre and points :data:`EDGE` of a cell inside both
  ends. Their relaxations read tangent points from a table with step 0.01 and
  jump where an interval end crosses a multiple of 0.01, so with a grid on
  those multiples the loss is smooth inside each cell and its minimum is often
  just inside a cell end. (Only when the grid is aligned with the 0.01 lattice;
  otherwise 4 evenly spaced candidates are used.)
* the convex or concave functions (exp, reciprocal, sqrt, square): the centre.

Mirror symmetry (:data:`MIRRORED`). Let ``f`` satisfy ``f(-x) = a + b x + c
f(x)`` with ``c = +-1`` (sin, tanh: ``c = -1``; sigmoid: ``a = 1, c = -1``;
cos, square: ``c = 1``; GeLU: ``x Phi(x)`` gives ``f(-x) = f(x) - x``). If
``L <= f <= U`` on ``[l, u]``, then on ``[-u, -l]`` the lines ``x -> a - b x +
c L(-x)`` and ``x -> a - b x + c U(-x)`` bound ``f`` (in the order given by the
sign of ``c``), with the same gap ``|U(-x) - L(-x)|``, so the same area. The
default relaxations of these functions are built from mirror-symmetric rules
(chords, tangents at mirrored points, tangent tables on a symmetric lattice,
the same candidate slopes for both lines), so genbab's relaxation of ``[-u,
-l]`` *is* that mirrored pair, and ``area(-u, -l) = area(l, u)`` (up to
rounding). Hence ``loss(-u, -p, -l) = area(-u, -p) + area(-p, -l) = area(p, u)
+ area(l, p) = loss(l, p, u)``: on a grid symmetric about 0 the best position
of the entry ``(n-1-j, n-1-i)`` is ``1 - t`` for the best ``t`` of ``(i, j)``,
and only the entries with ``i + j <= n - 1`` are searched. The tests check the
area symmetry directly and the mirrored half of every table against brute
force.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from genbab.bounds.relax import s_shaped
from genbab.tables.grid import Grid
from genbab.tables.search import Bracket

__all__ = [
    "EDGE",
    "MIRRORED",
    "canonical_pairs",
    "cell_offsets",
    "grid_scan",
    "mirror_index",
    "symmetric",
]

#: Edge candidates sit this share of a grid cell inside the cell.
EDGE = 1e-3

#: Functions whose default relaxation jumps where an interval end crosses a
#: multiple of this step (the tangent-point tables of ``s_shaped``).
JUMP_STEP = {"sigmoid": s_shaped.TABLE_STEP, "tanh": s_shaped.TABLE_STEP}

#: Functions whose area is mirror symmetric (module docs).
MIRRORED = frozenset({"sigmoid", "tanh", "sin", "cos", "gelu", "square"})

_KINKED = frozenset({"sin", "cos", "gelu"})
_EVEN4 = (0.125, 0.375, 0.625, 0.875)
_INF = float("inf")

Area = Callable[[Tensor, Tensor], Tensor]


def cell_offsets(key: str, grid: Grid) -> tuple[float, ...]:
    """Candidate offsets inside a grid cell, increasing and mirror-closed."""
    if key in JUMP_STEP:
        return (EDGE, 0.5, 1 - EDGE) if jumps_aligned(key, grid) else _EVEN4
    return _EVEN4 if key in _KINKED else (0.5,)


def jumps_aligned(key: str, grid: Grid) -> bool:
    """Whether the grid points are multiples of ``key``'s jump step."""
    jump = JUMP_STEP.get(key)
    if jump is None:
        return False

    def whole(v: float) -> bool:
        return abs(v / jump - round(v / jump)) < 1e-6

    return whole(grid.range_l) and whole(grid.step)


def symmetric(key: str, grid: Grid) -> bool:
    """Whether the mirror shortcut applies: ``key`` in :data:`MIRRORED` and the
    grid symmetric about 0 (``x_{n-1-i} = -x_i``)."""
    last = grid.range_l + (grid.size - 1) * grid.step
    tol = 1e-9 * grid.step
    return key in MIRRORED and abs(grid.range_l + last) < tol


def canonical_pairs(n: int, mirrored: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Pairs ``(i, j)``, ``i < j``, to search, and their packed indices.

    All pairs, or with ``mirrored`` those with ``i + j <= n - 1``.
    """
    i, j = torch.triu_indices(n, n, 1)
    packed = torch.arange(i.numel())
    if mirrored:
        keep = i + j <= n - 1
        i, j, packed = i[keep], j[keep], packed[keep]
    return i, j, packed


def mirror_index(n: int) -> Tensor:
    """Packed index of the mirror ``(n-1-j, n-1-i)`` of every packed pair."""
    i, j = torch.triu_indices(n, n, 1)
    mi, mj = n - 1 - j, n - 1 - i
    return mi * (2 * n - mi - 1) // 2 + (mj - mi - 1)


def grid_scan(
    area: Area,
    ends: tuple[Tensor, Tensor, Tensor],
    offsets: tuple[float, ...],
    mirrored: bool,
    full: Tensor,
    report: Callable[[float], None],
) -> Bracket:
    """Bracket the best cell candidate of every searched entry.

    Args:
        area: ``area(a, b)`` of the default relaxation, elementwise (float64).
        ends: ``(x, x_lo, x_hi)``, each ``[n]``: the grid points, and the points
            used as lower and as upper ends of the relaxed intervals (the grid
            points moved out a little for functions that jump at them, see
            :mod:`.build`).
        offsets: Candidate offsets inside each cell (:func:`cell_offsets`).
        mirrored: Search only ``i + j <= n - 1`` (:func:`symmetric` must hold);
            the right-hand areas are then mirrored left-hand ones.
        full: ``[pairs]`` areas of all entries, packed.
        report: Progress callback, fractions in ``[0, 1]`` of this scan.

    Returns:
        Brackets of the entries of :func:`canonical_pairs`, in that order.
    """
    n = ends[0].numel()
    lefts, rights = _area_tables(area, ends, offsets, mirrored, report)
    _, _, cpacked = canonical_pairs(n, mirrored)
    slot = torch.full((n * (n - 1) // 2,), -1, dtype=torch.long)
    slot[cpacked] = torch.arange(cpacked.numel())
    fields = _empty_fields(cpacked.numel(), full.dtype)
    for d in range(1, n):
        rows = n - d if not mirrored else (n - 1 - d) // 2 + 1
        i = torch.arange(rows)
        at = slot[i * (2 * n - i - 1) // 2 + (d - 1)]  # (i, i + d) in the output
        vals = [
            le[:rows, :d] + ri[d : d + rows, n - d :]
            for le, ri in zip(lefts, rights, strict=True)
        ]
        found = _bracket_cells(vals, offsets, full[cpacked[at]], d)
        for name, field in fields.items():
            field[at] = getattr(found, name)
    report(1.0)
    return Bracket(**fields)


def _area_tables(
    area: Area,
    ends: tuple[Tensor, Tensor, Tensor],
    offsets: tuple[float, ...],
    mirrored: bool,
    report: Callable[[float], None],
) -> tuple[list[Tensor], list[Tensor]]:
    """The ``left`` and ``right`` area tables of every offset (module docs)."""
    x, x_lo, x_hi = ends
    n = x.numel()
    i, s = _lower_left(n - 1)  # i + s <= n - 2
    k, j = torch.triu_indices(n, n, 1)  # k < j
    steps = len(offsets) * (1 if mirrored else 2)
    done = 0
    lefts = []
    for offset in offsets:
        c = x[:-1] + offset * (x[1:] - x[:-1])
        left = torch.full((n, n), _INF, dtype=torch.float64)
        left[i, s] = area(x_lo[i], c[i + s])
        lefts.append(left)
        done += 1
        report(0.8 * done / steps)
    rights = []
    for offset in offsets:
        right = torch.full((n, n), _INF, dtype=torch.float64)
        if mirrored:
            # area(c_k, x_hi_j) = area(x_lo_{n-1-j}, c'_{n-2-k}), c' at 1 - offset.
            partner = offsets.index(_closest(offsets, 1 - offset))
            right[j, n - (j - k)] = lefts[partner][n - 1 - j, j - k - 1]
        else:
            c = x[:-1] + offset * (x[1:] - x[:-1])
            right[j, n - (j - k)] = area(c[k], x_hi[j])
            done += 1
            report(0.8 * done / steps)
        rights.append(right)
    return lefts, rights


def _closest(values: tuple[float, ...], target: float) -> float:
    best = min(values, key=lambda v: abs(v - target))
    if not math.isclose(best, target, abs_tol=1e-12):
        raise ValueError(f"offsets {values} are not mirror-closed")
    return best


def _empty_fields(count: int, dtype: torch.dtype) -> dict[str, Tensor]:
    fields = {f: torch.zeros(count, dtype=dtype) for f in ("a", "x", "fx", "w", "fw")}
    fields.update({f: torch.ones(count, dtype=dtype) for f in ("b", "v", "fv")})
    return fields


def _bracket_cells(
    vals: list[Tensor], offsets: tuple[float, ...], full: Tensor, d: int
) -> Bracket:
    """Bracket the best candidate among cells, given per-offset losses.

    Args:
        vals: Per offset, ``[N, d]`` losses of the candidate at that offset in
            each of the ``d`` cells.
        offsets: The offsets (increasing, in cell units).
        full: ``[N]`` losses at ``t = 0`` and ``t = 1``.
        d: Number of cells.

    Returns:
        The bracket from the previous to the next candidate (in the order cell
        by cell, offsets within a cell) around the best one.
    """
    m = len(offsets)
    rows = torch.arange(full.numel())
    mins = [v.min(dim=1) for v in vals]
    family = torch.stack([mn.values for mn in mins]).argmin(dim=0)
    cell = torch.stack([mn.indices for mn in mins]).gather(0, family[None])[0]
    col = cell * m + family  # position in the interleaved order

    def at(c: Tensor) -> tuple[Tensor, Tensor]:
        """Position and loss of interleaved column ``c`` (0 / 1 beyond the ends)."""
        inside = c.clamp(0, d * m - 1)
        fam, cl = inside % m, inside // m
        value, pos = full.clone(), torch.zeros_like(full)
        for number, offset in enumerate(offsets):
            pick = fam == number
            value = torch.where(pick, vals[number][rows, cl], value)
            pos = torch.where(pick, (cl.to(full.dtype) + offset) / d, pos)
        before, after = c < 0, c >= d * m
        value = torch.where(before | after, full, value)
        pos = torch.where(before, 0.0, torch.where(after, 1.0, pos))
        return pos, value

    x, fx = at(col)
    a, fa = at(col - 1)
    b, fb = at(col + 1)
    return Bracket(a=a, b=b, x=x, fx=fx, w=a, fw=fa, v=b, fv=fb)


def _lower_left(m: int) -> tuple[Tensor, Tensor]:
    """Index pairs ``(i, s)`` with ``i + s < m`` (``i, s >= 0``)."""
    i, s = torch.tril_indices(m, m)  # s <= i
    return m - 1 - i, s
