"""Ablation of GenBaB's parts, with the same time limit per instance.

Usage: python benchmarks/bench_ablation.py [--suite eran,demo] [--rows 42,47]
       [--methods crown,alpha-crown,bab-babsr,bab-bbps,bab-bbps-table]
       [--time-limit 300] [--config YAML] [--set section.key=value ...]
       [--json out.json]

Suites: ``eran`` is the sigmoid half of eran_mnist_vnncomp2021 (``--rows`` are
0-based rows of its instances.csv); ``demo`` is the tanh, sin, GeLU and sigmoid
models genbab ships (models/, vnnlib/, demo_instances.csv; ``--demo-rows``).
Methods (one table row each):

* ``crown``: CROWN bounds, no branch and bound;
* ``alpha-crown``: alpha-CROWN (with the config's intermediate bounds);
* ``bab-babsr``: GenBaB with the BaBSR-like heuristic, midpoint splits;
* ``bab-bbps``: GenBaB with BBPS, midpoint splits;
* ``bab-bbps-table``: GenBaB with BBPS at the lookup tables' points (midpoints
  where no table is installed).

Prints, per suite and method: instances, verified (unsat), sat, other,
median seconds of the verified ones, and branch-and-bound domains per second
(all domains over all branch-and-bound seconds). Exit status 1 if a verdict
contradicts a known one.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from known import ROOT, SHARED, contradicts, known_verdicts, read_instances

import genbab
from genbab.config import load_config

ERAN = "eran_mnist_vnncomp2021"
METHODS = {
    "crown": ["bounds.method=crown", "bounds.intermediate=crown", "bab.enabled=false"],
    "alpha-crown": ["bounds.method=alpha-crown", "bab.enabled=false"],
    "bab-babsr": [
        "bab.enabled=true",
        "bab.heuristic=babsr",
        "bab.branching_point=midpoint",
    ],
    "bab-bbps": [
        "bab.enabled=true",
        "bab.heuristic=bbps",
        "bab.branching_point=midpoint",
    ],
    "bab-bbps-table": [
        "bab.enabled=true",
        "bab.heuristic=bbps",
        "bab.branching_point=table",
    ],
}


def eran_instances(rows: str) -> list[tuple[str, Path, Path, tuple]]:
    """The sigmoid rows of the ERAN family (all, or the 0-based ``rows``)."""
    all_rows = read_instances(ERAN)
    chosen = (
        [int(r) for r in rows.split(",")]
        if rows
        else [i for i, r in enumerate(all_rows) if "SIGMOID" in r[0].name]
    )
    out = []
    for i in chosen:
        onnx, vnnlib, _ = all_rows[i]
        folder = SHARED / ERAN
        key = (ERAN, str(onnx.relative_to(folder)), str(vnnlib.relative_to(folder)))
        out.append((f"eran:{i}", onnx, vnnlib, key))
    return out


def demo_instances(rows: str) -> list[tuple[str, Path, Path, tuple]]:
    """The demo models' robustness instances (not the smoke tests)."""
    with open(ROOT / "demo_instances.csv", encoding="utf-8") as f:
        all_rows = [r for r in csv.reader(f) if r and "smoke" not in r[1]]
    chosen = [int(r) for r in rows.split(",")] if rows else range(len(all_rows))
    return [
        (f"demo:{i}", ROOT / all_rows[i][0], ROOT / all_rows[i][1], None)
        for i in chosen
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="eran,demo")
    parser.add_argument("--rows", default="", help="ERAN rows (0-based)")
    parser.add_argument("--demo-rows", default="", help="demo rows (0-based)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--time-limit", type=float, default=300.0)
    parser.add_argument(
        "--config",
        default=str(ROOT / "configs" / f"{ERAN}.yaml"),
        help="base options of every method (default: the ERAN family's config)",
    )
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    known = known_verdicts()
    suites = {"eran": eran_instances(args.rows), "demo": demo_instances(args.demo_rows)}
    records = []
    wrong = False
    for suite in args.suite.split(","):
        for method in args.methods.split(","):
            config = load_config(args.config, METHODS[method] + args.overrides)
            for name, onnx, vnnlib, key in suites[suite]:
                start = time.monotonic()
                result = genbab.verify(
                    onnx, vnnlib, timeout=args.time_limit, config=config
                )
                verdict = str(result.verdict)
                expected = known.get(key) if key else None
                bad = contradicts(verdict, expected)
                wrong |= bad
                record = {
                    "suite": suite,
                    "method": method,
                    "instance": name,
                    "vnnlib": vnnlib.name,
                    "verdict": verdict,
                    "expected": expected,
                    "seconds": result.seconds,
                    "wall": time.monotonic() - start,
                    "bab_domains": result.stats.get("bab_domains", 0),
                    "bab_seconds": result.stats.get("bab_seconds", 0.0),
                }
                records.append(record)
                print(
                    f"{suite},{method},{name},{vnnlib.name},{verdict},"
                    f"{result.seconds:.1f},{record['bab_domains']}"
                    + (f",WRONG (known {expected})" if bad else ""),
                    file=sys.stderr,
                    flush=True,
                )
    print_table(records)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 1 if wrong else 0


def print_table(records: list[dict]) -> None:
    """One line per suite and method."""
    header = ["suite", "method", "instances", "verified", "sat", "other",
              "median s (verified)", "domains/s"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    keys = []
    for r in records:
        if (r["suite"], r["method"]) not in keys:
            keys.append((r["suite"], r["method"]))
    for suite, method in keys:
        rs = [r for r in records if r["suite"] == suite and r["method"] == method]
        verified = [r for r in rs if r["verdict"] == "unsat"]
        sat = sum(r["verdict"] == "sat" for r in rs)
        median = statistics.median(r["seconds"] for r in verified) if verified else None
        domains = sum(r["bab_domains"] for r in rs)
        seconds = sum(r["bab_seconds"] for r in rs)
        cells = [
            suite,
            method,
            str(len(rs)),
            str(len(verified)),
            str(sat),
            str(len(rs) - len(verified) - sat),
            "-" if median is None else f"{median:.1f}",
            f"{domains / seconds:.1f}" if seconds > 0 else "-",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
