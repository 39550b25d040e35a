"""The objective and the search behind the branching-point tables.

Exact values of the loss on hand-computed cases, the structure the builder's
docs claim (mirror symmetry, midpoint optimality for ``x * y`` and ``square``,
width-only dependence for ``exp``), and the search against a 1000-point brute
force on small grids.
"""

from __future__ import annotations

import math

import pytest
import torch

from genbab.tables.build import (
    QUANT,
    SearchOptions,
    UnaryObjective,
    build_mul,
    build_unary,
    dequantize,
    mul_entries,
    quantize,
)
from genbab.tables.cells import MIRRORED, cell_offsets, jumps_aligned, symmetric
from genbab.tables.grid import Grid
from genbab.tables.objective import (
    UNARY_KEYS,
    interval_area,
    mul_split_loss,
    mul_volume,
    split_loss,
    table_key,
)
from genbab.tables.search import bracket_best, brent, scan

F64 = torch.float64
BRUTE = 1000  # candidates of the reference search: p = l + (k / 1000) (u - l)
# Our loss may exceed brute force's by this much (relative). The search resolves
# far finer than 1/1000, but brute force sometimes lands exactly on a point
# where sigmoid's or tanh's relaxation jumps and wins that rounding lottery.
BRUTE_TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: intra-op threads only add overhead (a lot on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_grid(key: str, step: float = 0.1) -> Grid:
    lower = 0.05 if key in ("reciprocal", "sqrt") else -2.0
    return Grid(lower, 2.0, step)


@pytest.fixture(scope="module")
def small_tables():
    """key -> (grid, BuiltTable) on small grids, built once."""
    return {key: (g := small_grid(key), build_unary(key, g)) for key in UNARY_KEYS}


# --- the objective -----------------------------------------------------------


def test_table_keys():
    assert table_key("sigmoid") == "sigmoid"
    assert table_key("pow", 2.0) == "square"
    assert table_key("pow", 2) == "square"
    assert table_key("pow", 3.0) is None
    assert table_key("relu") is None
    assert table_key("log") is None


def test_exp_area_hand_computed():
    # Chord of exp on [0, 1] above, tangent at 1/2 below:
    # integral of 1 + (e - 1) x - e^0.5 (1 + x - 1/2) = (e + 1) / 2 - e^0.5.
    lo, hi = torch.tensor([0.0], dtype=F64), torch.tensor([1.0], dtype=F64)
    area = interval_area("exp", lo, hi)
    assert area.item() == pytest.approx((math.e + 1) / 2 - math.exp(0.5), rel=1e-12)


def test_square_loss_closed_form():
    # Gap between chord and midpoint tangent of x^2 is (u - l)^2 / 4 everywhere.
    gen = torch.Generator().manual_seed(0)
    lo = torch.rand(200, generator=gen, dtype=F64) * 8 - 5
    hi = lo + torch.rand(200, generator=gen, dtype=F64) * 4 + 1e-3
    p = lo + torch.rand(200, generator=gen, dtype=F64) * (hi - lo)
    expected = ((p - lo) ** 3 + (hi - p) ** 3) / 4
    got = split_loss("square", lo, p, hi)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_mul_loss_closed_form():
    # McCormick with weight 1/2: constant gap (xu - xl)(yu - yl) / 2.
    gen = torch.Generator().manual_seed(1)
    xl, yl = (torch.rand(200, generator=gen, dtype=F64) * 8 - 5 for _ in range(2))
    xu = xl + torch.rand(200, generator=gen, dtype=F64) * 3 + 1e-3
    yu = yl + torch.rand(200, generator=gen, dtype=F64) * 3 + 1e-3
    p = xl + torch.rand(200, generator=gen, dtype=F64) * (xu - xl)
    expected = (yu - yl) ** 2 * ((p - xl) ** 2 + (xu - p) ** 2) / 2
    got = mul_split_loss(xl, p, xu, yl, yu)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)
    volume = (xu - xl) ** 2 * (yu - yl) ** 2 / 2
    assert torch.allclose(mul_volume(xl, xu, yl, yu), volume)


def test_area_of_point_interval_is_zero_and_crossing_pole_is_infinite():
    x = torch.tensor([0.3, -1.0], dtype=F64)
    assert (interval_area("sin", x, x) == 0).all()
    inf = interval_area("reciprocal", torch.tensor([-1.0]), torch.tensor([1.0]))
    assert inf.item() == math.inf


@pytest.mark.parametrize("key", sorted(MIRRORED))
def test_mirror_symmetry_of_areas(key):
    """The property the mirror shortcut of cells.py relies on."""
    gen = torch.Generator().manual_seed(2)
    lo = torch.rand(500, generator=gen, dtype=F64) * 10 - 5
    hi = lo + torch.rand(500, generator=gen, dtype=F64) * (5 - lo)
    a, b = interval_area(key, lo, hi), interval_area(key, -hi, -lo)
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-12)


# --- the search ----------------------------------------------------------------


def test_brent_finds_smooth_and_kinked_minima():
    gen = torch.Generator().manual_seed(3)
    centre = torch.rand(500, generator=gen, dtype=F64) * 0.8 + 0.1
    kink = torch.rand(500, generator=gen, dtype=F64)

    def loss(index, t):
        d = t - centre[index]
        return d * d + 0.3 * kink[index] * d.abs()

    everything = torch.arange(500)
    zeros, ones = torch.zeros(500, dtype=F64), torch.ones(500, dtype=F64)
    bracket = scan(loss, 500, 16, loss(everything, zeros), loss(everything, ones))
    t, f = brent(loss, bracket, tol=1e-6)
    assert (t - centre).abs().max() < 1e-5
    assert torch.allclose(f, loss(everything, t))


