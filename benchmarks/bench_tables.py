"""Build the branching-point tables on the reference grid and measure them.

Usage: python benchmarks/bench_tables.py [--functions all] [--threads 2]
       [--jobs 1] [--sample 200] [--tables DIR] [--keep DIR]

Builds every requested table (range [-5, 5], step 0.01; reciprocal and sqrt from
1e-6; multiplication step 0.2) into a temporary folder, or with ``--tables DIR``
measures an existing folder without building. One row per table:

* ``entries`` and ``build s`` (this run's wall time, or the manifest's);
* ``grid t/mid``: summed loss of the stored points over the sum for the
  midpoints, over all grid entries; ``mean t/mid``: the mean per-entry ratio;
* ``gap bf``: the largest relative excess of the stored point's loss over a
  1000-candidate brute force (``p = l + k/1000 (u - l)``) on ``--sample`` random
  entries (negative: the table is better everywhere sampled);
* ``off t/mid``: mean loss ratio, looked-up point over midpoint, on random
  intervals that are not grid intervals (widths log-uniform in [0.02, 10]);
  ``off rel/mid``: the same with ``mode="scaled"`` (the stored relative position
  applied to the interval itself, ``l + t (u - l)``, rather than to its cell).

Then the total build time, the folder's size, and the time to load it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from genbab.tables import load_branching_points
from genbab.tables.build import UnaryObjective, dequantize, mul_entries
from genbab.tables.make import ALL_KEYS, build_tables, table_specs
from genbab.tables.objective import MUL_KEY, mul_split_loss, split_loss
from genbab.tables.store import read_manifest, read_table

F64 = torch.float64


def brute_gap(key: str, info, codes: torch.Tensor, sample: int, seed: int) -> float:
    """Largest relative excess of the table's loss over a 1000-point brute force."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, codes.numel(), (sample,), generator=gen)
    t = torch.arange(1000, dtype=F64) / 1000
    ours_t = dequantize(codes[picks])
    if key == MUL_KEY:
        xl, xu, yl, yu = (v[picks] for v in mul_entries(info.grid, info.grid_y))
        ours = mul_split_loss(xl, xl + ours_t * (xu - xl), xu, yl, yu)
        a, b = xl[:, None], xu[:, None]
        brute = mul_split_loss(a, a + t * (b - a), b, yl[:, None], yu[:, None])
    else:
        objective = UnaryObjective(key, info.grid)
        n = info.grid.size
        i, j = torch.triu_indices(n, n, 1)
        i, j = i[picks], j[picks]
        ours = objective.loss(i, j, ours_t)
        brute = torch.cat(
            [objective.loss(i[k : k + 50, None], j[k : k + 50, None], t)
             for k in range(0, sample, 50)]
        )  # fmt: skip
    best = brute.min(1).values
    return float(((ours - best) / best.clamp(min=1e-300)).max())


def grid_ratios(key: str, info, codes: torch.Tensor) -> tuple[float, float]:
    """Summed and mean per-entry loss ratio, stored points over midpoints."""
    if key == MUL_KEY:
        xl, xu, yl, yu = mul_entries(info.grid, info.grid_y)
        ours = mul_split_loss(xl, xl + dequantize(codes) * (xu - xl), xu, yl, yu)
        mid = mul_split_loss(xl, (xl + xu) / 2, xu, yl, yu)
    else:
        objective = UnaryObjective(key, info.grid)
        n = info.grid.size
        i, j = torch.triu_indices(n, n, 1)
        ours, mids = [], []
        for s in range(0, i.numel(), 1 << 17):
            ii, jj = i[s : s + (1 << 17)], j[s : s + (1 << 17)]
            ours.append(objective.loss(ii, jj, dequantize(codes[s : s + (1 << 17)])))
            mids.append(objective.loss(ii, jj, torch.full_like(ii, 0.5, dtype=F64)))
        ours, mid = torch.cat(ours), torch.cat(mids)
    ok = torch.isfinite(ours) & torch.isfinite(mid) & (mid > 0)
    return float(ours[ok].sum() / mid[ok].sum()), float((ours[ok] / mid[ok]).mean())


