"""Verdicts of ``genbab run`` per shared family, each with its config.

Usage: python benchmarks/family_verdicts.py [--families a,b] [--max-timeout S]
       [--out DIR] [--table-only] [--set section.key=value ...]

Runs ``genbab run ../shared/benchmarks/FAMILY/instances.csv --config
configs/FAMILY.yaml`` for every family (instances' own timeouts, capped at
``--max-timeout``), one result folder per family under ``--out``. Runs resume:
a second call skips what the first finished. Then prints one row per family:
sat, unsat, unknown, timeout, error, known (rows with a known sat or unsat
verdict), wrong (contradicting it) and the seconds spent, from each folder's
``results.csv``. Exit status 1 if any verdict is wrong.
"""

from __future__ import annotations

import argparse
import collections
import csv
import subprocess
import sys
from pathlib import Path

from known import FAMILIES, ROOT, SHARED, contradicts, known_verdicts

VERDICTS = ["sat", "unsat", "unknown", "timeout", "error"]


def run_family(family: str, out: Path, max_timeout: float, overrides: list[str]):
    """``genbab run`` on one family (resuming), its config and the cap."""
    command = [
        sys.executable,
        "-m",
        "genbab",
        "run",
        "-q",
        str(SHARED / family / "instances.csv"),
        "--out",
        str(out),
        "--max-timeout",
        str(max_timeout),
        "--config",
        str(ROOT / "configs" / f"{family}.yaml"),
    ]
    for item in overrides:
        command += ["--set", item]
    subprocess.run(command, check=False)


def tabulate(family: str, out: Path, known: dict) -> dict:
    """Counts of one family's results table, and the verdicts that are wrong."""
    counts = collections.Counter()
    seconds, wrong, checked = 0.0, [], 0
    path = out / "results.csv"
    if not path.exists():
        return {
            "family": family,
            "counts": counts,
            "seconds": 0.0,
            "wrong": [],
            "checked": 0,
        }
    base = SHARED / family
    with open(path, encoding="utf-8") as f:
        # A retried instance has several rows: the last one counts.
        latest = {row["instance"]: row for row in csv.DictReader(f)}
    for row in latest.values():
        counts[row["verdict"]] += 1
        seconds += float(row["seconds"])
        # Paths as the csv has them: relative to its folder (or absolute).
        onnx = (base / row["model"]).resolve().relative_to(base.resolve())
        vnnlib = (base / row["property"]).resolve().relative_to(base.resolve())
        expected = known.get((family, onnx.as_posix(), vnnlib.as_posix()))
        checked += expected in ("sat", "unsat")
        if contradicts(row["verdict"], expected):
            wrong.append((row["instance"], row["verdict"], expected))
    return {
        "family": family,
        "counts": counts,
        "seconds": seconds,
        "wrong": wrong,
        "checked": checked,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--max-timeout", type=float, default=60.0)
    parser.add_argument("--out", default="family_results", type=Path)
    parser.add_argument("--table-only", action="store_true", help="do not run")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    known = known_verdicts()
    rows = []
    for family in args.families.split(","):
        out = args.out / family
        if not args.table_only:
            run_family(family, out, args.max_timeout, args.overrides)
        rows.append(tabulate(family, out, known))
    header = ["family", *VERDICTS, "known", "wrong", "seconds"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [r["family"], *(str(r["counts"][v]) for v in VERDICTS)]
        cells += [str(r["checked"]), str(len(r["wrong"])), f"{r['seconds']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        for instance, verdict, expected in r["wrong"]:
            print(f"WRONG {r['family']} {instance}: {verdict}, known {expected}")
    return 1 if any(r["wrong"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
