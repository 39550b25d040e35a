"""Verdicts of genbab on shared VNN-COMP families, checked against known ones.

Usage: python benchmarks/bench_verdicts.py [--families a,b] [--time-limit 60]
       [--limit N] [--set section.key=value ...]

Prints one row per family: sat, unsat, unknown, timeout, error, wrong (verdicts
contradicting a known one), total seconds. Exit status 1 if any verdict is wrong.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time

from known import SHARED, contradicts, known_verdicts, read_instances

import genbab
from genbab.config import load_config

FIRST = ["acasxu_2023", "mnist_fc_2022", "eran_mnist_vnncomp2021", "dist_shift_2023"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FIRST))
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--limit", type=int, default=0, help="rows per family")
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    config = load_config(args.config, args.overrides)
    known = known_verdicts()
    table = []
    any_wrong = False
    for family in args.families.split(","):
        rows = read_instances(family)
        if args.limit:
            rows = rows[: args.limit]
        counts: collections.Counter[str] = collections.Counter()
        start = time.monotonic()
        for onnx_path, vnnlib_path, timeout in rows:
            limit = min(timeout, args.time_limit)
            result = genbab.verify(onnx_path, vnnlib_path, timeout=limit, config=config)
            key = (
                family,
                str(onnx_path.relative_to(SHARED / family)),
                str(vnnlib_path.relative_to(SHARED / family)),
            )
            expected = known.get(key)
            verdict = str(result.verdict)
            counts[verdict] += 1
            if contradicts(verdict, expected):
                counts["wrong"] += 1
                any_wrong = True
                print(f"WRONG: {key} gave {verdict}, known {expected}", file=sys.stderr)
            print(
                f"{family},{onnx_path.name},{vnnlib_path.name},{verdict},"
                f"{result.seconds:.1f},{expected}",
                file=sys.stderr,
                flush=True,
            )
        table.append((family, counts, time.monotonic() - start))
    header = (
        "family",
        "sat",
        "unsat",
        "unknown",
        "timeout",
        "error",
        "wrong",
        "seconds",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for family, counts, seconds in table:
        cells = [family] + [str(counts[k]) for k in header[1:-1]] + [f"{seconds:.0f}"]
        print("| " + " | ".join(cells) + " |")
    return 1 if any_wrong else 0


if __name__ == "__main__":
    sys.exit(main())
