"""A stand-in for ``genbab.pipeline`` used by the CLI and runner tests.

The fake's behaviour is read from the property file, so one batch can mix
outcomes and the same fake works in this process, in worker processes and in
``python -m genbab`` subprocesses. The property file's words:

- ``sat``: a sat result with the witness ``WITNESS_X`` / ``WITNESS_Y``;
- ``unsat`` / ``unknown`` / ``timeout``: that verdict;
- ``error``: an error result with ``ERROR_MESSAGE``;
- ``nan``: sat with a NaN in the witness;
- ``sleep S``: sleeps S seconds, then unknown;
- ``raise``: raises ``RuntimeError("boom")``;
- ``crash``: ends the process with exit code 3.

Each call appends ``model,property,timeout`` to the file named by the
environment variable ``GENBAB_FAKE_LOG`` (when set), to count calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

WITNESS_X = [0.1, -2.5e-07, 1 / 3, 12345.678901234567]
WITNESS_Y = [1e300, -0.0, 2.0]
ERROR_MESSAGE = "net.onnx: node 'mul_3': unsupported operator Foo"

FAKE_SOURCE = f"""
import os
import time

import numpy as np

from genbab.result import Counterexample, Result, Verdict

WITNESS_X = {WITNESS_X!r}
WITNESS_Y = {WITNESS_Y!r}


def verify(model_path, property_path, *, timeout=None, config=None):
    log = os.environ.get("GENBAB_FAKE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{{model_path}},{{property_path}},{{timeout}}\\n")
    words = open(property_path).read().split()
    action = words[0]
    if action == "sleep":
        time.sleep(float(words[1]))
        return Result(Verdict.UNKNOWN, seconds=float(words[1]))
    if action == "raise":
        raise RuntimeError("boom")
    if action == "crash":
        os._exit(3)
    if action in ("sat", "nan"):
        y = np.array(WITNESS_Y)
        if action == "nan":
            y[1] = np.nan
        cex = Counterexample(np.array(WITNESS_X), y, case=0, clause=1)
        return Result(Verdict.SAT, 0.5, cex, "found by fake", {{"calls": 1}})
    if action == "error":
        return Result(Verdict.ERROR, 0.01, message={ERROR_MESSAGE!r})
    return Result(Verdict(action), seconds=0.25, message=f"fake {{action}}")
"""

SITECUSTOMIZE = f"""
import sys
import types

_module = types.ModuleType("genbab.pipeline")
exec({FAKE_SOURCE!r}, _module.__dict__)
sys.modules["genbab.pipeline"] = _module
"""


def fake_module() -> types.ModuleType:
    """A fresh module object holding the fake ``verify``."""
    module = types.ModuleType("genbab.pipeline")
    exec(FAKE_SOURCE, module.__dict__)
    return module


def install_site(folder: Path) -> dict[str, str]:
    """Write a sitecustomize that installs the fake; return an environment for
    subprocesses (and spawned workers) that picks it up."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(folder), env.get("PYTHONPATH", "")) if p
    )
    return env


def make_files(folder: Path, **properties: str) -> dict[str, Path]:
    """A model file ``net.onnx`` and one property file per keyword."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"model": folder / "net.onnx"}
    files["model"].write_bytes(b"not really onnx")
    for name, content in properties.items():
        files[name] = folder / f"{name}.vnnlib"
        files[name].write_text(content + "\n")
    return files


def calls(log: Path) -> list[list[str]]:
    """The calls the fake recorded: ``[model, property, timeout]`` each."""
    if not log.is_file():
        return []
    return [line.split(",") for line in log.read_text().splitlines() if line]


def run_genbab(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess:
    """``python -m genbab ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "genbab", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