def test_bracket_best_handles_the_ends():
    rows = [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 1.0, 2.0]]
    values = torch.tensor(rows, dtype=F64)
    f0 = torch.full((3,), 5.0, dtype=F64)
    br = bracket_best(values, f0, f0 + 1, 0.5, 0.25)  # candidates at 1/8, 3/8, 5/8
    assert br.x.tolist() == [0.125, 0.625, 0.375]
    assert br.a.tolist() == [0.0, 0.375, 0.125]
    assert br.b.tolist() == [0.375, 1.0, 0.625]
    assert br.fw.tolist() == [5.0, 2.0, 2.0]
    assert br.fv.tolist() == [2.0, 6.0, 2.0]


def test_quantize_round_trip_and_range():
    t = torch.tensor([0.0, 1e-9, 0.5, 0.25, 1 - 1e-9, 1.0], dtype=F64)
    codes = quantize(t)
    assert codes.tolist() == [1, 1, QUANT // 2, QUANT // 4, QUANT - 1, QUANT - 1]
    assert dequantize(codes)[2].item() == 0.5
    assert quantize(torch.tensor([0.3]), "down") < quantize(torch.tensor([0.3]), "up")


def brute_force(objective: UnaryObjective, i, j):
    """Best loss over p = l + (k / 1000)(u - l), k < 1000, and the midpoint's."""
    t = torch.arange(BRUTE, dtype=F64) / BRUTE
    ii, jj = i[:, None].expand(-1, BRUTE), j[:, None].expand(-1, BRUTE)
    losses = objective.loss(ii, jj, t.expand(i.numel(), -1))
    mid = objective.loss(i, j, torch.full((i.numel(),), 0.5, dtype=F64))
    return losses.min(1).values, mid


@pytest.mark.parametrize("key", UNARY_KEYS)
def test_table_matches_brute_force_and_beats_midpoint(key, small_tables):
    grid, table = small_tables[key]
    n = grid.size
    i, j = torch.triu_indices(n, n, 1)
    objective = UnaryObjective(key, grid)
    # The stored loss is the loss of the stored point.
    ours = objective.loss(i, j, dequantize(table.codes))
    assert torch.allclose(ours, table.loss, rtol=1e-6, atol=1e-15)
    # Never worse than the midpoint, on every entry.
    assert (table.loss <= table.midpoint_loss).all()
    # Brute force on a sample covering both mirror halves.
    gen = torch.Generator().manual_seed(4)
    sample = torch.randperm(i.numel(), generator=gen)[:150]
    best, mid = brute_force(objective, i[sample], j[sample])
    assert torch.allclose(mid, table.midpoint_loss[sample], rtol=1e-9, atol=1e-15)
    gap = (ours[sample] - best) / best.clamp(min=1e-300)
    assert gap.max().item() <= BRUTE_TOL, f"{key}: worst gap {gap.max().item():.3g}"
    # And usefully better than the midpoint somewhere (not for square).
    if key != "square":
        assert (table.loss < 0.99 * table.midpoint_loss).any()


def test_mul_table_is_the_midpoint(small_tables):
    # Proven in build.py: the x * y loss is minimal at the midpoint exactly.
    gx = gy = Grid(-2.0, 2.0, 0.5)
    table = build_mul(gx, gy, SearchOptions(scan_points=16))
    assert table.codes.numel() == gx.pairs * gy.pairs
    assert (dequantize(table.codes) - 0.5).abs().max() < 1e-3
    xl, xu, yl, yu = mul_entries(gx, gy)
    t = torch.arange(BRUTE, dtype=F64) / BRUTE
    sample = torch.arange(0, xl.numel(), 37)
    a, b = xl[sample, None], xu[sample, None]
    brute = mul_split_loss(a, a + t * (b - a), b, yl[sample, None], yu[sample, None])
    gap = (table.loss[sample] - brute.min(1).values) / brute.min(1).values
    assert gap.max() <= 1e-9


def test_square_table_is_the_midpoint(small_tables):
    _, table = small_tables["square"]
    assert (dequantize(table.codes) - 0.5).abs().max() < 1e-3


def test_exp_position_depends_on_width_only(small_tables):
    # exp(x + c) = e^c exp(x): entries of one width share their best position.
    grid, table = small_tables["exp"]
    n = grid.size
    i, j = torch.triu_indices(n, n, 1)
    t = dequantize(table.codes)
    for d in (1, 2, 5, 17, n - 2):
        same = t[(j - i) == d]
        assert (same.max() - same.min()).item() < 2e-3, d


def test_mirrored_entries_share_their_point(small_tables):
    grid, table = small_tables["sin"]
    assert symmetric("sin", grid) and not symmetric("tanh", grid)
    n = grid.size
    i, j = torch.triu_indices(n, n, 1)
    m_i, m_j = n - 1 - j, n - 1 - i
    mirror = m_i * (2 * n - m_i - 1) // 2 + (m_j - m_i - 1)
    pairs = i + j != n - 1  # entries centred on 0 are their own mirror image
    assert ((table.codes + table.codes[mirror])[pairs] == QUANT).all()


def test_cell_candidates_per_function():
    grid = Grid(-5.0, 5.0, 0.01)
    assert jumps_aligned("sigmoid", grid) and len(cell_offsets("sigmoid", grid)) == 3
    assert not jumps_aligned("sigmoid", Grid(-5.0, 5.0, 0.013))
    assert len(cell_offsets("sin", grid)) == 4
    assert cell_offsets("exp", grid) == (0.5,)
    assert not symmetric("exp", grid)
    assert not symmetric("sin", Grid(-5.0, 4.0, 0.01))
