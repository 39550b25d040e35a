"""Tests of ``genbab verify``, the result file and JSON report, and the public API.

verify itself is replaced by the fake in ``genbab_fakes`` (its behaviour is
chosen by the property file's content); a few tests run the real command line
in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import genbab_fakes as fakes
import numpy as np
import pytest
import yaml

import genbab
from genbab.cli import main
from genbab.result import Counterexample, Result, Verdict
from genbab.runner.results import (
    ResultFileError,
    checked_result,
    format_result_file,
    read_result_file,
    write_result_file,
)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Install the fake verify in this process; returns the call log path."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("GENBAB_FAKE_LOG", str(log))
    monkeypatch.setitem(sys.modules, "genbab.pipeline", fakes.fake_module())
    return log


@pytest.fixture
def files(tmp_path):
    return fakes.make_files(
        tmp_path / "in",
        sat="sat",
        unsat="unsat",
        unknown="unknown",
        timeout="timeout",
        error="error",
        nan="nan",
        boom="raise",
    )


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    status = main(args)
    out, err = capsys.readouterr()
    return status, out, err


def nonblank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- result file format -------------------------------------------------------


def test_sat_result_file_lists_every_input_then_output(fake, files, tmp_path, capsys):
    result_file = tmp_path / "out" / "r.txt"
    status, out, _ = run_main(
        [
            "verify",
            str(files["model"]),
            str(files["sat"]),
            "--result-file",
            str(result_file),
        ],
        capsys,
    )
    assert status == 0
    assert out.splitlines()[0] == "sat"
    lines = result_file.read_text().splitlines()
    n_x, n_y = len(fakes.WITNESS_X), len(fakes.WITNESS_Y)
    assert lines[0] == "sat"
    assert len(lines) == 1 + n_x + n_y
    assert lines[1] == f"((X_0 {fakes.WITNESS_X[0]!r})"
    assert lines[2] == " (X_1 -2.5e-07)"
    assert lines[1 + n_x] == f" (Y_0 {fakes.WITNESS_Y[0]!r})"
    assert lines[-1] == f" (Y_{n_y - 1} {fakes.WITNESS_Y[-1]!r}))"
    # Parsed back the way the VNN-COMP checker does, every value is bit-exact.
    verdict, x, y = read_result_file(result_file)
    assert verdict == Verdict.SAT
    assert x.tolist() == fakes.WITNESS_X
    assert y.tolist() == fakes.WITNESS_Y
    assert np.signbit(y[1])  # -0.0 survives


@pytest.mark.parametrize("name", ["unsat", "unknown", "timeout"])
def test_other_verdicts_write_one_line(fake, files, tmp_path, capsys, name):
    result_file = tmp_path / "r.txt"
    status, out, _ = run_main(
        [
            "verify",
            str(files["model"]),
            str(files[name]),
            "--result-file",
            str(result_file),
        ],
        capsys,
    )
    assert (status, out) == (0, f"{name}\n")
    assert result_file.read_text() == f"{name}\n"


def test_result_file_values_round_trip_at_full_precision(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=500) * 10.0 ** rng.integers(-12, 12, size=500)
    y = np.concatenate([rng.normal(size=7), [5e-324, -1.7976931348623157e308]])
    path = tmp_path / "w.txt"
    verdict = write_result_file(path, Result(Verdict.SAT, 1.0, Counterexample(x, y)))
    assert verdict == Verdict.SAT
    _, x_back, y_back = read_result_file(path)
    assert np.array_equal(x_back, x) and np.array_equal(y_back, y)
    assert "nan" not in path.read_text() and "inf" not in path.read_text()


def test_large_witness_is_written_quickly(tmp_path):
    x = np.linspace(-1.0, 1.0, 150_528)  # a 3x224x224 image
    cex = Counterexample(x, np.arange(1000.0))
    start = time.perf_counter()
    write_result_file(tmp_path / "big.txt", Result(Verdict.SAT, 1.0, cex))
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    assert len((tmp_path / "big.txt").read_text().splitlines()) == 1 + 150_528 + 1000


@pytest.mark.parametrize(
    "cex",
    [None, Counterexample(np.array([0.0, np.inf]), np.array([1.0]))],
    ids=["no-witness", "inf-witness"],
)
def test_sat_without_usable_witness_is_reported_unknown(cex):
    checked = checked_result(Result(Verdict.SAT, 1.0, cex, "pgd"))
    assert checked.verdict == Verdict.UNKNOWN
    assert checked.counterexample is None
    assert "reported as unknown" in checked.message
    assert format_result_file(checked) == "unknown\n"


def test_nan_witness_from_verify_becomes_unknown(fake, files, tmp_path, capsys):
    result_file = tmp_path / "r.txt"
    status, out, err = run_main(
        [
            "verify",
            str(files["model"]),
            str(files["nan"]),
            "--result-file",
            str(result_file),
        ],
        capsys,
    )
    assert (status, out) == (0, "unknown\n")
    assert result_file.read_text() == "unknown\n"
    assert "warning: reporting unknown: sat with a non-finite" in err


@pytest.mark.parametrize(
    "text",
    [
        "holds\n",
        "sat\n((X_0 1.0)\n (X_2 2.0)\n (Y_0 1.0))\n",
        "sat\n(X_0 1.0)\n",
        "sat\n((X_0 nan)\n (Y_0 1.0))\n",
        "sat\n((X_0 1.0))\n",
    ],
    ids=["old-word", "index-gap", "unwrapped", "nan", "no-outputs"],
)
def test_reading_a_malformed_result_file_fails(tmp_path, text):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ResultFileError):
        read_result_file(path)


# --- report, stdout, exit status ----------------------------------------------


def test_report_json_holds_result_config_and_witness(fake, files, tmp_path, capsys):
    report_path = tmp_path / "rep" / "report.json"
    result_file = tmp_path / "r.txt"
    status, _, _ = run_main(
        [
            "verify",
            str(files["model"]),
            str(files["sat"]),
            "--timeout",
            "7",
            "--result-file",
            str(result_file),
            "--report-json",
            str(report_path),
            "--set",
            "bounds.method=crown",
        ],
        capsys,
    )
    assert status == 0
    report = json.loads(report_path.read_text())
    assert report["verdict"] == "sat"
    assert report["seconds"] == 0.5
    assert report["message"] == "found by fake"
    assert report["stats"] == {"calls": 1}
    assert report["model"] == str(files["model"])
    assert report["property"] == str(files["sat"])
    assert report["timeout"] == 7.0
    assert report["config"]["bounds"]["method"] == "crown"
    assert report["genbab_version"] == genbab.__version__
    cex = report["counterexample"]
    assert cex["x"] == fakes.WITNESS_X and cex["y"][0] == fakes.WITNESS_Y[0]
    assert cex["clause"] == 1 and cex["result_file"] == str(result_file)
    # verify got the timeout and the merged config
    assert fakes.calls(fake)[0][2] == "7.0"


@pytest.mark.parametrize(
    ("name", "expected_status"),
    [("sat", 0), ("unsat", 0), ("unknown", 0), ("timeout", 0), ("error", 1)],
)
def test_exit_status_per_verdict(fake, files, capsys, name, expected_status):
    status, out, err = run_main(
        ["verify", str(files["model"]), str(files[name])], capsys
    )
    assert status == expected_status
    assert out.splitlines()[0] == name
    if name == "error":
        assert nonblank_lines(err) == [f"error: {fakes.ERROR_MESSAGE}"]
    else:
        assert err.startswith(f"{name} in ")


def test_quiet_prints_only_the_verdict(fake, files, capsys):
    status, out, err = run_main(
        ["verify", "-q", str(files["model"]), str(files["unsat"])], capsys
    )
    assert (status, out, err) == (0, "unsat\n", "")


# --- bad input: one line, error result file, exit 1 ---------------------------


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing-model", "model file not found"),
        ("missing-property", "property file not found"),
        ("bad-set-key", "unknown option 'bounds.nosuch'"),
        ("bad-set-form", "--set expects section.key=value"),
        ("bad-set-value", "'bab.batch_size' expects int"),
        ("missing-config", "cannot read config"),
    ],
)
def test_bad_input_gives_one_line_and_error_file(
    fake, files, tmp_path, capsys, case, needle
):
    model, prop, extra = str(files["model"]), str(files["unsat"]), []
    if case == "missing-model":
        model = str(tmp_path / "nope.onnx")
    elif case == "missing-property":
        prop = str(tmp_path / "nope.vnnlib")
    elif case == "bad-set-key":
        extra = ["--set", "bounds.nosuch=1"]
    elif case == "bad-set-form":
        extra = ["--set", "verbose"]
    elif case == "bad-set-value":
        extra = ["--set", "bab.batch_size=lots"]
    else:
        extra = ["--config", str(tmp_path / "missing.yaml")]
    result_file, report = tmp_path / "r.txt", tmp_path / "r.json"
    status, out, err = run_main(
        [
            "verify",
            model,
            prop,
            "--result-file",
            str(result_file),
            "--report-json",
            str(report),
            *extra,
        ],
        capsys,
    )
    assert status == 1
    assert out == "error\n"
    lines = nonblank_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert result_file.read_text() == "error\n"
    assert json.loads(report.read_text())["verdict"] == "error"
    assert fakes.calls(fake) == []  # verify never ran


def test_exception_inside_verify_is_one_line_or_traceback_with_v(
    fake, files, tmp_path, capsys
):
    result_file = tmp_path / "r.txt"
    args = [
        "verify",
        str(files["model"]),
        str(files["boom"]),
        "--result-file",
        str(result_file),
    ]
    status, out, err = run_main(args, capsys)
    assert (status, out) == (1, "error\n")
    assert nonblank_lines(err) == ["error: RuntimeError: boom"]
    assert result_file.read_text() == "error\n"

    status, _, err = run_main([*args, "-v"], capsys)
    assert status == 1
    assert "Traceback (most recent call last)" in err and "in verify" in err


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "m.onnx", "p.vnnlib", "--timeout", "-1"],
        ["verify", "m.onnx", "p.vnnlib", "-v", "-q"],
        ["verify", "m.onnx"],
        ["run", "x.csv", "--retry", "holds"],
        ["tables"],
    ],
    ids=[
        "negative-timeout",
        "verbose-and-quiet",
        "no-property",
        "bad-retry",
        "unknown-command",
    ],
)
def test_usage_errors_exit_2(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_print_config_shows_merged_options(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("bab:\n  enabled: true\n")
    status, out, _ = run_main(
        [
            "verify",
            "--config",
            str(config),
            "--set",
            "bounds.method=crown",
            "--print-config",
        ],
        capsys,
    )
    assert status == 0
    printed = yaml.safe_load(out)
    assert printed["bounds"]["method"] == "crown"
    assert printed["bab"]["enabled"] is True
    assert printed["attack"]["enabled"] is True  # a default


# --- real command line in a subprocess ----------------------------------------


def test_python_m_genbab_verify_sat(tmp_path):
    env = fakes.install_site(tmp_path / "site")
    files = fakes.make_files(tmp_path / "in", sat="sat")
    result_file = tmp_path / "r.txt"
    proc = fakes.run_genbab(
        [
            "verify",
            str(files["model"]),
            str(files["sat"]),
            "--result-file",
            str(result_file),
            "--timeout",
            "30",
        ],
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "sat\n"
    _, x, y = read_result_file(result_file)
    assert x.tolist() == fakes.WITNESS_X and y.tolist() == fakes.WITNESS_Y


def test_watchdog_stops_a_verify_that_overruns(tmp_path):
    env = fakes.install_site(tmp_path / "site")
    files = fakes.make_files(tmp_path / "in", slow="sleep 60")
    result_file, report = tmp_path / "r.txt", tmp_path / "r.json"
    timeout, grace = 1.0, 1.0
    start = time.monotonic()
    proc = fakes.run_genbab(
        [
            "verify",
            str(files["model"]),
            str(files["slow"]),
            "--timeout",
            str(timeout),
            "--grace",
            str(grace),
            "--result-file",
            str(result_file),
            "--report-json",
            str(report),
        ],
        env,
        timeout=30,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < timeout + grace + 2.0
    assert elapsed >= timeout + grace
    assert proc.stdout == "timeout\n"
    assert result_file.read_text() == "timeout\n"
    data = json.loads(report.read_text())
    assert data["verdict"] == "timeout" and "watchdog" in data["message"]


def test_missing_verify_module_is_an_error_not_a_crash(tmp_path):
    """Until genbab.pipeline imports, the CLI still answers with one error line."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.modules['genbab.pipeline'] = None\n"
    )
    env = fakes.install_site(tmp_path / "unused")
    env["PYTHONPATH"] = str(site)
    files = fakes.make_files(tmp_path / "in", p="unsat")
    proc = fakes.run_genbab(["verify", str(files["model"]), str(files["p"])], env)
    assert proc.returncode == 1
    assert proc.stdout == "error\n"
    assert nonblank_lines(proc.stderr) == [
        "error: ModuleNotFoundError: import of genbab.pipeline halted;"
        " None in sys.modules"
    ]


