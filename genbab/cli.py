"""genbab's command line.

``genbab verify MODEL PROPERTY`` checks one instance: the verdict goes to stdout
(one word), a short summary to stderr, and optionally a VNN-COMP result file and
a JSON report to disk. ``genbab run INSTANCES_CSV`` checks a whole benchmark with
resume. This is the only module that prints or configures logging.

Exit status: 0 for sat, unsat, unknown and timeout; 1 for error (bad input,
config error, failure inside verify); 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from genbab.config import Config, config_to_dict, load_config
from genbab.errors import ConfigError, GenbabError
from genbab.result import Result, Verdict
from genbab.runner.execute import (
    Executor,
    InProcessExecutor,
    WorkerExecutor,
    call_verify,
    one_line,
    preload_pipeline,
)
from genbab.runner.instances import (
    DEFAULT_RETRY,
    BatchSummary,
    Instance,
    InstancesError,
    Record,
    read_instances,
    run_batch,
    select_instances,
)
from genbab.runner.results import (
    build_report,
    checked_result,
    genbab_version,
    write_report_json,
    write_result_file,
)

logger = logging.getLogger(__name__)

DEFAULT_GRACE = 5.0
_HANDLER_MARK = "_genbab_cli_handler"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` if None.

    Returns:
        The exit status (argparse exits with 2 itself on usage errors).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        configure_logging(args.log_level)
        return args.command(args)
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    except SystemExit as exc:  # usage errors, from argparse or a command
        if exc.code not in (0, None):
            _usage_error_result(argv)
        raise


def _usage_error_result(argv: list[str]) -> None:
    """On a usage error of ``verify``, still write ``error`` to ``--result-file``."""
    if "verify" not in argv:
        return
    path = None
    for i, arg in enumerate(argv):
        if arg == "--result-file" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--result-file="):
            path = arg.split("=", 1)[1]
    if not path:
        return
    try:
        write_result_file(path, Result(Verdict.ERROR, message="usage error"))
    except OSError:
        pass  # argparse has already printed the usage error itself


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its ``verify`` and ``run`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="genbab",
        description="Verify neural networks (ONNX) against VNN-LIB properties.",
    )
    parser.add_argument("--version", action="version", version=genbab_version())
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    common = _common_options()
    _add_verify_command(sub, common)
    _add_run_command(sub, common)
    _add_tables_command(sub)
    return parser


def _common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v",
        "--verbose",
        dest="log_level",
        action="store_const",
        const=logging.DEBUG,
        default=logging.INFO,
        help="log debug details",
    )
    loudness.add_argument(
        "-q",
        "--quiet",
        dest="log_level",
        action="store_const",
        const=logging.WARNING,
        help="log only warnings and errors; no progress bar",
    )
    common.add_argument("--config", metavar="YAML", help="options file")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one option (repeatable)",
    )
    common.add_argument(
        "--print-config",
        action="store_true",
        help="print the merged options as YAML and exit",
    )
    common.add_argument(
        "--grace",
        type=_non_negative_float,
        default=DEFAULT_GRACE,
        metavar="S",
        help="seconds past the timeout before verification is stopped by force"
        f" (default {DEFAULT_GRACE:g})",
    )
    return common


def _add_verify_command(sub: Any, common: argparse.ArgumentParser) -> None:
    verify = sub.add_parser(
        "verify",
        parents=[common],
        help="verify one model against one property",
        description="Verify one instance; prints sat, unsat, unknown, timeout or"
        " error.",
    )
    verify.add_argument(
        "model", nargs="?", metavar="MODEL", help="ONNX model (.onnx or .onnx.gz)"
    )
    verify.add_argument(
        "property",
        nargs="?",
        metavar="PROPERTY",
        help="VNN-LIB property (.vnnlib or .vnnlib.gz)",
    )
    verify.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="time limit in seconds"
    )
    verify.add_argument(
        "--result-file", metavar="FILE", help="write a VNN-COMP result file"
    )
    verify.add_argument("--report-json", metavar="FILE", help="write a JSON report")
    verify.set_defaults(command=_cmd_verify, parser=verify)


def _add_run_command(sub: Any, common: argparse.ArgumentParser) -> None:
    run = sub.add_parser(
        "run",
        parents=[common],
        help="verify every instance of an instances.csv",
        description="Run every row of an instances.csv (onnx,vnnlib,timeout),"
        " resuming where a previous run stopped.",
    )
    run.add_argument("instances", nargs="?", metavar="INSTANCES_CSV")
    run.add_argument(
        "--out", metavar="DIR", help="output folder (default genbab-results/<category>)"
    )
    run.add_argument("--category", help="benchmark name (default: the csv's folder)")
    run.add_argument(
        "--timeout-scale",
        type=_positive_float,
        default=1.0,
        metavar="F",
        help="multiply every timeout by F",
    )
    run.add_argument(
        "--max-timeout",
        type=_positive_float,
        metavar="S",
        help="cap every timeout at S seconds",
    )
    run.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="run only the first N selected instances",
    )
    run.add_argument(
        "--filter",
        metavar="SUBSTR",
        help="only instances whose onnx or vnnlib path contains SUBSTR",
    )
    run.add_argument(
        "--retry",
        type=_verdict_list,
        default=DEFAULT_RETRY,
        metavar="VERDICTS",
        help="comma-separated verdicts in results.csv to compute again"
        " (default: error); all others are skipped",
    )
    run.add_argument(
        "--in-process",
        action="store_true",
        help="verify in this process instead of a worker process (no start-up"
        " cost, but an overrunning or crashing instance stops the batch)",
    )
    run.set_defaults(command=_cmd_run, parser=run)


def _add_tables_command(sub: Any) -> None:
    loud = _loudness_options()
    tables = sub.add_parser(
        "tables",
        help="build or list the branching-point lookup tables",
        description="Branching-point lookup tables: for a grid of input intervals,"
        " the split point that minimises the area between the children's"
        " relaxations.",
    )
    actions = tables.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_tables_build(actions, loud)
    show = actions.add_parser(
        "show",
        parents=[loud],
        help="list the tables of a folder",
        description="List the tables of a folder: function, range, step, entries,"
        " format version, file size, and whether each can be used.",
    )
    show.add_argument("directory", nargs="?", metavar="DIR", help="table folder")
    show.set_defaults(command=_cmd_tables_show, parser=show)


def _add_tables_build(actions: Any, loud: argparse.ArgumentParser) -> None:
    from genbab.tables.keys import ALL_KEYS  # no torch import

    build = actions.add_parser(
        "build",
        parents=[loud],
        help="generate tables",
        description="Generate branching-point tables and record them in the"
        " folder's manifest.json (default: the lookup_tables/ folder genbab ships).",
    )
    build.add_argument(
        "--functions",
        type=_function_list,
        default="all",
        metavar="LIST",
        help="comma-separated functions, or 'all' (default); known: "
        + ",".join(ALL_KEYS),
    )
    build.add_argument(
        "--range-lower", type=_finite_float, default=-5.0, metavar="L",
        help="lowest grid point (default -5; reciprocal and sqrt start at"
        " 1e-6 or above)",
    )  # fmt: skip
    build.add_argument(
        "--range-upper", type=_finite_float, default=5.0, metavar="U",
        help="upper end of the grid (default 5)",
    )  # fmt: skip
    build.add_argument(
        "--step", type=_positive_float, default=0.01, metavar="S",
        help="grid step of the one-input tables (default 0.01)",
    )  # fmt: skip
    build.add_argument(
        "--step-2d", type=_positive_float, default=0.2, metavar="S",
        help="grid step of the multiplication table, on both inputs (default 0.2)",
    )  # fmt: skip
    build.add_argument("--out", metavar="DIR", help="table folder")
    build.add_argument(
        "--jobs", type=_positive_int, default=1, metavar="N",
        help="build N tables at once in worker processes (one thread each)",
    )  # fmt: skip
    build.add_argument(
        "--missing-only",
        action="store_true",
        help="build only tables that are missing, unreadable, of another format"
        " version or range/step, or stale",
    )
    build.set_defaults(command=_cmd_tables_build, parser=build)


def _loudness_options() -> argparse.ArgumentParser:
    """A parent parser with just ``-v`` / ``-q``."""
    parent = argparse.ArgumentParser(add_help=False)
    loudness = parent.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v", "--verbose", dest="log_level", action="store_const",
        const=logging.DEBUG, default=logging.INFO, help="log debug details",
    )  # fmt: skip
    loudness.add_argument(
        "-q", "--quiet", dest="log_level", action="store_const",
        const=logging.WARNING, help="log only warnings and errors; no progress bar",
    )  # fmt: skip
    return parent


def configure_logging(level: int) -> None:
    """Send log records of ``level`` and above to stderr (replacing our handler)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(_Formatter(verbose=level <= logging.DEBUG))
    root.addHandler(handler)
    root.setLevel(level)


