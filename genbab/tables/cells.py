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

* sin and cos (:data:`KINKED`): 4 evenly spaced. Their default relaxations
  pick lines among discrete candidates, so the loss has kinks, sharp V-shaped
  minima included, and local minima can lie about a cell apart; one or two
  candidates per cell were seen to miss the deeper one. The best other local
  minimum of the candidates is bracketed as well (``second``), and the builder
  refines it too where it is nearly as good.
* sigmoid and tanh: their relaxations read tangent points from a table with
  step 0.01 and jump where an interval end crosses a multiple of 0.01. With
  grid points on those multiples the loss is smooth inside each lattice cell
  and its minimum is often just inside a cell end, so every lattice cell gets
  its centre and points :data:`EDGE` of a lattice step inside both ends (3 per
  grid cell at step 0.01). On other grids: 4 evenly spaced.
* GeLU and the convex or concave functions (exp, reciprocal, sqrt, square):
  the centre (for GeLU this matched brute force to 1e-7 on 1000 sampled
  entries).

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
and only the entries with ``i + j <= n - 1`` are searched (except for sigmoid
and tanh on grids of multiples of 0.01, see :func:`symmetric`). The tests check
the area symmetry directly and the mirrored half of every table against brute
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
    "KINKED",
    "MIRRORED",
    "canonical_pairs",
    "cell_offsets",
    "grid_scan",
    "mirror_index",
    "symmetric",
]

#: Edge candidates sit this share of a lattice step inside a lattice cell.
EDGE = 1e-3

#: Functions whose default relaxation jumps where an interval end crosses a
#: multiple of this step (the tangent-point tables of ``s_shaped``).
JUMP_STEP = {"sigmoid": s_shaped.TABLE_STEP, "tanh": s_shaped.TABLE_STEP}

#: Grids coarser than this many lattice steps get evenly spaced candidates.
MAX_LATTICE_CELLS = 10

#: Functions whose area is mirror symmetric (module docs).
MIRRORED = frozenset({"sigmoid", "tanh", "sin", "cos", "gelu", "square"})

#: Functions whose loss has kinks close together (see the module docs).
KINKED = frozenset({"sin", "cos"})
_EVEN4 = (0.125, 0.375, 0.625, 0.875)
_INF = float("inf")

Area = Callable[[Tensor, Tensor], Tensor]


def cell_offsets(key: str, grid: Grid) -> tuple[float, ...]:
    """Candidate offsets inside a grid cell, increasing and mirror-closed.

    For a function that jumps on a lattice aligned with the grid, each lattice
    cell inside the grid cell gets its centre and points :data:`EDGE` of a
    lattice step inside both ends.
    """
    if key in JUMP_STEP:
        if not jumps_aligned(key, grid):
            return _EVEN4
        r = round(grid.step / JUMP_STEP[key])
        return tuple((s + o) / r for s in range(r) for o in (EDGE, 0.5, 1 - EDGE))
    return _EVEN4 if key in KINKED else (0.5,)


def jumps_aligned(key: str, grid: Grid) -> bool:
    """Whether ``key`` jumps on a lattice that the grid points lie on, with at
    most :data:`MAX_LATTICE_CELLS` lattice steps per grid step."""
    jump = JUMP_STEP.get(key)
    if jump is None:
        return False

    def whole(v: float) -> bool:
        return abs(v / jump - round(v / jump)) < 1e-6

    ratio = round(grid.step / jump)
    return whole(grid.range_l) and whole(grid.step) and ratio <= MAX_LATTICE_CELLS


