"""Tests of ``genbab run``: instances.csv reading, naming, tables, resume, and the
worker process that survives overrunning and crashing instances.

verify is the fake in ``genbab_fakes``: each property file says what it returns.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import genbab_fakes as fakes
import pytest

from genbab.cli import main
from genbab.result import Result, Verdict
from genbab.runner.execute import InProcessExecutor, WorkerExecutor
from genbab.runner.instances import (
    HARNESS_CSV,
    RESULTS_COLUMNS,
    RESULTS_CSV,
    InstancesError,
    effective_timeout,
    instance_name,
    read_instances,
    read_results_table,
    run_batch,
    select_instances,
)
from genbab.runner.results import read_result_file

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The fake verify in this process; returns its call log."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("GENBAB_FAKE_LOG", str(log))
    monkeypatch.setitem(sys.modules, "genbab.pipeline", fakes.fake_module())
    return log


def write_benchmark(folder: Path, rows: dict[str, tuple[str, float]]) -> Path:
    """A benchmark folder: onnx/net.onnx, vnnlib/<name>.vnnlib, instances.csv."""
    (folder / "onnx").mkdir(parents=True)
    (folder / "vnnlib").mkdir()
    (folder / "onnx" / "net.onnx").write_bytes(b"x")
    lines = []
    for name, (content, timeout) in rows.items():
        (folder / "vnnlib" / f"{name}.vnnlib").write_text(content + "\n")
        lines.append(f"onnx/net.onnx, vnnlib/{name}.vnnlib ,{timeout:g}")
    csv_path = folder / "instances.csv"
    csv_path.write_text("\n".join(lines) + "\n\n")
    return csv_path


def read_csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


# --- instances.csv --------------------------------------------------------------


def test_read_instances_tolerates_blank_lines_spaces_and_comments(tmp_path):
    csv_path = tmp_path / "bench" / "instances.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "# a comment\n"
        "onnx/a.onnx.gz,vnnlib/p 1.vnnlib.gz,116\n"
        "\n"
        "   \n"
        "  onnx/b.onnx ,  vnnlib/q.vnnlib , 3.5  \n"
        "/abs/c.onnx,vnnlib/q.vnnlib,1e2\r\n"
    )
    instances = read_instances(csv_path)
    assert [i.row for i in instances] == [2, 5, 6]
    assert [i.name for i in instances] == ["a__p_1", "b__q", "c__q"]
    assert [i.timeout for i in instances] == [116.0, 3.5, 100.0]
    assert instances[1].onnx == "onnx/b.onnx"
    assert instances[1].model_path == csv_path.parent / "onnx" / "b.onnx"
    assert instances[1].property_path == csv_path.parent / "vnnlib" / "q.vnnlib"
    assert instances[2].model_path == Path("/abs/c.onnx")


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("a.onnx,p.vnnlib", "expected 'onnx,vnnlib,timeout'"),
        ("a.onnx,p.vnnlib,10,extra", "expected 'onnx,vnnlib,timeout'"),
        (",p.vnnlib,10", "expected 'onnx,vnnlib,timeout'"),
        ("a.onnx,p.vnnlib,ten", "timeout 'ten' is not a number"),
        ("a.onnx,p.vnnlib,-5", "timeout must be positive"),
        ("a.onnx,p.vnnlib,nan", "timeout must be positive"),
    ],
)
def test_malformed_instances_line_names_file_and_line(tmp_path, line, needle):
    csv_path = tmp_path / "instances.csv"
    csv_path.write_text(f"a.onnx,p.vnnlib,10\n{line}\n")
    with pytest.raises(InstancesError, match=needle) as info:
        read_instances(csv_path)
    assert f"{csv_path}:2:" in str(info.value)


def test_missing_instances_csv_is_a_clear_error(tmp_path):
    with pytest.raises(InstancesError, match="cannot read .*nope.csv"):
        read_instances(tmp_path / "nope.csv")


def test_instance_names_are_safe_and_unique(tmp_path):
    assert (
        instance_name(
            "onnx/ACASXU_run2a_1_1_batch_2000.onnx.gz", "vnnlib/prop_1.vnnlib.gz"
        )
        == "ACASXU_run2a_1_1_batch_2000__prop_1"
    )
    assert instance_name("m/we?ird:net*.onnx", "..\\p<1>.vnnlib") == "we_ird_net___p_1"
    long_a = instance_name("x" * 300 + "a.onnx", "p.vnnlib")
    long_b = instance_name("x" * 300 + "b.onnx", "p.vnnlib")
    assert len(long_a) <= 150 and long_a != long_b
    csv_path = tmp_path / "instances.csv"
    csv_path.write_text(
        "a/net.onnx,p.vnnlib,1\nb/net.onnx,p.vnnlib,1\nNET.onnx,P.vnnlib,1\n"
    )
    names = [i.name for i in read_instances(csv_path)]
    assert names == ["net__p", "net__p-2", "NET__P-3"]


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="shared benchmarks missing")
def test_every_shared_benchmark_csv_reads_with_unique_names_and_existing_files():
    csvs = sorted(BENCHMARKS.glob("*/instances.csv"))
    assert csvs
    for csv_path in csvs:
        instances = read_instances(csv_path)
        assert instances, csv_path
        names = [i.name.lower() for i in instances]
        assert len(set(names)) == len(names), csv_path
        for inst in instances:
            assert inst.model_path.is_file(), inst.model_path
            assert inst.property_path.is_file(), inst.property_path
            assert inst.timeout > 0


def test_select_and_effective_timeout(tmp_path):
    csv_path = write_benchmark(
        tmp_path / "b", {"p1": ("unsat", 10), "p2": ("unsat", 10), "q3": ("sat", 10)}
    )
    instances = read_instances(csv_path)
    assert [i.name for i in select_instances(instances, contains="p")] == [
        "net__p1",
        "net__p2",
    ]
    assert [i.name for i in select_instances(instances, limit=1)] == ["net__p1"]
    assert [i.name for i in select_instances(instances, contains="q3", limit=5)] == [
        "net__q3"
    ]
    assert effective_timeout(100.0, 0.5) == 50.0
    assert effective_timeout(100.0, 2.0, max_timeout=60.0) == 60.0


# --- genbab run -----------------------------------------------------------------


MIXED = {
    "sat": ("sat", 10),
    "unsat": ("unsat", 20),
    "unknown": ("unknown", 30),
    "error": ("error", 40),
    "boom": ("raise", 50),
}


def test_run_writes_result_files_tables_and_summary(fake, tmp_path, capsys):
    csv_path = write_benchmark(tmp_path / "mybench", MIXED)
    out = tmp_path / "out"
    status = main(
        [
            "run",
            str(csv_path),
            "--out",
            str(out),
            "--in-process",
            "--timeout-scale",
            "0.5",
            "--max-timeout",
            "18",
        ]
    )
    stdout, stderr = capsys.readouterr()
    assert status == 0, stderr
    names = [f"net__{key}" for key in MIXED]

    # one result file and one report per instance
    expected = ["sat", "unsat", "unknown", "error", "error"]
    for name, verdict in zip(names, expected, strict=True):
        assert read_result_file(out / f"{name}.result")[0] == verdict
        assert (out / f"{name}.json").is_file()
    _, x, _ = read_result_file(out / "net__sat.result")
    assert x.tolist() == fakes.WITNESS_X

    # results.csv: header, then one row per instance in order
    rows = read_csv_rows(out / RESULTS_CSV)
    assert tuple(rows[0]) == RESULTS_COLUMNS
    assert [r[0] for r in rows[1:]] == names
    assert [r[3] for r in rows[1:]] == expected
    assert rows[1][1:3] == ["onnx/net.onnx", "vnnlib/sat.vnnlib"]
    assert float(rows[2][4]) == 0.25
    assert rows[5][5] == "RuntimeError: boom"
    assert rows[4][5] == fakes.ERROR_MESSAGE

    # harness csv: six columns, no header, category from the folder
    harness = read_csv_rows(out / HARNESS_CSV)
    assert harness[0] == [
        "mybench",
        "onnx/net.onnx",
        "vnnlib/sat.vnnlib",
        "0",
        "sat",
        "0.500",
    ]
    assert [r[4] for r in harness] == expected

    # timeouts: csv value x 0.5, capped at 18
    assert [float(c[2]) for c in fakes.calls(fake)] == [5.0, 10.0, 15.0, 18.0, 18.0]
    assert (out / "config.yaml").is_file()

    # summary table on stdout
    table = dict(line.split()[:2] for line in stdout.splitlines()[1:6])
    assert table == {
        "sat": "1",
        "unsat": "1",
        "unknown": "1",
        "timeout": "0",
        "error": "2",
    }
    assert stdout.splitlines()[-1].split()[:2] == ["total", "5"]
    assert "[5/5] net__boom: error" in stderr


def test_rerun_skips_finished_instances_and_retries_errors(fake, tmp_path, capsys):
    csv_path = write_benchmark(tmp_path / "b", MIXED)
    out = tmp_path / "out"
    args = ["run", str(csv_path), "--out", str(out), "--in-process"]
    assert main(args) == 0
    assert len(fakes.calls(fake)) == 5
    capsys.readouterr()

    # default: only the two errors run again
    assert main(args) == 0
    _, stderr = capsys.readouterr()
    calls = fakes.calls(fake)[5:]
    assert sorted(Path(c[1]).stem for c in calls) == ["boom", "error"]
    assert "skipped 3 instances already in" in stderr

    # with --retry unknown,error: those three
    assert main([*args, "--retry", "unknown,error"]) == 0
    assert sorted(Path(c[1]).stem for c in fakes.calls(fake)[7:]) == [
        "boom",
        "error",
        "unknown",
    ]
    # with --retry "" nothing runs
    assert main([*args, "--retry", ""]) == 0
    assert len(fakes.calls(fake)) == 10
    out_text, _ = capsys.readouterr()
    assert "(0 run, 5 skipped)" in out_text.splitlines()[-1]

    # the table keeps every attempt; the latest counts
    latest = read_results_table(out / RESULTS_CSV)
    assert len(read_csv_rows(out / RESULTS_CSV)) == 1 + 5 + 2 + 3
    assert {k: str(v.verdict) for k, v in latest.items()} == {
        "net__sat": "sat",
        "net__unsat": "unsat",
        "net__unknown": "unknown",
        "net__error": "error",
        "net__boom": "error",
    }


def test_changed_row_under_the_same_name_is_not_skipped(fake, tmp_path):
    csv_path = write_benchmark(tmp_path / "b", {"p": ("unsat", 10)})
    out = tmp_path / "out"
    assert main(["run", str(csv_path), "--out", str(out), "--in-process", "-q"]) == 0
    (tmp_path / "b" / "other").mkdir()
    (tmp_path / "b" / "other" / "net.onnx").write_bytes(b"x")
    csv_path.write_text("other/net.onnx,vnnlib/p.vnnlib,10\n")
    assert main(["run", str(csv_path), "--out", str(out), "--in-process", "-q"]) == 0
    assert len(fakes.calls(fake)) == 2


def test_interrupted_batch_keeps_finished_rows(fake, tmp_path):
    csv_path = write_benchmark(
        tmp_path / "b", {"a": ("unsat", 10), "b": ("sat", 10), "c": ("unsat", 10)}
    )
    inner = InProcessExecutor()
    seen = []

    def execute(model_path, property_path, timeout):
        seen.append(property_path)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return inner(model_path, property_path, timeout)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_batch(read_instances(csv_path), out, execute)
    assert [r[0] for r in read_csv_rows(out / RESULTS_CSV)[1:]] == ["net__a"]
    summary = run_batch(read_instances(csv_path), out, InProcessExecutor())
    assert (summary.ran, summary.skipped) == (2, 1)
    assert [str(r.verdict) for r in summary.records] == ["unsat", "sat", "unsat"]


def test_unreadable_rows_in_results_csv_are_ignored(tmp_path):
    table = tmp_path / RESULTS_CSV
    table.write_text(
        ",".join(RESULTS_COLUMNS) + "\n"
        "a,m.onnx,p.vnnlib,unsat,1.5,\n"
        "b,m.onnx,q.vnnlib,holds,1.0,\n"
        "c,m.onnx,r.vnnli"
    )
    records = read_results_table(table)
    assert list(records) == ["a"]
    assert records["a"].verdict == Verdict.UNSAT and records["a"].seconds == 1.5


def test_run_with_bad_csv_or_config_exits_1(tmp_path, capsys):
    bad = tmp_path / "instances.csv"
    bad.write_text("only-two,fields\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"error: {bad}:1: expected 'onnx,vnnlib,timeout', got 'only-two,fields'"
    ]
    assert main(["run", str(bad), "--set", "nosuch.key=1"]) == 1
    assert "unknown section 'nosuch'" in capsys.readouterr().err


# --- worker process ----------------------------------------------------------------


def test_worker_survives_overrun_and_crash(tmp_path, monkeypatch):
    env = fakes.install_site(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])  # spawned workers see it
    monkeypatch.setenv("GENBAB_FAKE_LOG", str(tmp_path / "calls.log"))
    csv_path = write_benchmark(
        tmp_path / "b",
        {
            "a": ("sat", 30),
            "slow": ("sleep 60", 1),
            "crash": ("crash", 30),
            "b": ("unsat", 30),
            "c": ("unknown", 30),
        },
    )
    start = time.monotonic()
    with WorkerExecutor(grace=0.5) as executor:
        summary = run_batch(read_instances(csv_path), tmp_path / "out", executor)
        started = executor.started
    elapsed = time.monotonic() - start
    verdicts = [str(r.verdict) for r in summary.records]
    assert verdicts == ["sat", "timeout", "error", "unsat", "unknown"]
    assert "killed after" in summary.records[1].message
    assert 1.5 <= summary.records[1].seconds < 4.0
    assert summary.records[2].message == "worker process died (exit code 3)"
    assert started == 3  # first, after the kill, after the crash
    assert len(fakes.calls(tmp_path / "calls.log")) == 5
    assert elapsed < 20
    _, x, y = read_result_file(tmp_path / "out" / "net__a.result")
    assert x.tolist() == fakes.WITNESS_X and y.tolist() == fakes.WITNESS_Y


def test_python_m_genbab_run_end_to_end(tmp_path):
    env = fakes.install_site(tmp_path / "site")
    env["GENBAB_FAKE_LOG"] = str(tmp_path / "calls.log")
    csv_path = write_benchmark(
        tmp_path / "bench", {"a": ("unsat", 30), "slow": ("sleep 60", 1)}
    )
    out = tmp_path / "out"
    args = ["run", str(csv_path), "--out", str(out), "--grace", "0.5"]
    proc = fakes.run_genbab(args, env)
    assert proc.returncode == 0, proc.stderr
    assert [r[3] for r in read_csv_rows(out / RESULTS_CSV)[1:]] == ["unsat", "timeout"]
    assert read_result_file(out / "net__slow.result")[0] == Verdict.TIMEOUT
    assert proc.stdout.splitlines()[-1].split()[:2] == ["total", "2"]

    again = fakes.run_genbab([*args, "--retry", "error"], env)
    assert again.returncode == 0
    assert "skipped 2 instances" in again.stderr
    assert len(fakes.calls(tmp_path / "calls.log")) == 2


def test_in_process_executor_never_raises(fake, tmp_path):
    files = fakes.make_files(tmp_path / "in", boom="raise")
    result = InProcessExecutor()(files["model"], files["boom"], 5.0)
    assert isinstance(result, Result)
    assert (result.verdict, result.message) == (Verdict.ERROR, "RuntimeError: boom")


def test_ctrl_c_during_run_gives_one_line_and_keeps_results(tmp_path):
    # SIGINT to the whole process group, as a terminal's Ctrl-C does.
    env = fakes.install_site(tmp_path / "site")
    env["GENBAB_FAKE_LOG"] = str(tmp_path / "calls.log")
    csv_path = write_benchmark(
        tmp_path / "bench", {"a": ("unsat", 30), "slow": ("sleep 60", 60)}
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "genbab", "run", str(csv_path), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while len(fakes.calls(tmp_path / "calls.log")) < 2:  # "slow" has started
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr
    assert [r[3] for r in read_csv_rows(out / RESULTS_CSV)[1:]] == ["unsat"]


def test_resumed_run_with_other_options_keeps_the_first_config(fake, tmp_path, caplog):
    csv_path = write_benchmark(tmp_path / "b", {"a": ("unsat", 30)})
    out = tmp_path / "out"
    args = ["run", str(csv_path), "--out", str(out), "--in-process"]
    assert main(args) == 0
    first = (out / "config.yaml").read_text()
    assert main([*args, "--set", "attack.restarts=3"]) == 0
    assert (out / "config.yaml").read_text() == first
    assert "restarts: 3" in (out / "config.latest.yaml").read_text()
    assert "options differ" in caplog.text
    caplog.clear()
    assert main(args) == 0  # the same options again: no warning
    assert "options differ" not in caplog.text


def test_empty_selection_warns(fake, tmp_path, caplog):
    csv_path = write_benchmark(tmp_path / "b", {"a": ("unsat", 30)})
    args = ["run", str(csv_path), "--out", str(tmp_path / "o"), "--in-process"]
    assert main([*args, "--filter", "zzz"]) == 0
    assert "no instances to run" in caplog.text
    assert fakes.calls(fake) == []