class _Formatter(logging.Formatter):
    """Plain messages, prefixed with ``warning:``/``error:`` unless verbose."""

    def __init__(self, verbose: bool) -> None:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else None
        super().__init__(fmt)
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.verbose or record.levelno < logging.WARNING:
            return text
        prefix = "error" if record.levelno >= logging.ERROR else "warning"
        return f"{prefix}: {text}"


# --- genbab verify ------------------------------------------------------------


def _cmd_verify(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if not args.print_config and (args.model is None or args.property is None):
        args.parser.error("the arguments MODEL and PROPERTY are required")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        reporter = _Reporter(args, None, started)
        return reporter.finish(Result(Verdict.ERROR, message=one_line(exc)))
    if args.print_config:
        return _print_config(config)

    reporter = _Reporter(args, config, started)
    preload_pipeline()  # before the watchdog, which verify's clock cannot see
    watchdog = None
    if args.timeout is not None:
        watchdog = threading.Timer(args.timeout + args.grace, reporter.stop)
        watchdog.daemon = True
        watchdog.start()
    result = call_verify(args.model, args.property, args.timeout, config)
    if watchdog is not None:
        watchdog.cancel()
    return reporter.finish(result)


class _Reporter:
    """Writes the outputs of ``genbab verify`` exactly once: for verify's result,
    or for the watchdog's ``timeout``, whichever comes first."""

    def __init__(
        self, args: argparse.Namespace, config: Config | None, started: float
    ) -> None:
        self.args = args
        self.config = config
        self.started = started
        self._lock = threading.Lock()
        self._done = False

    def finish(self, result: Result) -> int:
        """Report ``result``; returns the exit status."""
        with self._lock:  # if the watchdog got here first, wait for its exit
            self._done = True
            return self._emit(result)

    def stop(self) -> None:
        """The watchdog: report ``timeout`` and end the process at once."""
        with self._lock:
            if self._done:
                return
            self._done = True
            seconds = time.monotonic() - self.started
            logger.warning(
                "verify did not return within timeout %g s + grace %g s; stopping",
                self.args.timeout,
                self.args.grace,
            )
            result = Result(
                Verdict.TIMEOUT,
                seconds=seconds,
                message=f"stopped by the watchdog after {seconds:.1f} s",
            )
            status = 1
            try:
                status = self._emit(result)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)

    def _emit(self, result: Result) -> int:
        args = self.args
        result = checked_result(result)
        config_dict = config_to_dict(self.config) if self.config else None
        try:
            if args.result_file:
                write_result_file(args.result_file, result)
            if args.report_json:
                report = build_report(
                    result,
                    model_path=args.model,
                    property_path=args.property,
                    timeout=args.timeout,
                    config=config_dict,
                    result_file=args.result_file,
                )
                write_report_json(args.report_json, report)
        except OSError as exc:
            print(Verdict.ERROR, flush=True)
            logger.error("cannot write output: %s", one_line(exc))
            return 1
        print(result.verdict, flush=True)
        _log_summary(result)
        return 1 if result.verdict == Verdict.ERROR else 0


