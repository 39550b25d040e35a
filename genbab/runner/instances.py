"""Batches: reading an ``instances.csv``, running every row, resuming.

``instances.csv`` has no header; each line is ``onnx,vnnlib,timeout`` with paths
relative to the csv's folder. A run writes into its output folder, per instance,
``<name>.result`` (VNN-COMP result file) and ``<name>.json`` (report), and after
every instance appends a row to ``results.csv`` and rewrites
``vnncomp_results.csv`` (the harness's six columns), so an interrupted run loses
nothing it finished and a re-run skips what is already done.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from genbab.errors import GenbabError
from genbab.result import Result, Verdict
from genbab.runner.execute import Executor, one_line
from genbab.runner.results import build_report, write_report_json, write_result_file

logger = logging.getLogger(__name__)

RESULTS_CSV = "results.csv"
HARNESS_CSV = "vnncomp_results.csv"
RESULTS_COLUMNS = ("instance", "model", "property", "verdict", "seconds", "message")
HARNESS_COLUMNS = ("category", "onnx", "vnnlib", "prepare_time", "result", "runtime")
# Verdicts a re-run computes again unless told otherwise.
DEFAULT_RETRY = frozenset({Verdict.ERROR})

_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 150


class InstancesError(GenbabError):
    """An ``instances.csv`` cannot be read (missing, or a malformed line)."""


@dataclass(frozen=True)
class Instance:
    """One row of an ``instances.csv``.

    Attributes:
        row: Line number in the csv (1-based).
        name: Unique, filesystem-safe name, from the model and property stems.
        onnx: The model path as written in the csv.
        vnnlib: The property path as written in the csv.
        model_path: The model path resolved against the csv's folder.
        property_path: The property path resolved against the csv's folder.
        timeout: Seconds allowed, as written in the csv.
    """

    row: int
    name: str
    onnx: str
    vnnlib: str
    model_path: Path
    property_path: Path
    timeout: float


@dataclass(frozen=True)
class Record:
    """One row of ``results.csv``: the outcome of one instance."""

    instance: str
    model: str
    property: str
    verdict: Verdict
    seconds: float
    message: str


@dataclass
class BatchSummary:
    """What :func:`run_batch` did.

    Attributes:
        records: The latest record of each selected instance that has one,
            in the order of the instances.
        ran: Instances verified in this run.
        skipped: Instances skipped because results.csv already had them.
    """

    records: list[Record]
    ran: int = 0
    skipped: int = 0

    def counts(self) -> dict[Verdict, int]:
        """Number of instances per verdict (every verdict, zeros included)."""
        counter = Counter(record.verdict for record in self.records)
        return {verdict: counter.get(verdict, 0) for verdict in Verdict}

    @property
    def total_seconds(self) -> float:
        """Sum of the instances' seconds."""
        return sum(record.seconds for record in self.records)