def off_grid(key: str, info, cell, scaled, seed: int) -> tuple[float, float]:
    """Mean loss ratios over midpoints on random off-grid intervals, for the
    lookup modes ``"cell"`` and ``"scaled"``."""
    gen = torch.Generator().manual_seed(seed)
    grid, count = info.grid, 4000
    span = grid.range_u - grid.range_l
    width = torch.exp(torch.rand(count, generator=gen, dtype=F64) * np.log(500)) * 0.02
    width = width.clamp(max=0.999 * span)
    lo = grid.range_l + torch.rand(count, generator=gen, dtype=F64) * (span - width)
    hi = lo + width
    if key == MUL_KEY:
        ylo = grid.range_l + torch.rand(count, generator=gen, dtype=F64) * (span - 1)
        yhi = ylo + 1.0

        def loss(p):
            return mul_split_loss(lo, p, hi, ylo, yhi)

        cell_p = cell.mul_points(lo, hi, ylo, yhi)
        scaled_p = scaled.mul_points(lo, hi, ylo, yhi)
    else:

        def loss(p):
            return split_loss(key, lo, p, hi)

        cell_p, scaled_p = cell.points(key, lo, hi), scaled.points(key, lo, hi)
    mid = loss((lo + hi) / 2)
    ok = mid > 0
    return (
        float((loss(cell_p)[ok] / mid[ok]).mean()),
        float((loss(scaled_p)[ok] / mid[ok]).mean()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", default="all", help="comma-separated or all")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--jobs", type=int, default=1, help="tables built at once")
    parser.add_argument("--sample", type=int, default=200, help="brute-force entries")
    parser.add_argument("--tables", type=Path, help="measure this folder, no build")
    parser.add_argument("--keep", type=Path, help="build into this folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keys = list(ALL_KEYS) if args.functions == "all" else args.functions.split(",")

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if args.tables is not None:
        folder = args.tables
    else:
        folder = args.keep or Path(tempfile.mkdtemp(prefix="genbab-tables-"))
        for info in build_tables(table_specs(keys), folder, jobs=args.jobs):
            seconds[info.key] = info.extra["build_seconds"]
    total = time.perf_counter() - started

    infos = read_manifest(folder)
    cell = load_branching_points(folder)
    scaled = load_branching_points(folder, mode="scaled")
    header = (
        f"{'function':<11} {'entries':>9} {'build s':>8} {'grid t/mid':>10}"
        f" {'mean t/mid':>10} {'gap bf':>9} {'off t/mid':>9} {'off rel/mid':>11}"
        f" {'KiB':>6}"
    )
    print(f"tables in {folder}; torch threads {args.threads}, jobs {args.jobs}")
    print(header)
    for key in keys:
        info = infos[key]
        codes = torch.from_numpy(read_table(folder, info).codes.astype(np.int64))
        build_s = seconds.get(key, info.extra.get("build_seconds", float("nan")))
        summed, mean = grid_ratios(key, info, codes)
        gap = brute_gap(key, info, codes, args.sample, seed=1)
        off_t, off_rel = off_grid(key, info, cell, scaled, seed=2)
        size = (folder / info.file).stat().st_size / 1024
        print(
            f"{key:<11} {info.entries:>9} {build_s:>8.1f} {summed:>10.4f}"
            f" {mean:>10.4f} {gap:>9.2e} {off_t:>9.4f} {off_rel:>11.4f} {size:>6.0f}"
        )
    unary = [seconds[k] for k in seconds if k != MUL_KEY]
    if seconds:
        print(f"build wall time, all requested tables: {total:.1f} s")
        print(f"sum of one-input table build times: {sum(unary):.1f} s")
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    loads = []
    for _ in range(5):
        start = time.perf_counter()
        load_branching_points(folder)
        loads.append(time.perf_counter() - start)
    print(f"folder size {size:.2f} MiB; load {min(loads) * 1000:.0f} ms (best of 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
