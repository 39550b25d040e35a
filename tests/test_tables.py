"""Branching-point tables: the lookup rule, the file format and its checks, the
``genbab tables`` command line, and the tables shipped in ``lookup_tables/``."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest
import torch

from genbab.cli import main
from genbab.tables import (
    FORMAT_VERSION,
    BranchingPoints,
    default_directory,
    load_branching_points,
)
from genbab.tables.build import QUANT, UnaryObjective, dequantize
from genbab.tables.grid import Grid, pair_index
from genbab.tables.make import (
    ALL_KEYS,
    build_tables,
    folder_status,
    needs_build,
    table_specs,
)
from genbab.tables.store import MANIFEST, read_manifest, read_table

F64 = torch.float64
SMALL = {"range_l": -1.5, "range_u": 1.5, "step": 0.05, "step_2d": 0.5}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: intra-op threads only add overhead (a lot on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A folder with every table on a small grid."""
    folder = tmp_path_factory.mktemp("tables")
    build_tables(table_specs(ALL_KEYS, **SMALL), folder)
    return folder


@pytest.fixture
def copy(built, tmp_path):
    """A private copy of the small tables, to damage."""
    target = tmp_path / "copy"
    shutil.copytree(built, target)
    return target


# --- grid and lookup rule ------------------------------------------------------


def test_grid_sizes_and_errors():
    assert Grid(-5.0, 5.0, 0.01).size == 1001
    assert Grid(-5.0, 5.0, 0.2).size == 51
    assert Grid(1e-6, 5.0, 0.01).size == 500  # last point 4.990001 <= 5
    assert Grid(-5.0, 5.0, 0.01).pairs == 1001 * 1000 // 2
    for bad in ((0.0, 1.0, 0.0), (0.0, 1.0, -0.1), (0.0, 0.05, 0.1), (0, math.inf, 1)):
        with pytest.raises(ValueError):
            Grid(*bad)


