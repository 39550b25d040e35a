"""Calling verify for one instance: in this process, or in a reusable worker.

:func:`call_verify` is the one place that turns anything going wrong inside
verify into an ``error`` result. :class:`WorkerExecutor` runs instances one at a
time in a child process that is reused while it behaves (so torch is imported
once, not per instance) and killed and replaced when an instance overruns its
time limit or the child dies (crash, out of memory).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from genbab.config import Config
from genbab.errors import GenbabError
from genbab.result import Result, Verdict
from genbab.runner.results import jsonable

logger = logging.getLogger(__name__)

# How long a fresh worker may take to import genbab's verifier.
WORKER_START_SECONDS = 180.0


class Executor(Protocol):
    """Something that verifies one instance and always returns a Result."""

    def __call__(
        self, model_path: Path, property_path: Path, timeout: float | None
    ) -> Result: ...


def call_verify(
    model_path: str | os.PathLike,
    property_path: str | os.PathLike,
    timeout: float | None,
    config: Config | None,
) -> Result:
    """Run ``genbab.pipeline.verify`` and never raise for what goes wrong inside.

    Missing files are reported before verify is imported. A
    :class:`~genbab.errors.GenbabError` becomes an ``error`` result with its
    message; any other exception an ``error`` naming its type (the traceback is
    logged at debug level).

    Args:
        model_path: The ONNX model.
        property_path: The VNN-LIB property.
        timeout: Seconds verify may use, or None for no limit.
        config: Options, or None for the defaults.

    Returns:
        verify's result, or an ``error`` result with a one-line message.
    """
    start = time.monotonic()

    def error(message: str) -> Result:
        seconds = time.monotonic() - start
        return Result(Verdict.ERROR, seconds=seconds, message=one_line(message))

    for kind, path in (("model", model_path), ("property", property_path)):
        if not Path(path).is_file():
            return error(f"{kind} file not found: {path}")
    try:
        verify_module = importlib.import_module("genbab.pipeline")
        result = verify_module.verify(
            os.fspath(model_path),
            os.fspath(property_path),
            timeout=timeout,
            config=config,
        )
    except GenbabError as exc:
        return error(str(exc))
    except Exception as exc:  # one instance must never take its caller down
        logger.debug(
            "verify raised on %s, %s", model_path, property_path, exc_info=True
        )
        return error(f"{type(exc).__name__}: {exc}")
    if not isinstance(result, Result):
        return error(f"verify returned {type(result).__name__}, not Result")
    return result


def preload_pipeline() -> None:
    """Import ``genbab.pipeline`` (torch and friends) now, not on an instance's
    clock: the first import can take seconds on a busy machine. A failure is
    reported by :func:`call_verify` for each instance."""
    try:
        importlib.import_module("genbab.pipeline")
    except Exception:
        logger.debug("preloading genbab.pipeline failed", exc_info=True)


def one_line(text: object) -> str:
    """``text`` as a single line: newlines folded into ``" | "``, trimmed."""
    lines = [part.strip() for part in str(text).splitlines() if part.strip()]
    return " | ".join(lines)


@dataclasses.dataclass
class InProcessExecutor:
    """Verifies in this process: no start-up cost, but an instance that ignores
    its deadline cannot be stopped, and a crash ends the whole batch."""

    config: Config | None = None

    def __call__(
        self, model_path: Path, property_path: Path, timeout: float | None
    ) -> Result:
        """Verify one instance; see :func:`call_verify`."""
        return call_verify(model_path, property_path, timeout, self.config)

    def close(self) -> None:
        """Nothing to release."""


class WorkerExecutor:
    """Verifies in a reusable child process, killed at ``timeout + grace``.

    Args:
        config: Options sent along with every instance.
        grace: Seconds past an instance's timeout before its worker is killed
            and the instance recorded as ``timeout``.
        initializer: Called in the child before anything else (e.g. to set up
            logging); must be picklable (a module-level function).
        initargs: Arguments of ``initializer``.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        grace: float = 5.0,
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self.config = config
        self.grace = grace
        self._initializer = initializer
        self._initargs = initargs
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._conn: Connection | None = None
        self.started = 0  # workers started so far (for tests and stats)

    def __call__(
        self, model_path: Path, property_path: Path, timeout: float | None
    ) -> Result:
        """Verify one instance in the worker; see :func:`call_verify`."""
        start = time.monotonic()
        failure = self._ensure_worker()
        if failure is not None:
            return Result(Verdict.ERROR, seconds=0.0, message=failure)
        assert self._conn is not None
        task = (os.fspath(model_path), os.fspath(property_path), timeout, self.config)
        self._conn.send(task)
        limit = None if timeout is None else timeout + self.grace
        if not self._conn.poll(limit):
            self._kill()
            seconds = time.monotonic() - start
            return Result(
                Verdict.TIMEOUT,
                seconds=seconds,
                message=f"killed after {seconds:.1f} s (timeout {timeout:g} s"
                f" + grace {self.grace:g} s)",
            )
        try:
            result = self._conn.recv()
        except (EOFError, OSError):
            seconds = time.monotonic() - start
            code = self._kill()
            return Result(
                Verdict.ERROR,
                seconds=seconds,
                message=f"worker process died (exit code {code})",
            )
        return result

    def close(self) -> None:
        """Stop the worker, politely if it is idle."""
        if self._process is None:
            return
        assert self._conn is not None
        try:
            self._conn.send(None)
            self._process.join(timeout=5.0)
        except (OSError, ValueError):
            pass
        self._kill()

    def __enter__(self) -> WorkerExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ensure_worker(self) -> str | None:
        """Start a worker if none is alive; a message if that failed."""
        if self._process is not None and self._process.is_alive():
            return None
        self._kill()
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(child, self._initializer, self._initargs),
            name="genbab-worker",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        self.started += 1
        start = time.monotonic()
        try:
            ready = parent.poll(WORKER_START_SECONDS) and parent.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            code = self._kill()
            return f"worker process failed to start (exit code {code})"
        logger.debug("worker %d ready in %.2f s", process.pid, time.monotonic() - start)
        return None

    def _kill(self) -> int | None:
        """Kill the worker (if any) and return its exit code."""
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        if process.is_alive():
            process.kill()
        process.join(timeout=10.0)
        return process.exitcode


def _serve(
    conn: Connection,
    initializer: Callable[..., None] | None,
    initargs: tuple[Any, ...],
) -> None:
    """The worker's loop: receive (model, property, timeout, config), reply Result."""
    # Ctrl-C reaches the whole process group: the parent reports the interrupt
    # and stops this worker; the worker itself ignores it (no traceback of its own).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
    preload_pipeline()
    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        model_path, property_path, timeout, config = task
        result = call_verify(model_path, property_path, timeout, config)
        conn.send(_portable(result))


def _portable(result: Result) -> Result:
    """The result with plain-Python stats, so the parent needs no torch to read it."""
    return dataclasses.replace(result, stats=jsonable(result.stats))
