"""Tightness and cost of interval, CROWN and alpha-CROWN bounds on shared families.

Usage: python benchmarks/bench_bounds.py [--families a,b] [--csv FILE]
       [--instances 3] [--per-model] [--filter SUBSTR] [--alpha-iterations 50]
       [--alpha-lr 0.1] [--case-batch 32] [--memory-limit-gb 12] [--threads 1]

For the first ``--instances`` rows of each family's ``instances.csv`` (of each
model with ``--per-model``; only rows whose ONNX path contains ``--filter``),
every case of the property is bounded, ``--case-batch`` cases at a time, on the
graph the pipeline bounds (``prepare_for_bounds``), in float64 on the CPU:

* ``interval``: interval arithmetic;
* ``crown``: CROWN intermediate bounds, then CROWN on the property's rows (kept
  at least as tight as the interval bound, as ``bound_objective`` does);
* ``alpha``: alpha-CROWN from those intermediate bounds, run for all its
  iterations: the rows get thresholds no bound reaches, so no case stops early
  as proven (the margins reported are still those of the real thresholds).

The margin of a case is its worst clause margin (``Objective.clause_margins``:
> 0 means the case is proven). The table gives, per family, the mean margin of
each method over all cases, the mean seconds per instance (alpha-CROWN's time
includes its CROWN intermediate bounds), how many cases alpha-CROWN made
tighter than CROWN (by more than ``1e-6 (1 + |margin|)``) or looser (should be 0),
and the same count over all rows of the properties (a case's margin is set by its
worst clause, which may already be exact, e.g. a linear output). Only the first
``--max-cases`` cases of each property are bounded (nn4sys has up to 750).
Families named in ``--interval-intermediate`` start CROWN and alpha-CROWN from
interval intermediate bounds (column "intermediate"). Rows that fail (an error,
or memory past ``--memory-limit-gb``) are listed under the table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import resource
import sys
import time
import warnings
from pathlib import Path

import torch
from known import FAMILIES, read_instances

from genbab.bounds import Box, Engine, build_objective, output_interval_lower
from genbab.bounds.alpha import optimize_bounds
from genbab.bounds.objective import Objective
from genbab.bounds.rewrite import prepare_for_bounds
from genbab.config import BoundsConfig
from genbab.errors import GenbabError
from genbab.model import load_model
from genbab.spec import read_vnnlib

DT = torch.float64
METHODS = ("interval", "crown", "alpha")


@dataclasses.dataclass
class Row:
    """Accumulated results of one family."""

    instances: int = 0
    cases: int = 0
    margins: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {m: [] for m in METHODS}
    )
    seconds: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(METHODS, 0.0)
    )
    tighter: int = 0
    looser: int = 0
    rows: int = 0
    rows_tighter: int = 0
    rows_looser: int = 0
    crown_intermediate: bool = True
    failures: list[str] = dataclasses.field(default_factory=list)


def _unreachable(objective: Objective) -> Objective:
    """The same rows with thresholds far above every bound (no early proof)."""
    finite = torch.isfinite(objective.rhs)
    rhs = torch.where(finite, objective.rhs + 1e12, objective.rhs)
    return dataclasses.replace(objective, rhs=rhs)


def bound_instance(
    onnx_path,
    vnnlib_path,
    config: BoundsConfig,
    crown_intermediate: bool = True,
    case_batch: int = 32,
    max_cases: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Margins ``[cases]`` and seconds of each method on one instance.

    Cases are bounded ``case_batch`` at a time (as the pipeline does), only the
    first ``max_cases`` of them if that is positive. Besides the margins per case
    (keys of ``METHODS``), ``"rows"`` holds ``[2, rows]``: the CROWN and
    alpha-CROWN lower bounds of every real row. With
    ``crown_intermediate`` False, CROWN and alpha-CROWN start from the interval
    bounds of the nonlinear nodes' inputs (CROWN only on the rows).
    """
    graph = load_model(onnx_path)
    prop = read_vnnlib(vnnlib_path, graph.num_inputs, graph.num_outputs)
    graph = prepare_for_bounds(graph).to("cpu", DT)
    engine = Engine(graph, DT)
    margins: dict[str, list[torch.Tensor]] = {m: [] for m in (*METHODS, "rows")}
    seconds = dict.fromkeys(METHODS, 0.0)
    cases = list(prop.cases)[: max_cases or None]
    for start in range(0, len(cases), case_batch):
        part = cases[start : start + case_batch]
        m, s = _bound_cases(engine, part, config, crown_intermediate)
        for k in METHODS:
            margins[k].append(m[k])
            seconds[k] += s[k]
        margins["rows"].append(m["rows"])
    return {k: torch.cat(v, -1) for k, v in margins.items()}, seconds


