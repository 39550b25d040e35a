"""Building branching-point tables: the best split of every grid entry.

One-input functions (sigmoid, tanh, sin, cos, GeLU, exp, reciprocal, sqrt,
square): one entry per grid interval ``[x_i, x_j]``, ``i < j``. A scan over
candidates in every grid cell of every entry (:mod:`.cells`, a few batched
relaxations) brackets the best split to within a fraction of a cell; Brent's
method refines every bracket at once (:mod:`.search`); last, the position is
rounded to the stored 16-bit resolution and the midpoint is kept wherever it is
at least as good, so a stored point is never worse than the midpoint of its
entry.

sigmoid and tanh: their relaxations jump where an interval end crosses a
multiple of 0.01 (a tangent-point table), which the grid points are, so the
loss at exactly a grid point is a matter of rounding. The relaxed interval of
an entry is therefore ``[x_i - e, x_j + e]`` with ``e`` = :data:`.cells.EDGE`
lattice steps: the limit seen by the intervals ``[l, u]`` that contain the entry,
which are the ones looked up with it. The split point is still ``x_i + t (x_j -
x_i)``, as in the lookup (:class:`UnaryObjective`).

Multiplication (split ``x`` of ``x * y``, ``y`` keeping ``[yl, yu]``): one entry
per pair of ``x`` and ``y`` grid intervals; the closed-form losses are scanned
at evenly spaced positions and refined the same way.

Structure worth knowing (checked in the tests, not used to build): for ``x * y``
the gap between genbab's default upper and lower planes (McCormick, weight 1/2)
is the constant ``(xu - xl) (yu - yl) / 2`` over the box, so the loss of a split
at ``p`` is ``(yu - yl)^2 ((p - xl)^2 + (xu - p)^2) / 2``: minimal exactly at the
midpoint. For ``square`` the gap between the chord and the midpoint tangent is
``(x - l)(u - x) + (x - m)^2 = (u - l)^2 / 4``, so the loss ``((p - l)^3 + (u -
p)^3) / 4`` is minimal at the midpoint too. For ``exp``, ``exp(x + c) = e^c
exp(x)`` scales chord and tangent alike, so the loss of ``[l + c, u + c]`` at
``p + c`` is ``e^c`` times that of ``[l, u]`` at ``p``: the best relative
position depends on the width only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from genbab.tables.cells import (
    EDGE,
    JUMP_STEP,
    KINKED,
    canonical_pairs,
    cell_offsets,
    grid_scan,
    jumps_aligned,
    mirror_index,
    symmetric,
)
from genbab.tables.grid import Grid
from genbab.tables.objective import interval_area, mul_split_loss, mul_volume
from genbab.tables.search import Bracket, LossFn, brent, scan
from genbab.tables.store import QUANT

__all__ = [
    "QUANT",
    "BuiltTable",
    "SearchOptions",
    "UnaryObjective",
    "build_mul",
    "build_unary",
    "dequantize",
    "quantize",
]

#: Half-width of the zone around a lattice point that stored points avoid, in
#: float32 ulps (see :func:`_off_lattice`).
_ZONE_ULPS = 8

#: A runner-up local minimum of the scan is refined too if its candidate's loss
#: is within this share of the best candidate's (see :func:`_second_start`).
RUNNER_UP_MARGIN = 5e-3

_BRACKET_FIELDS = ("a", "b", "x", "fx", "w", "fw", "v", "fv")

#: ``progress(fraction)``: the share of the current table done so far, in [0, 1].
Progress = Callable[[float], None]


@dataclass(frozen=True)
class SearchOptions:
    """How hard the search looks.

    Attributes:
        scan_points: Candidates of the multiplication scan.
        tol: Brent's tolerance on the relative position.
        max_iter: Brent's iteration limit.
        chunk: Largest number of intervals relaxed in one call (memory).
        mirror: Use the mirror symmetry of :mod:`.cells` where it holds.
    """

    scan_points: int = 32
    tol: float = 1e-5
    max_iter: int = 60
    chunk: int = 1 << 17
    mirror: bool = True


@dataclass(frozen=True)
class BuiltTable:
    """The result of one build.

    Attributes:
        codes: ``[entries]`` int32 positions ``q`` in ``[1, QUANT - 1]`` (stored as
            uint16); the point of the entry
            ``[g_l, g_u]`` is ``g_l + q / QUANT * (g_u - g_l)``.
        loss: Loss of the stored points, ``[entries]`` float64.
        midpoint_loss: Loss of the midpoints, ``[entries]``.
        seconds: Wall time of the build.
        threads: torch threads of the process that built it.
    """

    codes: Tensor
    loss: Tensor
    midpoint_loss: Tensor
    seconds: float
    threads: int = field(default_factory=torch.get_num_threads)


@dataclass(frozen=True)
class UnaryObjective:
    """The loss a one-input table minimises, entry by entry.

    Attributes:
        key: Table key.
        grid: The grid.
    """

    key: str
    grid: Grid

    @property
    def nudge(self) -> float:
        """Distance of the relaxed ends outside the grid points (module docs)."""
        if not jumps_aligned(self.key, self.grid):
            return 0.0
        return EDGE * JUMP_STEP[self.key]

    def ends(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, x_lo, x_hi)``: grid points and relaxed lower and upper ends."""
        x = self.grid.points(torch.float64)
        return x, x - self.nudge, x + self.nudge

    def area(self, a: Tensor, b: Tensor) -> Tensor:
        """Area of the default relaxation of ``[a, b]``, elementwise."""
        return interval_area(self.key, a, b)

    def loss(self, i: Tensor, j: Tensor, t: Tensor) -> Tensor:
        """Loss of splitting the entries ``(i, j)`` at relative positions ``t``.

        Args:
            i: Lower grid indices (long), broadcastable with ``j`` and ``t``.
            j: Upper grid indices, ``> i``.
            t: Positions in ``[0, 1]``; the split is ``x_i + t (x_j - x_i)``.

        Returns:
            Losses, the broadcast shape.
        """
        x, x_lo, x_hi = self.ends()
        p = x[i] + t * (x[j] - x[i])
        return self.area(x_lo[i], p) + self.area(p, x_hi[j])