# --- public Python API --------------------------------------------------------


def test_genbab_verify_is_callable_and_follows_monkeypatching(fake, files, monkeypatch):
    result = genbab.verify(str(files["model"]), str(files["unsat"]), timeout=3)
    assert isinstance(result, genbab.Result)
    assert result.verdict == genbab.Verdict.UNSAT

    def other(model_path, property_path, *, timeout=None, config=None):
        return Result(Verdict.UNKNOWN, message=f"other {timeout}")

    monkeypatch.setattr(sys.modules["genbab.pipeline"], "verify", other)
    assert genbab.verify("m", "p", timeout=2).message == "other 2"


def test_public_names_resolve():
    assert genbab.Result is Result and genbab.Verdict is Verdict
    from genbab.config import Config, load_config

    assert genbab.Config is Config and genbab.load_config is load_config
    assert set(genbab.__all__) <= set(dir(genbab))
    with pytest.raises(AttributeError):
        genbab.no_such_name  # noqa: B018


def test_import_genbab_and_cli_stay_light():
    code = (
        "import sys, genbab, genbab.cli; genbab.Result; genbab.Config;"
        " print(sorted(m for m in ('torch', 'onnx', 'onnxruntime')"
        " if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_real_verify_module_exposes_the_expected_signature():
    """The CLI relies on verify(model, property, *, timeout, config)."""
    try:
        from genbab.pipeline import verify
    except ImportError as exc:
        pytest.skip(f"genbab.pipeline does not import yet: {exc}")
    import inspect

    params = inspect.signature(verify).parameters
    assert list(params)[:2] == ["model_path", "property_path"]
    assert params["timeout"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["config"].kind is inspect.Parameter.KEYWORD_ONLY


def test_usage_error_still_writes_the_result_file(tmp_path, capsys):
    out = tmp_path / "r.txt"
    with pytest.raises(SystemExit) as exc:
        main(["verify", "model.onnx", "--timeout", "abc", "--result-file", str(out)])
    assert exc.value.code == 2
    assert out.read_text().split()[0] == "error"
    other = tmp_path / "s.txt"
    with pytest.raises(SystemExit):
        main(["verify", f"--result-file={other}", "only_model.onnx"])
    assert other.read_text().split()[0] == "error"
