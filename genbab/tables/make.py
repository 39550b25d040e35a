"""Which tables to build, building them into a folder, and checking a folder.

This is what ``genbab tables build`` and ``genbab tables show`` call.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbab.tables.build import (
    BuiltTable,
    SearchOptions,
    UnaryObjective,
    build_mul,
    build_unary,
)
from genbab.tables.cells import cell_offsets, symmetric
from genbab.tables.grid import Grid
from genbab.tables.keys import ALL_KEYS, MUL_KEY
from genbab.tables.objective import interval_area, mul_volume
from genbab.tables.store import (
    FORMAT_VERSION,
    TableError,
    TableInfo,
    read_manifest,
    read_table,
    write_table,
)

__all__ = [
    "ALL_KEYS",
    "GENERATOR_VERSION",
    "POSITIVE_FLOOR",
    "TableSpec",
    "TableStatus",
    "build_one",
    "build_tables",
    "folder_status",
    "format_build_summary",
    "format_folder",
    "needs_build",
    "probe_areas",
    "stale_specs",
    "table_specs",
]

logger = logging.getLogger(__name__)

#: Version of the objective and search; recorded in the manifest (provenance).
GENERATOR_VERSION = 1

#: Functions defined for positive inputs only, and the lowest grid point used.
POSITIVE_ONLY = frozenset({"reciprocal", "sqrt"})
POSITIVE_FLOOR = 1e-6

# Intervals whose default-relaxation areas are recorded with each table: if they
# change, genbab's relaxations changed since the build and the table is stale.
_PROBES = ((-3.0, -1.0), (-1.3, 0.4), (-0.2, 2.7), (0.5, 4.0))
_POSITIVE_PROBES = ((0.01, 0.5), (0.3, 2.0), (1.0, 4.5))
_MUL_PROBES = ((-2.0, 1.0, -1.0, 3.0), (0.5, 2.0, -3.0, -1.0))


@dataclass(frozen=True)
class TableSpec:
    """One table to build.

    Attributes:
        key: Table key.
        grid: Grid of the (split) input.
        grid_y: Grid of the other input of ``mul``; None for one-input tables.
    """

    key: str
    grid: Grid
    grid_y: Grid | None = None

    @property
    def kind(self) -> str:
        """``"unary"`` or ``"mul"``."""
        return "mul" if self.key == MUL_KEY else "unary"

    @property
    def entries(self) -> int:
        """Number of table entries."""
        if self.grid_y is None:
            return self.grid.pairs
        return self.grid.pairs * self.grid_y.pairs


@dataclass(frozen=True)
class TableStatus:
    """A table listed in a folder's manifest, and whether it can be used.

    Attributes:
        info: The manifest entry.
        problem: Why it cannot be used or is out of date; None if fine.
        usable: Whether the lookup would use it (a stale table still is).
    """

    info: TableInfo
    problem: str | None
    usable: bool


def table_specs(
    keys: Sequence[str],
    range_l: float = -5.0,
    range_u: float = 5.0,
    step: float = 0.01,
    step_2d: float = 0.2,
) -> list[TableSpec]:
    """The tables for ``keys`` on the given range.

    ``reciprocal`` and ``sqrt`` start at ``max(range_l, POSITIVE_FLOOR)``; ``mul``
    uses ``step_2d`` on both inputs.

    Raises:
        ValueError: Unknown key, or a range or step that gives no grid.
    """
    unknown = [k for k in keys if k not in ALL_KEYS]
    if unknown:
        raise ValueError(
            f"no table for {', '.join(unknown)} (known: {', '.join(ALL_KEYS)})"
        )
    if not range_l < range_u:
        raise ValueError(
            f"the range's lower end {range_l:g} must be below its upper end {range_u:g}"
        )
    specs = []
    for key in keys:
        if key == MUL_KEY:
            grid = Grid(range_l, range_u, step_2d)
            specs.append(TableSpec(key, grid, grid))
            continue
        lower = max(range_l, POSITIVE_FLOOR) if key in POSITIVE_ONLY else range_l
        if lower >= range_u:
            raise ValueError(
                f"{key} needs a range above {POSITIVE_FLOOR:g}, got upper end"
                f" {range_u:g}"
            )
        specs.append(TableSpec(key, Grid(lower, range_u, step)))
    return specs


def build_one(
    spec: TableSpec,
    options: SearchOptions | None = None,
    progress: Callable[[float], None] | None = None,
) -> BuiltTable:
    """Build (but do not write) one table."""
    if spec.grid_y is not None:
        return build_mul(spec.grid, spec.grid_y, options, progress)
    return build_unary(spec.key, spec.grid, options, progress)


def build_tables(
    specs: Sequence[TableSpec],
    directory: str | Path,
    options: SearchOptions | None = None,
    jobs: int = 1,
    progress: Callable[[str, float], None] | None = None,
    done: Callable[[TableInfo], None] | None = None,
) -> list[TableInfo]:
    """Build tables and write them (with the manifest) into ``directory``.

    Args:
        specs: The tables.
        directory: Target folder (created if needed).
        options: Search options.
        jobs: Worker processes; above 1, tables are built in parallel, each
            worker with one torch thread.
        progress: ``progress(key, fraction)`` while a table is built (only
            with ``jobs == 1``; otherwise once per finished table).
        done: Called with each table's manifest entry once it is written.

    Returns:
        The manifest entries written, in the order finished.
    """
    folder = Path(directory)
    opts = options or SearchOptions()
    tell = progress or (lambda key, fraction: None)
    written = []

    def record(spec: TableSpec, built: BuiltTable) -> None:
        info = write_table(folder, _info(spec, built, opts), _codes(built))
        logger.info(
            "%s: %d entries in %.1f s -> %s",
            spec.key, spec.entries, built.seconds, folder / info.file,
        )  # fmt: skip
        written.append(info)
        tell(spec.key, 1.0)
        if done is not None:
            done(info)

    if jobs <= 1 or len(specs) <= 1:
        for spec in specs:
            built = build_one(spec, opts, lambda f, key=spec.key: tell(key, f))
            record(spec, built)
        return written
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {pool.submit(_build_in_worker, spec, opts): spec for spec in specs}
        for future in concurrent.futures.as_completed(futures):
            record(futures[future], future.result())
    return written


def _build_in_worker(spec: TableSpec, options: SearchOptions) -> BuiltTable:
    torch.set_num_threads(1)
    return build_one(spec, options)


def _codes(built: BuiltTable) -> np.ndarray:
    return built.codes.numpy().astype(np.uint16)


def _info(spec: TableSpec, built: BuiltTable, opts: SearchOptions) -> TableInfo:
    """Manifest entry (provenance and quality figures) of a freshly built table."""
    from genbab.runner.results import genbab_version

    search: dict[str, Any] = asdict(opts)
    if spec.grid_y is None:
        search["cell_offsets"] = list(cell_offsets(spec.key, spec.grid))
        search["mirrored"] = opts.mirror and symmetric(spec.key, spec.grid)
        search["end_nudge"] = UnaryObjective(spec.key, spec.grid).nudge
    mid = built.midpoint_loss
    finite = torch.isfinite(mid) & torch.isfinite(built.loss) & (mid > 0)
    ratio = float(built.loss[finite].sum() / mid[finite].sum()) if finite.any() else 1
    mean = float((built.loss[finite] / mid[finite]).mean()) if finite.any() else 1
    extra = {
        "generator": {
            "genbab": genbab_version(),
            "generator_version": GENERATOR_VERSION,
            "torch": torch.__version__,
            "objective": "area (volume) between the default upper and lower"
            " relaxations, summed over both children",
            "search": search,
        },
        "probe": probe_areas(spec),
        "build_seconds": round(built.seconds, 2),
        "torch_threads": built.threads,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loss_ratio": round(ratio, 6),
        "mean_loss_ratio": round(mean, 6),
    }
    return TableInfo(
        spec.key, spec.kind, f"{spec.key}.npz", spec.grid, spec.grid_y,
        spec.entries, extra,
    )  # fmt: skip


def probe_areas(spec: TableSpec) -> list[float]:
    """Default-relaxation areas of a few fixed intervals (or boxes) of a table."""
    with torch.no_grad():
        if spec.key == MUL_KEY:
            box = torch.tensor(_MUL_PROBES, dtype=torch.float64).T
            return [float(v) for v in mul_volume(*box)]
        probes = _POSITIVE_PROBES if spec.key in POSITIVE_ONLY else _PROBES
        ends = torch.tensor(probes, dtype=torch.float64).T
        return [float(v) for v in interval_area(spec.key, ends[0], ends[1])]


def folder_status(directory: str | Path) -> list[TableStatus]:
    """Every table a folder's manifest lists, checked as the lookup would.

    A table is also flagged (but still usable) when genbab's relaxations have
    changed since it was built (its probe areas differ).

    Raises:
        TableError: The manifest itself is missing or unusable.
    """
    folder = Path(directory)
    out = []
    for key, info in read_manifest(folder).items():
        try:
            read_table(folder, info)
        except TableError as exc:
            out.append(TableStatus(info, str(exc), usable=False))
            continue
        out.append(TableStatus(info, _staleness(key, info), usable=True))
    return out


def _staleness(key: str, info: TableInfo) -> str | None:
    if key not in ALL_KEYS:
        return f"unknown function '{key}' (never looked up)"
    spec = TableSpec(key, info.grid, info.grid_y)
    recorded = info.extra.get("probe")
    current = probe_areas(spec)
    if not isinstance(recorded, list) or len(recorded) != len(current):
        return "no probe areas recorded; cannot tell whether it is current"
    for old, new in zip(recorded, current, strict=True):
        if not math.isclose(float(old), new, rel_tol=1e-9, abs_tol=1e-15):
            return "stale: genbab's relaxation changed since the build"
    return None


def needs_build(directory: str | Path, spec: TableSpec) -> str | None:
    """Why ``spec`` must be (re)built in ``directory``; None if it is current.

    Missing, unreadable, of another format version, built for another range or
    step, or built with other relaxations.
    """
    folder = Path(directory)
    try:
        infos = read_manifest(folder)
    except TableError as exc:
        return str(exc)
    info = infos.get(spec.key)
    if info is None:
        return f"{folder}: no {spec.key} table"
    if (info.grid, info.grid_y) != (spec.grid, spec.grid_y):
        return f"{folder / info.file}: built for another range or step"
    try:
        read_table(folder, info)
    except TableError as exc:
        return str(exc)
    return _staleness(spec.key, info)


def stale_specs(directory: str | Path, specs: Sequence[TableSpec]) -> list[TableSpec]:
    """The specs that :func:`needs_build` says to (re)build; logs why."""
    todo = []
    for spec in specs:
        reason = needs_build(directory, spec)
        if reason is not None:
            logger.info("%s: rebuilding (%s)", spec.key, reason)
            todo.append(spec)
    return todo


def format_build_summary(infos: Sequence[TableInfo], seconds: float) -> str:
    """Table of what a build wrote: entries, seconds, loss ratio to midpoints."""
    lines = [f"{'function':<11} {'entries':>9} {'seconds':>8} {'loss/midpoint':>13}"]
    for info in infos:
        lines.append(
            f"{info.key:<11} {info.entries:>9} {info.extra['build_seconds']:>8.1f}"
            f" {info.extra['loss_ratio']:>13.4f}"
        )
    lines.append(f"{'total':<11} {sum(i.entries for i in infos):>9} {seconds:>8.1f}")
    return "\n".join(lines)


def format_folder(folder: Path, statuses: Sequence[TableStatus]) -> str:
    """Listing of a folder's tables: range, step, entries, version, size, status."""
    lines = [
        f"{folder} (format version {FORMAT_VERSION})",
        f"{'function':<11} {'range':<18} {'step':>6} {'entries':>9} {'version':>7}"
        f" {'size':>9}  status",
    ]
    for status in statuses:
        info, grid = status.info, status.info.grid
        span = f"[{grid.range_l:g}, {grid.range_u:g}]"
        lines.append(
            f"{info.key:<11} {span:<18} {grid.step:>6g} {info.entries:>9}"
            f" {FORMAT_VERSION:>7} {_size(info.extra.get('bytes')):>9}"
            f"  {status.problem or 'ok'}"
        )
    return "\n".join(lines)


def _size(size: Any) -> str:
    if not isinstance(size, int):
        return "?"
    return f"{size / 1024:.0f} KiB" if size < 1 << 20 else f"{size / 2**20:.1f} MiB"