def _log_summary(result: Result) -> None:
    message = one_line(result.message)
    if result.verdict == Verdict.ERROR:
        logger.error("%s", message or "verification failed")
        return
    summary = f"{result.verdict} in {result.seconds:.2f} s"
    logger.info("%s%s", summary, f": {message}" if message else "")
    for key, value in result.stats.items():
        logger.debug("  %s: %s", key, value)


# --- genbab run ---------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    if not args.print_config and args.instances is None:
        args.parser.error("the argument INSTANCES_CSV is required")
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        logger.error("%s", one_line(exc))
        return 1
    if args.print_config:
        return _print_config(config)
    try:
        instances = read_instances(args.instances)
    except InstancesError as exc:
        logger.error("%s", one_line(exc))
        return 1
    instances = select_instances(instances, contains=args.filter, limit=args.limit)
    csv_dir = Path(args.instances).resolve().parent
    category = args.category or csv_dir.name
    out = Path(args.out) if args.out else Path("genbab-results") / category
    out.mkdir(parents=True, exist_ok=True)
    _save_run_config(out, _config_yaml(config))
    logger.info(
        "%d instances from %s; results in %s", len(instances), args.instances, out
    )
    if not instances:
        logger.warning("no instances to run (check the csv, --filter and --limit)")

    if args.in_process:
        executor: Executor = InProcessExecutor(config)
    else:
        # The worker logs past the progress bar: only warnings, unless -v.
        debug = args.log_level <= logging.DEBUG
        worker_level = logging.DEBUG if debug else logging.WARNING
        executor = WorkerExecutor(
            config,
            grace=args.grace,
            initializer=configure_logging,
            initargs=(worker_level,),
        )
    try:
        summary = _run_with_progress(args, instances, out, category, executor, config)
    except KeyboardInterrupt:
        logger.error(
            "interrupted; finished instances are recorded in %s,"
            " run the same command again to resume",
            out / "results.csv",
        )
        return 130
    finally:
        executor.close()
    if summary.skipped:
        logger.info(
            "skipped %d instances already in %s", summary.skipped, out / "results.csv"
        )
    print(format_summary(summary), flush=True)
    return 0