def _bound_cases(
    engine: Engine, cases: list, config: BoundsConfig, crown_intermediate: bool
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Margins ``[len(cases)]`` and seconds of each method on a batch of cases."""
    graph = engine.graph
    shape = graph.input_shape
    box = Box(
        torch.stack([torch.tensor(c.lower, dtype=DT).reshape(shape) for c in cases]),
        torch.stack([torch.tensor(c.upper, dtype=DT).reshape(shape) for c in cases]),
    )
    objective = build_objective(cases, DT, "cpu")
    seconds = {}
    with torch.no_grad():
        t0 = time.perf_counter()
        ibounds = engine.interval(box)
        ilow = output_interval_lower(objective.coeffs, *ibounds[graph.output_name])
        seconds["interval"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        bounds = engine.crown_bounds(box) if crown_intermediate else ibounds
        t_intermediate = time.perf_counter() - t0
        ilow2 = output_interval_lower(objective.coeffs, *bounds[graph.output_name])
        clow = engine.objective_lower(objective.coeffs, box, bounds)
        clow = torch.maximum(clow, ilow2)
        seconds["crown"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    alow, _ = optimize_bounds(
        engine, box, bounds, _unreachable(objective), config, start_lower=clow
    )
    seconds["alpha"] = t_intermediate + time.perf_counter() - t0
    margins = {}
    for name, low in (("interval", ilow), ("crown", clow), ("alpha", alow)):
        margins[name] = objective.clause_margins(low).min(-1).values
    real = torch.isfinite(objective.rhs)
    margins["rows"] = torch.stack([clow[real], alow[real]])
    return margins, seconds


def _warm_up(instance, config: BoundsConfig, crown_intermediate: bool) -> None:
    """Bound an instance once, untimed, with two alpha steps."""
    short = dataclasses.replace(
        config, alpha_iterations=min(config.alpha_iterations, 2)
    )
    try:
        bound_instance(instance[0], instance[1], short, crown_intermediate)
    except (GenbabError, MemoryError, RuntimeError):
        pass  # reported by the timed run


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{sum(values) / len(values):.4g}"


def print_table(rows: dict[str, Row]) -> None:
    header = [
        "family", "inst", "cases", "interval", "s", "CROWN", "s", "alpha-CROWN", "s",
        "alpha tighter", "alpha looser", "rows tighter", "rows looser",
        "intermediate",
    ]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for family, r in rows.items():
        n = max(r.instances, 1)
        cells = [family, str(r.instances), str(r.cases)]
        for m in METHODS:
            cells += [_fmt(r.margins[m]), f"{r.seconds[m] / n:.2f}"]
        cells += [f"{r.tighter}/{r.cases}", str(r.looser)]
        cells += [f"{r.rows_tighter}/{r.rows}", str(r.rows_looser)]
        cells.append("CROWN" if r.crown_intermediate else "interval")
        print("| " + " | ".join(cells) + " |")
    for family, r in rows.items():
        for failure in r.failures:
            print(f"- {family}: {failure}")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument(
        "--csv",
        action="append",
        default=[],
        help="also an instances.csv of its own (paths relative to its folder), "
        "reported under its file name (repeatable)",
    )
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument(
        "--per-model", action="store_true", help="the first N rows of each model"
    )
    parser.add_argument("--filter", default="", help="substring of the ONNX path")
    parser.add_argument("--alpha-iterations", type=int, default=50)
    parser.add_argument("--alpha-lr", type=float, default=0.1)
    parser.add_argument("--case-batch", type=int, default=32)
    parser.add_argument(
        "--max-cases", type=int, default=32, help="cases per property (0: all)"
    )
    parser.add_argument("--memory-limit-gb", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--interval-intermediate",
        default="cgan_2023",
        help="families whose CROWN / alpha-CROWN use interval intermediate bounds "
        "(cGAN: CROWN intermediate bounds of its deconvolutions need > 10 GB)",
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="do not bound each family's first instance once untimed first",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args()


def _read_csv(path: Path) -> list[tuple[Path, Path]]:
    with open(path, encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and r[0].strip()]
    return [(path.parent / r[0].strip(), path.parent / r[1].strip()) for r in rows]


def _select(source: str, args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """The instances to run from a family name or a csv path."""
    if source.endswith(".csv"):
        rows = _read_csv(Path(source))
    else:
        rows = [(o, v) for o, v, _ in read_instances(source)]
    rows = [r for r in rows if args.filter in str(r[0])]
    if not args.per_model:
        return rows[: args.instances]
    taken: dict[Path, int] = {}
    chosen = []
    for onnx_path, vnnlib_path in rows:
        if taken.get(onnx_path, 0) < args.instances:
            taken[onnx_path] = taken.get(onnx_path, 0) + 1
            chosen.append((onnx_path, vnnlib_path))
    return chosen


def _run_source(source: str, args, config: BoundsConfig, row: Row) -> None:
    """Bound the selected instances of one family (or csv) into ``row``."""
    chosen = _select(source, args)
    if chosen and not args.no_warmup:  # one-time costs: tables, vmap set-up
        _warm_up(chosen[0], config, row.crown_intermediate)
    for onnx_path, vnnlib_path in chosen:
        label = f"{onnx_path.name} {vnnlib_path.name}"
        try:
            margins, seconds = bound_instance(
                onnx_path, vnnlib_path, config, row.crown_intermediate,
                args.case_batch, args.max_cases,
            )  # fmt: skip
        except (GenbabError, MemoryError, RuntimeError) as exc:
            row.failures.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
            print(f"{source} {label}: FAILED {exc}"[:300], file=sys.stderr)
            continue
        row.instances += 1
        row.cases += margins["crown"].numel()
        for m in METHODS:
            row.margins[m] += margins[m].tolist()
            row.seconds[m] += seconds[m]
        gain = margins["alpha"] - margins["crown"]
        tol = 1e-6 * (1 + margins["crown"].abs())
        row.tighter += int((gain > tol).sum())
        row.looser += int((gain < -tol).sum())
        crown_rows, alpha_rows = margins["rows"]
        tol = 1e-6 * (1 + crown_rows.abs())
        row.rows += crown_rows.numel()
        row.rows_tighter += int((alpha_rows - crown_rows > tol).sum())
        row.rows_looser += int((alpha_rows - crown_rows < -tol).sum())
        summary = ", ".join(
            f"{m} {margins[m].mean().item():.4g} ({seconds[m]:.1f}s)" for m in METHODS
        )
        print(f"{source} {label}: {summary}", file=sys.stderr, flush=True)


def main() -> int:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    limit = int(args.memory_limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    config = BoundsConfig(
        alpha_iterations=args.alpha_iterations, alpha_lr=args.alpha_lr
    )
    rows: dict[str, Row] = {}
    cheap = set(args.interval_intermediate.split(","))
    sources = [f for f in args.families.split(",") if f] + args.csv
    for source in sources:
        name = Path(source).name if source.endswith(".csv") else source
        row = rows.setdefault(name, Row(crown_intermediate=source not in cheap))
        _run_source(source, args, config, row)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