def test_pair_index_is_the_packed_order():
    n = 7
    i, j = torch.triu_indices(n, n, 1)
    assert pair_index(i, j, n).tolist() == list(range(n * (n - 1) // 2))


def test_innermost_cell():
    grid = Grid(-1.0, 1.0, 0.1)  # points -1, -0.9, ..., 1
    lo = torch.tensor([-0.95, -0.9, -1.0, -0.33, -1.01, 0.5, 0.42, 0.3, float("nan")])
    hi = torch.tensor([-0.75, -0.6, 1.0, 0.33, 0.0, 1.02, 0.48, 0.3, 0.5])
    i, j, valid = grid.cell(lo, hi)
    # [-0.95, -0.75] -> [-0.9, -0.8]; [-0.9, -0.6] -> itself (up to rounding);
    # [-1, 1] -> whole grid; [-0.33, 0.33] -> [-0.3, 0.3]; outside the range
    # (-1.01, 1.02), inside one cell (0.42..0.48), a point, NaN: invalid.
    assert valid.tolist() == [True, True, True, True, False, False, False, False, False]
    assert (i[0].item(), j[0].item()) == (1, 2)
    assert (i[2].item(), j[2].item()) == (0, 20)
    assert (i[3].item(), j[3].item()) == (7, 13)
    x = grid.points()
    assert x[i[1]] >= -0.9 - 1e-12 and x[j[1]] <= -0.6 + 1e-12


def test_points_use_the_stored_point_of_the_innermost_cell(built):
    points = load_branching_points(built, mode="cell")
    info = read_manifest(built)["tanh"]
    codes = read_table(built, info).codes
    grid = info.grid
    lo = torch.tensor([-1.234, 0.011, -0.5], dtype=F64)
    hi = torch.tensor([0.987, 1.4999, 1.5], dtype=F64)
    i, j, valid = grid.cell(lo, hi)
    assert valid.all()
    x = grid.points()
    t = torch.from_numpy(codes.astype(np.int64))[pair_index(i, j, grid.size)] / QUANT
    expected = x[i] + t * (x[j] - x[i])
    assert torch.equal(points.points("tanh", lo, hi), expected)


def test_scaled_mode_applies_the_position_to_the_interval(built):
    cell = load_branching_points(built, mode="cell")
    scaled = load_branching_points(built)  # the default
    lo = torch.tensor([-1.234, 0.011, -3.0], dtype=F64)
    hi = torch.tensor([0.987, 1.4999, 0.0], dtype=F64)
    grid = read_manifest(built)["sin"].grid
    i, j, valid = grid.cell(lo, hi)
    x = grid.points()
    t = (cell.points("sin", lo, hi) - x[i]) / (x[j] - x[i])
    got = scaled.points("sin", lo, hi)
    assert torch.allclose(got[:2], (lo + t * (hi - lo))[:2], rtol=0, atol=1e-12)
    assert got[2] == -1.5  # outside the range: midpoint in both modes
    with pytest.raises(ValueError, match="unknown lookup mode"):
        load_branching_points(built, mode="nearest")


def test_midpoint_outside_the_table(built):
    points = load_branching_points(built)
    lo = torch.tensor([-3.0, 1.0, 0.51, 0.2, -1.5, 0.7], dtype=F64)
    hi = torch.tensor([0.0, 2.0, 0.54, 0.2, 1.6, 0.7], dtype=F64)
    # below the range, above it, inside one cell, a point, just above the range,
    # a point again: all midpoints.
    got = points.points("sigmoid", lo, hi)
    assert torch.equal(got, (lo + hi) / 2)
    assert torch.equal(points.points("log", lo, hi), (lo + hi) / 2)  # no table


@pytest.mark.parametrize("mode", ["cell", "scaled"])
@pytest.mark.parametrize("key", ALL_KEYS)
def test_points_strictly_inside(built, key, mode):
    points = load_branching_points(built, mode=mode)
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        base = 0.0 if key in ("reciprocal", "sqrt") else -2.0
        lo = (torch.rand(4000, generator=gen, dtype=F64) * 4 + base).to(dtype)
        width = torch.rand(4000, generator=gen, dtype=F64) ** 4 * 3
        hi = (lo.double() + width + 1e-5).to(dtype)
        if key == "mul":
            ylo = torch.rand(4000, generator=gen, dtype=F64).to(dtype) * 3 - 1.5
            p = points.mul_points(lo, hi, ylo, ylo + 0.7)
        else:
            p = points.points(key, lo, hi)
        assert p.dtype == dtype and p.shape == lo.shape
        assert ((p > lo) & (p < hi)).all(), key
        differs = (p != (lo + hi) / 2).any()
        assert differs or key in ("mul", "square") and mode == "scaled"


def test_points_broadcast_and_keep_dtype(built):
    points = load_branching_points(built)
    lo = torch.linspace(-1.4, 0.0, 3, dtype=torch.float32).view(3, 1)
    hi = torch.linspace(0.1, 1.4, 4, dtype=torch.float32).view(1, 4)
    p = points.points("sin", lo, hi)
    assert p.shape == (3, 4) and p.dtype == torch.float32
    assert ((p > lo) & (p < hi)).all()
    y_hi = torch.tensor([0.5, 1.0, 1.2, 1.4])
    q = points.mul_points(lo, hi, torch.tensor(-1.0), y_hi)
    assert q.shape == (3, 4) and ((q > lo) & (q < hi)).all()


def test_mul_points_fall_back_per_input(built):
    points = load_branching_points(built)
    xl, xu = torch.tensor([-1.0, -1.0]), torch.tensor([0.9, 0.9])
    yl, yu = torch.tensor([-1.0, 1.2]), torch.tensor([1.0, 1.3])  # y: ok, inside a cell
    p = points.mul_points(xl, xu, yl, yu)
    assert p[1] == (xl[1] + xu[1]) / 2
    assert -1.0 < p[0] < 0.9


def test_loaded_points_reduce_the_loss_on_grid_intervals(built):
    """On grid intervals the looked-up point is never worse than the midpoint."""
    points = load_branching_points(built)
    info = read_manifest(built)["gelu"]
    grid = info.grid
    n = grid.size
    i, j = torch.triu_indices(n, n, 1)
    x = grid.points()
    p = points.points("gelu", x[i], x[j])
    objective = UnaryObjective("gelu", grid)
    ours = objective.loss(i, j, (p - x[i]) / (x[j] - x[i]))
    mid = objective.loss(i, j, torch.full_like(p, 0.5))
    assert (ours <= mid * (1 + 1e-12)).all()
    assert ours.sum() < mid.sum() and (ours < 0.95 * mid).any()


# --- format and its checks -----------------------------------------------------


def test_manifest_contents(built):
    data = json.loads((built / MANIFEST).read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert set(data["tables"]) == set(ALL_KEYS)
    entry = data["tables"]["reciprocal"]
    assert entry["grid"]["range_l"] == pytest.approx(1e-6)
    assert entry["kind"] == "unary" and len(entry["sha256"]) == 64
    assert data["tables"]["mul"]["grid_y"] == data["tables"]["mul"]["grid"]
    for key in ("generator", "probe", "build_seconds", "loss_ratio"):
        assert key in entry
    assert entry["torch_threads"] == torch.get_num_threads() == 1


def test_all_tables_load_without_warnings(built, caplog):
    with caplog.at_level(logging.WARNING):
        points = load_branching_points(built)
    assert caplog.records == []
    assert points.functions == tuple(sorted(ALL_KEYS))
    assert all(points.has(k) for k in ALL_KEYS) and not points.has("log")


def _edit_manifest(folder, edit):
    path = folder / MANIFEST
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _assert_midpoints(points, key):
    lo, hi = torch.tensor([-1.2, 0.1]), torch.tensor([0.9, 1.3])
    if key == "mul":
        got = points.mul_points(lo, hi, lo, hi)
    else:
        got = points.points(key, lo, hi)
    assert torch.equal(got, (lo + hi) / 2)


def test_other_format_version_is_reported_not_read(copy, caplog):
    _edit_manifest(copy, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with caplog.at_level(logging.WARNING):
        points = load_branching_points(copy)
    assert points.functions == ()
    message = caplog.text
    assert str(copy / MANIFEST) in message and "format version" in message
    _assert_midpoints(points, "sigmoid")


def test_missing_table_file_is_reported(copy, caplog):
    (copy / "sin.npz").unlink()
    with caplog.at_level(logging.WARNING):
        points = load_branching_points(copy)
    assert not points.has("sin") and points.has("cos")
    assert str(copy / "sin.npz") in caplog.text and "missing" in caplog.text
    _assert_midpoints(points, "sin")


def test_manifest_with_other_grid_is_reported(copy, caplog):
    def edit(data):
        data["tables"]["tanh"]["grid"]["range_l"] = -1.0
        data["tables"]["tanh"]["grid"]["size"] = 51
        data["tables"]["tanh"]["entries"] = 51 * 50 // 2

    _edit_manifest(copy, edit)
    with caplog.at_level(logging.WARNING):
        points = load_branching_points(copy)
    assert not points.has("tanh") and points.has("sigmoid")
    assert str(copy / "tanh.npz") in caplog.text
    _assert_midpoints(points, "tanh")


def test_inconsistent_manifest_entry_is_reported(copy, caplog):
    _edit_manifest(copy, lambda d: d["tables"]["exp"].update(entries=12))
    with caplog.at_level(logging.WARNING):
        points = load_branching_points(copy)
    assert not points.has("exp") and "entries" in caplog.text


def test_swapped_table_file_is_recognised(copy, caplog):
    # cos.npz copied over sin.npz, with the hash updated: the file's own meta
    # data still says cos.
    shutil.copy(copy / "cos.npz", copy / "sin.npz")
    sha = json.loads((copy / MANIFEST).read_text())["tables"]["cos"]["sha256"]
    _edit_manifest(copy, lambda d: d["tables"]["sin"].update(sha256=sha))
    with caplog.at_level(logging.WARNING):
        points = load_branching_points(copy)
    assert not points.has("sin") and points.has("cos")
    assert "describes" in caplog.text and str(copy / "sin.npz") in caplog.text


def test_altered_table_file_is_recognised(copy, caplog):
    raw = bytearray((copy / "gelu.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (copy / "gelu.npz").write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        points = load_branching_points(copy)
    assert not points.has("gelu") and "hash" in caplog.text


def test_missing_folder_or_manifest_is_reported(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert load_branching_points(tmp_path / "nowhere").functions == ()
        assert load_branching_points(tmp_path).functions == ()
    assert caplog.text.count("no table manifest") == 2


def test_needs_build_tells_why(copy):
    specs = {s.key: s for s in table_specs(ALL_KEYS, **SMALL)}
    assert needs_build(copy, specs["sigmoid"]) is None
    (copy / "sigmoid.npz").unlink()
    assert "missing" in needs_build(copy, specs["sigmoid"])
    other = table_specs(["tanh"], -1.5, 1.5, 0.1)[0]
    assert "another range or step" in needs_build(copy, other)
    _edit_manifest(copy, lambda d: d["tables"]["cos"].update(probe=[1.0, 2.0, 3, 4]))
    assert "stale" in needs_build(copy, specs["cos"])


def test_table_specs_ranges():
    specs = {s.key: s for s in table_specs(ALL_KEYS)}
    assert specs["sigmoid"].grid == Grid(-5.0, 5.0, 0.01)
    assert specs["reciprocal"].grid == Grid(1e-6, 5.0, 0.01)
    assert specs["mul"].grid == specs["mul"].grid_y == Grid(-5.0, 5.0, 0.2)
    with pytest.raises(ValueError, match="no table for relu"):
        table_specs(["relu"])
    with pytest.raises(ValueError, match="sqrt needs a range"):
        table_specs(["sqrt"], -2.0, -1.0)
    with pytest.raises(ValueError, match="lower end 3 must be below its upper end 1"):
        table_specs(["sigmoid"], 3.0, 1.0)


# --- command line ----------------------------------------------------------------


def test_cli_build_and_show_round_trip(tmp_path, capsys):
    out = tmp_path / "t"
    args = ["tables", "build", "--functions", "sigmoid,mul", "--out", str(out)]
    args += ["--range-lower", "-1", "--range-upper", "1", "--step", "0.1"]
    args += ["--step-2d", "0.5"]
    assert main([*args, "-q"]) == 0
    stdout = capsys.readouterr().out
    assert "sigmoid" in stdout and "mul" in stdout and "total" in stdout
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "mul.npz", "sigmoid.npz"]

    assert main(["tables", "show", str(out)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "format version 1" in listing[0]
    rows = {line.split()[0]: line for line in listing[2:]}
    assert set(rows) == {"sigmoid", "mul"}
    assert "[-1, 1]" in rows["sigmoid"] and "210" in rows["sigmoid"]
    assert rows["sigmoid"].rstrip().endswith("ok")

    # Nothing to do the second time with --missing-only.
    before = (out / "sigmoid.npz").stat().st_mtime_ns
    assert main([*args, "--missing-only", "-q"]) == 0
    assert (out / "sigmoid.npz").stat().st_mtime_ns == before
    points = load_branching_points(out)
    assert points.functions == ("mul", "sigmoid")


def test_cli_show_reports_broken_tables(copy, tmp_path, capsys):
    (copy / "exp.npz").unlink()
    assert main(["tables", "show", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out
    assert main(["tables", "show", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


@pytest.mark.parametrize(
    "extra",
    [
        ["--functions", "relu"],
        ["--step", "-0.1"],
        ["--range-lower", "nan"],
        ["--range-lower", "3", "--range-upper", "2"],
        ["--functions", "sqrt", "--range-lower", "-3", "--range-upper", "-1"],
    ],
)
def test_cli_usage_errors(extra, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tables", "build", "--out", str(tmp_path), *extra])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_keys_module_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, genbab.tables.keys, genbab.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# --- the shipped tables ------------------------------------------------------------


def test_shipped_tables_load_and_are_current(caplog):
    with caplog.at_level(logging.WARNING):
        points = load_branching_points()
    assert caplog.records == [], caplog.text
    assert set(points.functions) == set(ALL_KEYS)
    specs = table_specs(ALL_KEYS)
    for status in folder_status(default_directory()):
        assert status.problem is None, (
            f"{status.info.key}: {status.problem}; rebuild with"
            " 'genbab tables build --missing-only'"
        )
    infos = read_manifest(default_directory())
    for spec in specs:
        info = infos[spec.key]
        assert (info.grid, info.grid_y) == (spec.grid, spec.grid_y)


def test_shipped_tables_spot_check():
    """A few entries of the shipped tables against a 1000-point brute force."""
    folder = default_directory()
    infos = read_manifest(folder)
    gen = torch.Generator().manual_seed(5)
    for key in ("sigmoid", "sin", "reciprocal"):
        info = infos[key]
        codes = torch.from_numpy(read_table(folder, info).codes.astype(np.int64))
        n = info.grid.size
        i, j = torch.triu_indices(n, n, 1)
        sample = torch.randint(0, i.numel(), (20,), generator=gen)
        objective = UnaryObjective(key, info.grid)
        ours = objective.loss(i[sample], j[sample], dequantize(codes[sample]))
        t = torch.arange(1000, dtype=F64) / 1000
        brute = objective.loss(i[sample, None], j[sample, None], t).min(1).values
        assert (ours <= brute * (1 + 1e-4)).all(), key


def test_shipped_points_strictly_inside():
    points = load_branching_points()
    assert isinstance(points, BranchingPoints)
    gen = torch.Generator().manual_seed(6)
    lo = torch.rand(20000, generator=gen) * 9.9 - 4.95
    hi = lo + torch.rand(20000, generator=gen) * (5 - lo) + 1e-4
    for key in ALL_KEYS:
        if key in ("reciprocal", "sqrt"):
            lo_k, hi_k = lo.abs() + 1e-5, lo.abs() + (hi - lo) + 1e-5
        else:
            lo_k, hi_k = lo, hi
        p = points.mul_points(lo_k, hi_k, lo, hi) if key == "mul" else None
        if p is None:
            p = points.points(key, lo_k, hi_k)
        assert ((p > lo_k) & (p < hi_k)).all(), key