def symmetric(key: str, grid: Grid) -> bool:
    """Whether the mirror shortcut applies: ``key`` in :data:`MIRRORED`, the grid
    symmetric about 0 (``x_{n-1-i} = -x_i``), and no relaxation jumps at the
    grid points.

    At a jump the value depends on how the point rounds, which differs between
    ``x`` and ``-x``: for sigmoid and tanh on a grid of multiples of 0.01 an
    entry's midpoint loss (and so whether the midpoint is kept) would not carry
    over to its mirror image, so those tables are searched in full.
    """
    last = grid.range_l + (grid.size - 1) * grid.step
    tol = 1e-9 * grid.step
    aligned = jumps_aligned(key, grid)
    return key in MIRRORED and abs(grid.range_l + last) < tol and not aligned


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
    second: bool = False,
) -> tuple[Bracket, Bracket | None]:
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
        full: Areas of the searched entries (:func:`canonical_pairs` order).
        report: Progress callback, fractions in ``[0, 1]`` of this scan.
        second: Also bracket the best other local minimum of the candidates
            (more than two candidates away from the best one).

    Returns:
        Brackets of the entries of :func:`canonical_pairs`, in that order, and
        with ``second`` the brackets of the runners-up (``fx = inf`` where an
        entry has none).
    """
    n = ends[0].numel()
    lefts, rights = _area_tables(area, ends, offsets, mirrored, report)
    _, _, cpacked = canonical_pairs(n, mirrored)
    slot = torch.full((n * (n - 1) // 2,), -1, dtype=torch.long)
    slot[cpacked] = torch.arange(cpacked.numel())
    count = cpacked.numel()
    fields = _empty_fields(count, full.dtype)
    others = _empty_fields(count, full.dtype) if second else None
    for d in range(1, n):
        rows = n - d if not mirrored else (n - 1 - d) // 2 + 1
        i = torch.arange(rows)
        at = slot[i * (2 * n - i - 1) // 2 + (d - 1)]  # (i, i + d) in the output
        vals = torch.stack(
            [
                le[:rows, :d] + ri[d : d + rows, n - d :]
                for le, ri in zip(lefts, rights, strict=True)
            ],
            dim=2,
        ).flatten(1)  # [rows, d * m]: cell by cell, offsets within a cell
        f = full[at]
        best = vals.argmin(dim=1)
        _store(fields, at, _bracket_column(vals, best, offsets, f, d))
        if others is not None:
            runner_up = _runner_up(vals, best, f)
            found = _bracket_column(vals, runner_up.clamp(min=0), offsets, f, d)
            found.fx[runner_up < 0] = _INF
            _store(others, at, found)
    report(1.0)
    return Bracket(**fields), None if others is None else Bracket(**others)


def _store(fields: dict[str, Tensor], at: Tensor, found: Bracket) -> None:
    for name, field in fields.items():
        field[at] = getattr(found, name)


def _runner_up(vals: Tensor, best: Tensor, full: Tensor) -> Tensor:
    """Column of the best local minimum more than two columns from ``best``.

    Returns -1 where there is none.
    """
    padded = torch.cat([full[:, None], vals, full[:, None]], dim=1)
    centre = padded[:, 1:-1]
    local = (centre <= padded[:, :-2]) & (centre <= padded[:, 2:])
    cols = torch.arange(vals.shape[1])
    far = (cols[None, :] - best[:, None]).abs() > 2
    masked = torch.where(local & far, vals, _INF)
    found = masked.argmin(dim=1)
    none = torch.isinf(masked.gather(1, found[:, None])[:, 0])
    return torch.where(none, -1, found)


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


def _bracket_column(
    vals: Tensor, col: Tensor, offsets: tuple[float, ...], full: Tensor, d: int
) -> Bracket:
    """Bracket around candidate column ``col`` of each row.

    Args:
        vals: ``[N, d * m]`` candidate losses, cell by cell, ``m`` offsets each.
        col: ``[N]`` the chosen columns.
        offsets: The ``m`` offsets (increasing, in cell units).
        full: ``[N]`` losses at ``t = 0`` and ``t = 1``.
        d: Number of cells.

    Returns:
        The bracket from the previous to the next candidate (``t = 0`` and ``1``
        beyond the ends).
    """
    m = len(offsets)
    where = torch.tensor(offsets, dtype=full.dtype)
    rows = torch.arange(full.numel())

    def at(c: Tensor) -> tuple[Tensor, Tensor]:
        inside = c.clamp(0, d * m - 1)
        pos = ((inside // m).to(full.dtype) + where[inside % m]) / d
        value = vals[rows, inside]
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