def read_instances(csv_path: str | os.PathLike) -> list[Instance]:
    """Read an ``instances.csv``; blank lines and ``#`` comments are skipped.

    Args:
        csv_path: The file; relative paths inside are resolved against its folder.

    Returns:
        The instances in file order, with unique names.

    Raises:
        InstancesError: Missing file, a line without three fields, or a timeout
            that is not a positive number (the message names file and line).
    """
    path = Path(csv_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InstancesError(f"cannot read {path}: {exc.strerror}") from None
    base = path.parent
    instances: list[Instance] = []
    taken: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [field.strip() for field in next(csv.reader([line]))]
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise InstancesError(
                f"{path}:{number}: expected 'onnx,vnnlib,timeout', got '{line.strip()}'"
            )
        onnx, vnnlib, raw_timeout = fields
        timeout = _parse_timeout(raw_timeout, f"{path}:{number}")
        name = instance_name(onnx, vnnlib)
        if name.lower() in taken:  # case-insensitive file systems too
            name = f"{name}-{number}"
        taken.add(name.lower())
        instances.append(
            Instance(
                row=number,
                name=name,
                onnx=onnx,
                vnnlib=vnnlib,
                model_path=base / onnx,
                property_path=base / vnnlib,
                timeout=timeout,
            )
        )
    return instances


def instance_name(onnx: str, vnnlib: str) -> str:
    """A filesystem-safe name ``<model stem>__<property stem>``.

    Compression suffixes and ``.onnx``/``.vnnlib`` are dropped; characters other
    than letters, digits, ``.``, ``_`` and ``-`` become ``_``; very long names are
    shortened with a hash of the full name.
    """
    raw = f"{_stem(onnx, '.onnx')}__{_stem(vnnlib, '.vnnlib')}"
    name = _UNSAFE.sub("_", raw).strip("._") or "instance"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(raw.encode("utf-8")).hexdigest()[:10]
        name = f"{name[: _MAX_NAME - 11]}-{digest}"
    return name


def select_instances(
    instances: Iterable[Instance],
    *,
    contains: str | None = None,
    limit: int | None = None,
) -> list[Instance]:
    """Instances whose onnx or vnnlib path contains ``contains``, at most ``limit``."""
    chosen = [
        inst
        for inst in instances
        if not contains or contains in inst.onnx or contains in inst.vnnlib
    ]
    return chosen if limit is None else chosen[:limit]


def effective_timeout(
    timeout: float, scale: float = 1.0, max_timeout: float | None = None
) -> float:
    """The csv's timeout times ``scale``, capped at ``max_timeout``."""
    scaled = timeout * scale
    return scaled if max_timeout is None else min(scaled, max_timeout)


def read_results_table(path: str | os.PathLike) -> dict[str, Record]:
    """The latest record per instance in a ``results.csv`` (empty if none).

    Rows that cannot be read (e.g. a line cut short by a crash) are skipped.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    records: dict[str, Record] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                record = Record(
                    instance=row["instance"],
                    model=row["model"],
                    property=row["property"],
                    verdict=Verdict(row["verdict"]),
                    seconds=float(row["seconds"]),
                    message=row["message"] or "",
                )
            except (KeyError, TypeError, ValueError):
                logger.warning("%s: skipping unreadable row %r", path, row)
                continue
            records[record.instance] = record
    return records


def append_result_row(path: str | os.PathLike, record: Record) -> None:
    """Append one record to ``results.csv`` (header first if new), synced to disk."""
    path = Path(path)
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(RESULTS_COLUMNS)
        writer.writerow(
            [
                record.instance,
                record.model,
                record.property,
                str(record.verdict),
                f"{record.seconds:.3f}",
                one_line(record.message),
            ]
        )
        f.flush()
        os.fsync(f.fileno())


def write_harness_csv(
    path: str | os.PathLike, category: str, records: Iterable[Record]
) -> None:
    """Write the harness's ``category,onnx,vnnlib,prepare_time,result,runtime``.

    No header, like the VNN-COMP harness; ``prepare_time`` is 0 (genbab has no
    separate preparation step).
    """
    tmp = Path(f"{path}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for record in records:
            writer.writerow(
                [
                    category,
                    record.model,
                    record.property,
                    "0",
                    str(record.verdict),
                    f"{record.seconds:.3f}",
                ]
            )
    os.replace(tmp, path)


def run_batch(
    instances: list[Instance],
    out_dir: str | os.PathLike,
    execute: Executor,
    *,
    category: str = "",
    timeout_scale: float = 1.0,
    max_timeout: float | None = None,
    retry: Iterable[Verdict] = DEFAULT_RETRY,
    config: Mapping[str, Any] | None = None,
    on_result: Callable[[Instance, Record | None], None] | None = None,
) -> BatchSummary:
    """Verify every instance not already done, recording each as it finishes.

    Args:
        instances: What to run, in order.
        out_dir: Folder for result files, reports and the tables (created).
        execute: Verifies one instance (see :mod:`genbab.runner.execute`).
        category: Benchmark name for the harness csv's first column.
        timeout_scale: Factor applied to each csv timeout.
        max_timeout: Cap on each (scaled) timeout, in seconds.
        retry: Verdicts found in ``results.csv`` that are computed again.
        config: Options used, copied into each JSON report.
        on_result: Called after each instance with its new record, or with
            None when it was skipped.

    Returns:
        The records of all given instances that have one, and the counts.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = out / RESULTS_CSV
    done = read_results_table(table)
    retry = frozenset(Verdict(v) for v in retry)
    summary = BatchSummary(records=[])
    for inst in instances:
        previous = done.get(inst.name)
        if (
            previous is not None
            and previous.verdict not in retry
            and (previous.model, previous.property) == (inst.onnx, inst.vnnlib)
        ):
            summary.skipped += 1
            if on_result is not None:
                on_result(inst, None)
            continue
        record = _run_one(inst, out, execute, timeout_scale, max_timeout, config)
        append_result_row(table, record)
        done[inst.name] = record
        summary.ran += 1
        _write_harness(out, category, instances, done)
        if on_result is not None:
            on_result(inst, record)
    summary.records = [done[i.name] for i in instances if i.name in done]
    _write_harness(out, category, instances, done)
    return summary


def _run_one(
    inst: Instance,
    out: Path,
    execute: Executor,
    timeout_scale: float,
    max_timeout: float | None,
    config: Mapping[str, Any] | None,
) -> Record:
    timeout = effective_timeout(inst.timeout, timeout_scale, max_timeout)
    logger.debug("%s: verifying with timeout %g s", inst.name, timeout)
    result: Result = execute(inst.model_path, inst.property_path, timeout)
    result_file = out / f"{inst.name}.result"
    verdict = write_result_file(result_file, result)
    if verdict != result.verdict:  # a sat without usable witness, now unknown
        result = dataclasses.replace(result, verdict=verdict, counterexample=None)
    report = build_report(
        result,
        model_path=inst.model_path,
        property_path=inst.property_path,
        timeout=timeout,
        config=config,
        result_file=result_file,
    )
    write_report_json(out / f"{inst.name}.json", report)
    return Record(
        instance=inst.name,
        model=inst.onnx,
        property=inst.vnnlib,
        verdict=verdict,
        seconds=result.seconds,
        message=one_line(report["message"]),
    )


def _write_harness(
    out: Path, category: str, instances: list[Instance], done: dict[str, Record]
) -> None:
    records = [done[i.name] for i in instances if i.name in done]
    write_harness_csv(out / HARNESS_CSV, category, records)


def _stem(path: str, suffix: str) -> str:
    name = PurePosixPath(path.replace("\\", "/")).name
    for compression in _COMPRESSION_SUFFIXES:
        if name.lower().endswith(compression):
            name = name[: -len(compression)]
            break
    if name.lower().endswith(suffix):
        name = name[: -len(suffix)]
    return name


def _parse_timeout(raw: str, where: str) -> float:
    try:
        timeout = float(raw)
    except ValueError:
        raise InstancesError(f"{where}: timeout '{raw}' is not a number") from None
    if not math.isfinite(timeout) or timeout <= 0:
        raise InstancesError(f"{where}: timeout must be positive, got '{raw}'")
    return timeout