def _save_run_config(out: Path, text: str) -> None:
    """Write the run's options to ``out/config.yaml``, keeping an older one.

    A resumed run whose options differ keeps the first run's ``config.yaml`` (it
    describes the results already there) and writes ``config.latest.yaml``.
    """
    path = out / "config.yaml"
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        latest = out / "config.latest.yaml"
        logger.warning(
            "options differ from those of the results already in %s (%s); finished"
            " instances keep their results, new ones use the options in %s",
            out,
            path.name,
            latest.name,
        )
        latest.write_text(text, encoding="utf-8")
        return
    path.write_text(text, encoding="utf-8")


def _run_with_progress(
    args: argparse.Namespace,
    instances: list[Instance],
    out: Path,
    category: str,
    executor: Executor,
    config: Config,
) -> BatchSummary:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    show = args.log_level <= logging.INFO and sys.stderr.isatty()
    total = len(instances)
    with tqdm(total=total, unit="inst", file=sys.stderr, disable=not show) as bar:
        position = 0

        def on_result(inst: Instance, record: Record | None) -> None:
            nonlocal position
            position += 1
            bar.update(1)
            if record is None:
                return
            bar.set_postfix_str(f"{record.verdict}", refresh=False)
            logger.info(
                "[%d/%d] %s: %s in %.2f s%s",
                position,
                total,
                inst.name,
                record.verdict,
                record.seconds,
                f" ({record.message})" if record.message else "",
            )

        with logging_redirect_tqdm():
            return run_batch(
                instances,
                out,
                executor,
                category=category,
                timeout_scale=args.timeout_scale,
                max_timeout=args.max_timeout,
                retry=args.retry,
                config=config_to_dict(config),
                on_result=on_result,
            )


