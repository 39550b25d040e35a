"""What a run leaves behind: VNN-COMP result files and JSON reports.

A result file holds the verdict on its first line; after ``sat`` it holds the
witness as one parenthesised list of ``(X_i value)`` pairs for every flattened
input, then ``(Y_j value)`` for every flattened output (VNN-LIB 1.0 form, read by
the VNN-COMP scorer). Values are written with ``repr(float)``, the shortest text
that reads back to the same float64.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from genbab.errors import GenbabError
from genbab.result import Counterexample, Result, Verdict

logger = logging.getLogger(__name__)

# Above this many numbers, a JSON report points at the result file instead of
# repeating the witness.
REPORT_WITNESS_LIMIT = 10_000


class ResultFileError(GenbabError):
    """A result file does not follow the VNN-COMP format."""


def checked_result(result: Result) -> Result:
    """The result as it may be reported: a ``sat`` needs a finite witness.

    A ``sat`` verdict without a counterexample, or with NaN/inf values in it,
    would be scored as wrong; it is turned into ``unknown`` with a warning.

    Args:
        result: What verify returned.

    Returns:
        ``result`` itself, or an ``unknown`` copy saying why.
    """
    if result.verdict != Verdict.SAT:
        return result
    cex = result.counterexample
    problem = ""
    if cex is None:
        problem = "sat without a counterexample"
    elif np.asarray(cex.x).size == 0 or np.asarray(cex.y).size == 0:
        problem = "sat with an empty counterexample"
    elif not (np.isfinite(cex.x).all() and np.isfinite(cex.y).all()):
        problem = "sat with a non-finite counterexample"
    if not problem:
        return result
    logger.warning("reporting unknown: %s", problem)
    message = f"{problem} (reported as unknown)"
    if result.message:
        message += f"; {result.message}"
    return dataclasses.replace(
        result, verdict=Verdict.UNKNOWN, counterexample=None, message=message
    )


def format_result_file(result: Result) -> str:
    """The text of a VNN-COMP result file.

    Args:
        result: A result that passed :func:`checked_result`.

    Returns:
        ``"<verdict>\\n"``, followed for ``sat`` by the witness lines
        ``((X_0 v)``, `` (X_1 v)``, ..., `` (Y_m v))``.
    """
    verdict = Verdict(result.verdict)
    if verdict != Verdict.SAT:
        return f"{verdict}\n"
    cex = result.counterexample
    assert cex is not None, "checked_result lets no sat without witness through"
    x = np.asarray(cex.x, dtype=np.float64).reshape(-1).tolist()
    y = np.asarray(cex.y, dtype=np.float64).reshape(-1).tolist()
    pairs = [f"(X_{i} {v!r})" for i, v in enumerate(x)]
    pairs += [f"(Y_{j} {v!r})" for j, v in enumerate(y)]
    return f"{verdict}\n(" + "\n ".join(pairs) + ")\n"


def write_result_file(path: str | os.PathLike, result: Result) -> Verdict:
    """Write a VNN-COMP result file atomically (a reader never sees half a file).

    Args:
        path: Where to write; parent folders are created.
        result: What to write; passed through :func:`checked_result` first.

    Returns:
        The verdict written (``unknown`` where a ``sat`` had no usable witness).
    """
    result = checked_result(result)
    _write_atomic(Path(path), format_result_file(result))
    return Verdict(result.verdict)


def read_result_file(
    path: str | os.PathLike,
) -> tuple[Verdict, np.ndarray | None, np.ndarray | None]:
    """Read a result file back, checking the format the VNN-COMP scorer expects.

    Args:
        path: A file written by :func:`write_result_file` (or any VNN-COMP tool).

    Returns:
        ``(verdict, x, y)``; for ``sat``, ``x`` ``[num_inputs]`` and ``y``
        ``[num_outputs]`` float64 arrays, else ``None`` for both.

    Raises:
        ResultFileError: Unknown verdict, or a witness out of order or malformed.
    """
    text = Path(path).read_text(encoding="utf-8")
    first, _, rest = text.partition("\n")
    try:
        verdict = Verdict(first.strip())
    except ValueError:
        raise ResultFileError(f"{path}:1: unknown verdict '{first.strip()}'") from None
    if verdict != Verdict.SAT:
        return verdict, None, None
    body = rest.replace("\n", "").strip()
    if not (body.startswith("(") and body.endswith(")")):
        raise ResultFileError(f"{path}: witness must be one parenthesised list")
    values: dict[str, list[float]] = {"X": [], "Y": []}
    for item in body[1:-1].split(")"):
        item = item.strip()
        if not item:
            continue
        name, _, number = item.lstrip("(").partition(" ")
        kind, _, index = name.partition("_")
        if kind not in values or index != str(len(values[kind])):
            raise ResultFileError(f"{path}: unexpected witness entry '{item}'")
        value = float(number)
        if not math.isfinite(value):
            raise ResultFileError(f"{path}: non-finite value in '{item}'")
        values[kind].append(value)
    if not values["X"] or not values["Y"]:
        raise ResultFileError(f"{path}: witness needs X and Y values")
    return verdict, np.array(values["X"]), np.array(values["Y"])


def build_report(
    result: Result,
    *,
    model_path: str | os.PathLike,
    property_path: str | os.PathLike,
    timeout: float | None,
    config: Mapping[str, Any] | None,
    result_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """A JSON-ready summary of one verification run.

    Args:
        result: The (checked) result.
        model_path: Path of the ONNX model.
        property_path: Path of the VNN-LIB property.
        timeout: The time limit in seconds, if any.
        config: The options used (``config_to_dict``), if they could be loaded.
        result_file: Where the VNN-COMP result file was written, if anywhere.

    Returns:
        A mapping of plain JSON values (non-finite floats become strings).
    """
    report: dict[str, Any] = {
        "verdict": str(result.verdict),
        "seconds": result.seconds,
        "message": result.message,
        "stats": result.stats,
        "model": str(model_path),
        "property": str(property_path),
        "timeout": timeout,
        "config": config,
        "genbab_version": genbab_version(),
        "result_file": str(result_file) if result_file is not None else None,
        "counterexample": None,
    }
    if result.counterexample is not None:
        report["counterexample"] = _witness_report(result.counterexample, result_file)
    return jsonable(report)


def write_report_json(path: str | os.PathLike, report: Mapping[str, Any]) -> None:
    """Write a report from :func:`build_report` as indented JSON, atomically."""
    text = json.dumps(jsonable(report), indent=2, allow_nan=False)
    _write_atomic(Path(path), text + "\n")


def jsonable(value: Any) -> Any:
    """``value`` with numpy and torch numbers and arrays turned into JSON types.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``;
    anything else unknown becomes its ``str``.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic | np.ndarray):
        return jsonable(value.tolist())
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # a torch tensor
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def genbab_version() -> str:
    """The installed genbab version, or ``"unknown"`` when not installed."""
    try:
        return metadata.version("genbab")
    except metadata.PackageNotFoundError:
        return "unknown"


def _witness_report(
    cex: Counterexample, result_file: str | os.PathLike | None
) -> dict[str, Any]:
    x = np.asarray(cex.x, dtype=np.float64).reshape(-1)
    y = np.asarray(cex.y, dtype=np.float64).reshape(-1)
    entry: dict[str, Any] = {
        "case": cex.case,
        "clause": cex.clause,
        "num_inputs": int(x.size),
        "num_outputs": int(y.size),
        "result_file": str(result_file) if result_file is not None else None,
    }
    if result_file is None or x.size + y.size <= REPORT_WITNESS_LIMIT:
        entry["x"] = x.tolist()
        entry["y"] = y.tolist()
    return entry


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
