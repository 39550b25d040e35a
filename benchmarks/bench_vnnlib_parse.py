"""Time the VNN-LIB reader on the largest shared property files.

Usage: python benchmarks/bench_vnnlib_parse.py [--count 5] [--repeat 3]
       [--benchmarks PATH]

Prints one row per file (the largest by uncompressed size first): name, uncompressed
size, lines, cases, clauses, and the best wall and CPU seconds of ``read_vnnlib``
over the repeats.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

from genbab.spec import read_vnnlib

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


def _text_size(path: Path) -> tuple[int, int]:
    """Uncompressed size in bytes and number of lines of a property file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    return len(data), data.count(b"\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5, help="files to time")
    parser.add_argument("--repeat", type=int, default=3, help="reads per file")
    parser.add_argument("--benchmarks", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args()

    files = sorted(args.benchmarks.glob("*/vnnlib/*.vnnlib*"))
    if not files:
        print(f"no property files under {args.benchmarks}", file=sys.stderr)
        return 1
    sized = sorted(((_text_size(f), f) for f in files), reverse=True)[: args.count]

    header = f"{'file':<46} {'MB':>6} {'lines':>7} {'cases':>6} {'clauses':>7}"
    print(header + f" {'wall s':>7} {'cpu s':>7}")
    for (size, lines), path in sized:
        walls, cpus = [], []
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            prop = read_vnnlib(path)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        clauses = sum(len(case.clauses) for case in prop.cases)
        name = f"{path.parents[1].name}/{path.name}"
        print(
            f"{name[-46:]:<46} {size / 1e6:>6.2f} {lines:>7} {len(prop.cases):>6} "
            f"{clauses:>7} {min(walls):>7.3f} {min(cpus):>7.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