def format_summary(summary: BatchSummary) -> str:
    """A small table: instances per verdict, then the total and its seconds."""
    counts = summary.counts()
    lines = [f"{'verdict':<8} {'count':>6}"]
    lines += [f"{str(v):<8} {n:>6}" for v, n in counts.items()]
    lines.append(
        f"{'total':<8} {sum(counts.values()):>6}"
        f"   {summary.total_seconds:.1f} s ({summary.ran} run,"
        f" {summary.skipped} skipped)"
    )
    return "\n".join(lines)


# --- genbab tables -----------------------------------------------------------


def _cmd_tables_build(args: argparse.Namespace) -> int:
    from genbab.tables import make

    try:
        specs = make.table_specs(
            args.functions, args.range_lower, args.range_upper, args.step,
            args.step_2d,
        )  # fmt: skip
    except ValueError as exc:
        args.parser.error(str(exc))
    out = Path(args.out) if args.out else _default_table_dir()
    if args.missing_only:
        specs = make.stale_specs(out, specs)
        if not specs:
            logger.info("all requested tables in %s are current", out)
            return 0
    started = time.monotonic()
    try:
        infos = _build_with_progress(args, specs, out)
    except KeyboardInterrupt:
        logger.error("interrupted; tables finished so far are recorded in %s", out)
        return 130
    except (OSError, ValueError, RuntimeError, GenbabError) as exc:
        logger.error("cannot build tables: %s", one_line(exc))
        return 1
    print(make.format_build_summary(infos, time.monotonic() - started), flush=True)
    return 0


def _build_with_progress(args: argparse.Namespace, specs: list[Any], out: Path):
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from genbab.tables import make

    show = args.log_level <= logging.INFO and sys.stderr.isatty()
    fmt = "{desc:<10} {percentage:3.0f}%|{bar}| {n:.1f}/{total} tables [{elapsed}]"
    with tqdm(
        total=len(specs), file=sys.stderr, disable=not show, bar_format=fmt
    ) as bar:
        finished = 0

        def advance(position: float) -> None:
            if position > bar.n:
                bar.update(position - bar.n)

        def progress(key: str, fraction: float) -> None:
            bar.set_description_str(key, refresh=False)
            advance(min(finished + fraction, len(specs)))

        def done(info: Any) -> None:
            nonlocal finished
            finished += 1
            advance(finished)

        with logging_redirect_tqdm():
            return make.build_tables(
                specs, out, jobs=args.jobs, progress=progress, done=done
            )


def _cmd_tables_show(args: argparse.Namespace) -> int:
    from genbab.tables import make
    from genbab.tables.store import TableError

    folder = Path(args.directory) if args.directory else _default_table_dir()
    try:
        statuses = make.folder_status(folder)
    except TableError as exc:
        logger.error("%s", one_line(exc))
        return 1
    print(make.format_folder(folder, statuses), flush=True)
    return 0 if all(s.usable for s in statuses) else 1


def _default_table_dir() -> Path:
    from genbab.tables import default_directory

    return default_directory()


def _function_list(text: str) -> list[str]:
    from genbab.tables.keys import ALL_KEYS

    words = [w.strip() for w in text.split(",") if w.strip()]
    if words == ["all"]:
        return list(ALL_KEYS)
    unknown = [w for w in words if w not in ALL_KEYS]
    if unknown or not words:
        raise argparse.ArgumentTypeError(
            f"unknown function '{','.join(unknown) or text}'"
            f" (known: {','.join(ALL_KEYS)}, or all)"
        )
    return list(dict.fromkeys(words))


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


# --- helpers ------------------------------------------------------------------


def _print_config(config: Config) -> int:
    print(_config_yaml(config), end="", flush=True)
    return 0


def _config_yaml(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{text}'")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _verdict_list(text: str) -> frozenset[Verdict]:
    verdicts = set()
    for word in filter(None, (w.strip() for w in text.split(","))):
        try:
            verdicts.add(Verdict(word))
        except ValueError:
            known = ", ".join(Verdict)
            raise argparse.ArgumentTypeError(
                f"unknown verdict '{word}' (known: {known})"
            ) from None
    return frozenset(verdicts)


if __name__ == "__main__":
    sys.exit(main())
