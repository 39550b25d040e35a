"""Shared helpers of the benchmark scripts: where the shared instances are, and
the verdicts known from published results."""

from __future__ import annotations

import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks"

#: The shared VNN-COMP families genbab is benchmarked on.
FAMILIES = [
    "acasxu_2023",
    "mnist_fc_2022",
    "eran_mnist_vnncomp2021",
    "dist_shift_2023",
    "ml4acopf_2023",
    "ml4acopf_2024",
    "vit_2023",
    "lsnc_2024",
    "nn4sys_2023",
    "cgan_2023",
]


def read_instances(family: str) -> list[tuple[Path, Path, float]]:
    """Rows of a shared family's ``instances.csv``: (onnx, vnnlib, timeout)."""
    folder = SHARED / family
    rows = []
    with open(folder / "instances.csv", encoding="utf-8") as f:
        for row in csv.reader(f):
            if row and row[0].strip():
                rows.append(
                    (folder / row[0].strip(), folder / row[1].strip(), float(row[2]))
                )
    return rows


def known_verdicts() -> dict[tuple[str, str, str], str]:
    """(family, onnx, vnnlib) -> expected verdict (sat, unsat or unknown)."""
    out = {}
    with open(SHARED / "known_verdicts.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out[(row["family"], row["onnx"], row["vnnlib"])] = row["expected"]
    return out


def contradicts(verdict: str, expected: str | None) -> bool:
    """A verdict contradicts a known one when it is sat vs unsat or unsat vs sat."""
    return {verdict, expected} == {"sat", "unsat"}
