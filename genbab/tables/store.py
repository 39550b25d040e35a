"""The on-disk format of branching-point tables, and its checks.

A table folder holds ``manifest.json`` and one compressed ``<key>.npz`` per
table. The manifest::

    {"format_version": 1,
     "tables": {"sigmoid": {"file": "sigmoid.npz", "kind": "unary",
                            "grid": {"range_l": -5.0, "range_u": 5.0,
                                     "step": 0.01, "size": 1001},
                            "entries": 500500, "bytes": ..., "sha256": "...",
                            "generator": {...}, "build_seconds": ...,
                            "loss_ratio": ...}, ...}}

``kind`` is ``"unary"`` (one entry per grid pair ``i < j``, packed as in
:mod:`.grid`) or ``"mul"`` (split ``x`` of ``x * y``: entry ``ix * ny + iy`` for
the packed pair indices ``ix`` of ``x`` on ``grid`` and ``iy`` of ``y`` on
``grid_y``, ``ny`` pairs of ``y``). Each npz holds ``codes``, uint16 positions
``q`` in ``[1, 65535]`` (the split of ``[l, u]`` is ``l + q / 65536 (u - l)``),
and ``meta``, a JSON string repeating the format version, key, kind and grids,
so that a file that does not belong to its manifest entry is recognised.

Reading never guesses: a missing or unreadable file, another format version, a
content hash or meta data that does not match the manifest, or codes of the
wrong type, length or range make :func:`read_table` raise :class:`TableError`
naming the file; the caller reports it and uses midpoints for that function.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genbab.errors import GenbabError
from genbab.tables.grid import Grid

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "QUANT",
    "StoredTable",
    "TableError",
    "TableInfo",
    "read_manifest",
    "read_table",
    "write_table",
]

#: Version of the file format; files of any other version are never read.
FORMAT_VERSION = 1

MANIFEST = "manifest.json"

#: Stored positions are ``q / QUANT`` with ``q`` a uint16 in ``[1, QUANT - 1]``:
#: always strictly inside the grid interval, and 1/2 is exact.
QUANT = 65536

KINDS = ("unary", "mul")


class TableError(GenbabError):
    """A table file or manifest that cannot be used (the message names it)."""


@dataclass(frozen=True)
class TableInfo:
    """What the manifest says about one table.

    Attributes:
        key: Table key (``"sigmoid"``, ``"mul"``).
        kind: ``"unary"`` or ``"mul"``.
        file: File name inside the folder.
        grid: Grid of the (split) input.
        grid_y: Grid of the other input of ``mul``; None for unary tables.
        entries: Number of entries.
        extra: The rest of the manifest entry (hash, size, provenance).
    """

    key: str
    kind: str
    file: str
    grid: Grid
    grid_y: Grid | None
    entries: int
    extra: dict[str, Any]

    def expected_entries(self) -> int:
        """Entries implied by the grids."""
        if self.grid_y is None:
            return self.grid.pairs
        return self.grid.pairs * self.grid_y.pairs

    def meta(self) -> dict[str, Any]:
        """The identity stored inside the table file."""
        return {
            "format_version": FORMAT_VERSION,
            "key": self.key,
            "kind": self.kind,
            "grid": grid_to_dict(self.grid),
            "grid_y": None if self.grid_y is None else grid_to_dict(self.grid_y),
        }

    def to_manifest(self) -> dict[str, Any]:
        """The manifest entry."""
        out: dict[str, Any] = {"file": self.file, "kind": self.kind}
        out["grid"] = grid_to_dict(self.grid)
        if self.grid_y is not None:
            out["grid_y"] = grid_to_dict(self.grid_y)
        out["entries"] = self.entries
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class StoredTable:
    """A table read and checked: its manifest entry and its codes ``[entries]``."""

    info: TableInfo
    codes: np.ndarray


def grid_to_dict(grid: Grid) -> dict[str, Any]:
    """JSON form of a grid (its size included, as a check)."""
    return {
        "range_l": grid.range_l,
        "range_u": grid.range_u,
        "step": grid.step,
        "size": grid.size,
    }


def grid_from_dict(data: Any, where: str) -> Grid:
    """Grid from its JSON form; :class:`TableError` if malformed."""
    try:
        grid = Grid(float(data["range_l"]), float(data["range_u"]), float(data["step"]))
        size = int(data["size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TableError(f"{where}: malformed grid {data!r} ({exc})") from None
    if grid.size != size:
        raise TableError(f"{where}: grid {data!r} has {grid.size} points, not {size}")
    return grid


def read_manifest(directory: Path) -> dict[str, TableInfo]:
    """The tables a folder's manifest lists.

    Raises:
        TableError: The manifest is missing, unreadable, of another format
            version, or malformed.
    """
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TableError(f"{path}: no table manifest") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableError(f"{path}: cannot read the manifest ({exc})") from None
    if not isinstance(data, dict):
        raise TableError(f"{path}: the manifest is not a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise TableError(
            f"{path}: format version {version!r}, this genbab reads version"
            f" {FORMAT_VERSION}; rebuild with 'genbab tables build'"
        )
    tables = data.get("tables")
    if not isinstance(tables, dict):
        raise TableError(f"{path}: 'tables' is missing or not an object")
    return {key: _info(key, entry, path) for key, entry in tables.items()}


def _info(key: str, entry: Any, path: Path) -> TableInfo:
    where = f"{path} [{key}]"
    if not isinstance(entry, dict):
        raise TableError(f"{where}: entry is not an object")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise TableError(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    file = entry.get("file")
    if not isinstance(file, str) or Path(file).name != file:
        raise TableError(f"{where}: bad file name {file!r}")
    grid = grid_from_dict(entry.get("grid"), where)
    grid_y = None
    if kind == "mul":
        grid_y = grid_from_dict(entry.get("grid_y"), where)
    entries = entry.get("entries")
    known = {"file", "kind", "grid", "grid_y", "entries"}
    extra = {k: v for k, v in entry.items() if k not in known}
    info = TableInfo(key, kind, file, grid, grid_y, -1, extra)
    if entries != info.expected_entries():
        raise TableError(
            f"{where}: {entries!r} entries, but its grids give"
            f" {info.expected_entries()}"
        )
    return TableInfo(key, kind, file, grid, grid_y, int(entries), extra)


def read_table(directory: Path, info: TableInfo) -> StoredTable:
    """Read one table and check it against its manifest entry.

    Raises:
        TableError: Any mismatch (module docs); the message names the file.
    """
    path = directory / info.file
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TableError(f"{path}: table file is missing") from None
    except OSError as exc:
        raise TableError(f"{path}: cannot read ({exc})") from None
    expected = info.extra.get("sha256")
    digest = hashlib.sha256(raw).hexdigest()
    if expected != digest:
        raise TableError(f"{path}: content hash does not match the manifest")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            codes = npz["codes"]
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise TableError(f"{path}: not a readable table file ({exc})") from None
    if meta != info.meta():
        raise TableError(
            f"{path}: the file describes {meta!r}, the manifest {info.meta()!r}"
        )
    if codes.dtype != np.uint16 or codes.shape != (info.entries,):
        raise TableError(
            f"{path}: codes of type {codes.dtype} and shape {codes.shape},"
            f" expected uint16 and ({info.entries},)"
        )
    if codes.size and int(codes.min()) < 1:
        raise TableError(f"{path}: a code is 0 (a point at an interval end)")
    return StoredTable(info, codes)


def write_table(directory: Path, info: TableInfo, codes: np.ndarray) -> TableInfo:
    """Write one table file and record it in the manifest (both atomically).

    Args:
        directory: Target folder (created if needed).
        info: Manifest entry; ``sha256`` and ``bytes`` are filled in here.
        codes: uint16 codes ``[info.entries]``.

    Returns:
        The entry as recorded.
    """
    if codes.dtype != np.uint16 or codes.shape != (info.entries,):
        raise ValueError(f"codes must be uint16 of shape ({info.entries},)")
    directory.mkdir(parents=True, exist_ok=True)
    meta = np.array(json.dumps(info.meta(), sort_keys=True))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, codes=codes, meta=meta)
    raw = buffer.getvalue()
    _atomic_write(directory / info.file, raw)
    extra = dict(info.extra, sha256=hashlib.sha256(raw).hexdigest(), bytes=len(raw))
    recorded = TableInfo(
        info.key, info.kind, info.file, info.grid, info.grid_y, info.entries, extra
    )
    _update_manifest(directory, recorded)
    return recorded


def _update_manifest(directory: Path, info: TableInfo) -> None:
    path = directory / MANIFEST
    tables: dict[str, Any] = {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("format_version") == FORMAT_VERSION:
            tables = dict(data.get("tables") or {})
    except (OSError, ValueError):
        pass  # missing or unusable: start a new manifest
    tables[info.key] = info.to_manifest()
    data = {"format_version": FORMAT_VERSION, "tables": dict(sorted(tables.items()))}
    text = json.dumps(data, indent=2) + "\n"
    _atomic_write(path, text.encode("utf-8"))


def _atomic_write(path: Path, raw: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; tables are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