def quantize(t: Tensor, rounding: str = "nearest") -> Tensor:
    """Relative positions in ``[0, 1]`` to codes in ``[1, QUANT - 1]`` (int32,
    stored as uint16).

    Args:
        t: Positions, any shape.
        rounding: ``"nearest"``, ``"down"`` or ``"up"``.
    """
    scaled = t.double() * QUANT
    rounders = {"nearest": torch.round, "down": torch.floor, "up": torch.ceil}
    return rounders[rounding](scaled).clamp(1, QUANT - 1).to(torch.int32)


def dequantize(codes: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Codes to relative positions (exact in float32 and float64)."""
    return codes.to(dtype) / QUANT


def build_unary(
    key: str,
    grid: Grid,
    options: SearchOptions | None = None,
    progress: Progress | None = None,
) -> BuiltTable:
    """The best split of every grid interval of a one-input function.

    Args:
        key: Table key (:data:`~genbab.tables.objective.UNARY_KEYS`).
        grid: The grid; its range must lie in the function's domain.
        options: Search options (defaults if None).
        progress: Optional progress callback.

    Returns:
        The table, entries in packed pair order (:mod:`.grid`).
    """
    opts = options or SearchOptions()
    report = progress or (lambda fraction: None)
    started = time.perf_counter()
    objective = UnaryObjective(key, grid)
    n = grid.size
    mirrored = opts.mirror and symmetric(key, grid)
    x, x_lo, x_hi = objective.ends()
    i, j, packed = canonical_pairs(n, mirrored)

    def area(a: Tensor, b: Tensor) -> Tensor:
        return _chunked(lambda s: objective.area(a[s], b[s]), a.numel(), opts.chunk)

    def loss(index: Tensor, t: Tensor) -> Tensor:
        ii, jj = i[index], j[index]
        p = x[ii] + t * (x[jj] - x[ii])
        both = area(torch.cat([x_lo[ii], p]), torch.cat([p, x_hi[jj]]))
        left, right = both.chunk(2)
        return left + right

    full = area(x_lo[i], x_hi[j])  # unsplit entries: the loss at t = 0 and t = 1
    report(0.03)
    offsets = cell_offsets(key, grid)
    bracket, runner_up = grid_scan(
        area, (x, x_lo, x_hi), offsets, mirrored, full,
        lambda f: report(0.03 + 0.27 * f), second=key in KINKED,
    )  # fmt: skip
    lattice = None
    if jumps_aligned(key, grid):
        lattice = (x[i], x[j] - x[i], JUMP_STEP[key])
    codes, best, mid = _finish(loss, bracket, opts, lattice, report, runner_up)
    if mirrored:
        # Entry (i, j) takes 1 - t of its mirror (n-1-j, n-1-i) (see .cells).
        slot = torch.full((grid.pairs,), -1, dtype=torch.long)
        slot[packed] = torch.arange(packed.numel())
        mirror = mirror_index(n)
        own = slot >= 0
        source = torch.where(own, slot, slot[mirror])
        codes = torch.where(own, codes[source], QUANT - codes[source])
        best, mid = best[source], mid[source]
    return BuiltTable(codes, best, mid, time.perf_counter() - started)


def build_mul(
    grid_x: Grid,
    grid_y: Grid,
    options: SearchOptions | None = None,
    progress: Progress | None = None,
) -> BuiltTable:
    """The best split of ``x`` for every pair of grid intervals of ``x`` and ``y``.

    Args:
        grid_x: Grid of ``x``.
        grid_y: Grid of ``y``.
        options: Search options (defaults if None).
        progress: Optional progress callback.

    Returns:
        The table; entry ``ix * (y pairs) + iy`` for the packed pair indices
        ``ix`` of ``x`` and ``iy`` of ``y``.
    """
    opts = options or SearchOptions()
    report = progress or (lambda fraction: None)
    started = time.perf_counter()
    xl, xu, yl, yu = mul_entries(grid_x, grid_y)

    def loss(index: Tensor, t: Tensor) -> Tensor:
        def part(s: slice) -> Tensor:
            a, b = xl[index[s]], xu[index[s]]
            p = a + t[s] * (b - a)
            return mul_split_loss(a, p, b, yl[index[s]], yu[index[s]])

        return _chunked(part, index.numel(), opts.chunk)

    full = _chunked(
        lambda s: mul_volume(xl[s], xu[s], yl[s], yu[s]), xl.numel(), opts.chunk
    )
    bracket = scan(loss, full.numel(), opts.scan_points, full, full)
    report(0.3)
    codes, best, mid = _finish(loss, bracket, opts, None, report)
    return BuiltTable(codes, best, mid, time.perf_counter() - started)


def mul_entries(grid_x: Grid, grid_y: Grid) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(xl, xu, yl, yu)`` of every multiplication entry, ``[entries]`` each."""
    xs, ys = grid_x.points(torch.float64), grid_y.points(torch.float64)
    xi, xj = torch.triu_indices(xs.numel(), xs.numel(), 1)
    yi, yj = torch.triu_indices(ys.numel(), ys.numel(), 1)
    ny, nx = yi.numel(), xi.numel()
    return (
        xs[xi].repeat_interleave(ny), xs[xj].repeat_interleave(ny),
        ys[yi].repeat(nx), ys[yj].repeat(nx),
    )  # fmt: skip


def _finish(
    loss: LossFn,
    bracket: Bracket,
    opts: SearchOptions,
    lattice: tuple[Tensor, Tensor, float] | None,
    report: Progress,
    runner_up: Bracket | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Refine, quantize, and keep the midpoint where it is no worse.

    Args:
        loss: The problems' loss.
        bracket: Start brackets ``[N]``.
        opts: Search options.
        lattice: For functions that jump on a lattice: ``(g_l, g_u - g_l,
            step)`` of every problem and the lattice step. Both roundings of
            the position are then tried (the best point often sits at the edge
            of a jump), each first moved off the lattice (:func:`_off_lattice`).
            None: round to nearest.
        report: Progress callback.
        runner_up: Brackets of a second local minimum (:func:`.cells.grid_scan`),
            refined too where its candidate is within :data:`RUNNER_UP_MARGIN`
            of the best one's.

    Returns:
        ``(codes, loss of the codes, loss of the midpoints)``, ``[N]`` each.
    """
    count = bracket.x.numel()

    def on_iter(it: int, open_count: int) -> None:
        report(0.3 + 0.6 * (1 - open_count / max(count, 1)))

    t, f = brent(loss, bracket, opts.tol, opts.max_iter, on_iter)
    if runner_up is not None:
        t = _second_start(loss, runner_up, t, f, opts)
    everything = torch.arange(count)
    if lattice is None:
        codes = quantize(t)
        coded_loss = loss(everything, dequantize(codes))
    else:
        codes = _off_lattice(quantize(t, "down"), t, *lattice)
        coded_loss = loss(everything, dequantize(codes))
        codes_up = _off_lattice(quantize(t, "up"), t, *lattice)
        up_loss = loss(everything, dequantize(codes_up))
        up_better = up_loss < coded_loss
        codes = torch.where(up_better, codes_up, codes)
        coded_loss = torch.where(up_better, up_loss, coded_loss)
    mid_loss = loss(everything, torch.full_like(t, 0.5))
    use_mid = ~(coded_loss < mid_loss)
    codes = torch.where(use_mid, torch.full_like(codes, QUANT // 2), codes)
    report(1.0)
    return codes, torch.where(use_mid, mid_loss, coded_loss), mid_loss


def _second_start(
    loss: LossFn, runner_up: Bracket, t: Tensor, f: Tensor, opts: SearchOptions
) -> Tensor:
    """Refine the runners-up that might hide a deeper minimum; the better ``t``.

    A sharp (V-shaped) minimum between two candidates can be deeper than the
    best candidate's basin while its own candidates look worse by up to the
    slope times the candidate spacing.
    """
    close = runner_up.fx <= f * (1 + RUNNER_UP_MARGIN)
    index = close.nonzero().squeeze(1)
    if index.numel() == 0:
        return t
    sub = Bracket(*(getattr(runner_up, name)[index] for name in _BRACKET_FIELDS))

    def sub_loss(rows: Tensor, tt: Tensor) -> Tensor:
        return loss(index[rows], tt)

    t2, f2 = brent(sub_loss, sub, opts.tol, opts.max_iter)
    t = t.clone()
    better = f2 < f[index]
    t[index[better]] = t2[better]
    return t


def _off_lattice(
    codes: Tensor, t: Tensor, start: Tensor, width: Tensor, step: float
) -> Tensor:
    """Move codes whose point is within a few float32 ulps of a lattice point.

    At a lattice point the relaxation's value depends on the rounding of the
    point (and so differs between float64 and float32, and between an entry and
    its mirror image); the point is moved just outside that zone, to the side
    of the lattice point where the search's optimum ``t`` lies (its own side
    if ``t`` is on the lattice point too).

    Args:
        codes: ``[N]`` int32 codes.
        t: ``[N]`` the positions they round.
        start: ``[N]`` grid interval starts ``g_l``.
        width: ``[N]`` grid interval widths.
        step: Lattice step.

    Returns:
        The codes, moved where needed (still in ``[1, QUANT - 1]``).
    """
    p = start + dequantize(codes) * width
    node = torch.round(p / step) * step
    zone = _ZONE_ULPS * torch.finfo(torch.float32).eps * (node.abs() + step)
    near = (p - node).abs() < zone
    side = torch.sign(start + t * width - node)
    side = torch.where(side == 0, torch.sign(p - node), side)
    side = torch.where(side == 0, torch.ones_like(side), side)
    target = (node + side * 2 * zone - start) / width
    moved = torch.where(side > 0, quantize(target, "up"), quantize(target, "down"))
    return torch.where(near, moved, codes)


def _chunked(fn: Callable[[slice], Tensor], count: int, chunk: int) -> Tensor:
    """``fn`` over consecutive slices of at most ``chunk`` items, concatenated."""
    parts = [fn(slice(s, s + chunk)) for s in range(0, count, chunk)]
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat(parts)
