"""Checks of the shipped LSTM models, their properties and their instance list.

The files are written by ``scripts/train_lstm_models.py``. The quickest model
to train is retrained into a temporary folder and its files are compared byte
for byte; the operator models are re-exported from their committed weights. Bounds
of genbab on the shipped graphs must enclose onnxruntime's outputs, and
``genbab.verify`` must reach the verdicts the script recorded.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from lstm_helpers import box_samples, output_bounds

import genbab
from genbab.config import load_config
from genbab.model import load_model
from genbab.result import Verdict
from genbab.spec import read_vnnlib

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_lstm_models.py"
CSV_PATH = ROOT / "lstm_instances.csv"
SUMMARY = json.loads((ROOT / "models" / "lstm_summary.json").read_text())
INSTANCES = SUMMARY["instances"]
MODEL_FILES = sorted((ROOT / "models").glob("lstm_*.onnx"))
ACCURACY_THRESHOLD = 0.93
RETRAINED = ("lstm_unrolled_4x16_h16",)  # the quickest to train


def _load_script() -> ModuleType:
    name = "train_lstm_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return _load_script()


@pytest.fixture(scope="module")
def split(script: ModuleType) -> tuple[np.ndarray, ...]:
    return script.demo.load_digits_split()


def _spec(script: ModuleType, name: str):  # noqa: ANN202
    return next(s for s in script.MODEL_SPECS if s.name == name)


def _box(inst: dict) -> tuple[np.ndarray, np.ndarray]:
    (case,) = read_vnnlib(ROOT / inst["vnnlib"], 64, 10).cases
    return np.asarray(case.lower), np.asarray(case.upper)


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime logits ``[N, 10]`` of flattened images ``[N, 64]``."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    rows = [sess.run(None, {inp.name: xi.reshape(inp.shape)})[0][0] for xi in x]
    return np.stack(rows)


def test_files_match_script_summary_and_csv(script: ModuleType) -> None:
    names = {s.name for s in script.MODEL_SPECS}
    assert {p.stem for p in MODEL_FILES} == names == set(SUMMARY["models"])
    assert {s.form for s in script.MODEL_SPECS} == {"operator", "unrolled"}
    with CSV_PATH.open(newline="") as f:
        rows = list(csv.reader(f))
    assert [(r[0], r[1]) for r in rows] == [(i["onnx"], i["vnnlib"]) for i in INSTANCES]
    assert all(float(r[2]) == script.TIMEOUT_S for r in rows)
    on_disk = {f"vnnlib/{p.name}" for p in (ROOT / "vnnlib").glob("lstm_*.vnnlib")}
    assert on_disk == {r[1] for r in rows}
    assert len(rows) == len(names) * script.IMAGES_PER_MODEL * len(script.EPSILONS)
    known = [i["known"] for i in INSTANCES]
    assert known.count("sat") >= 2 and known.count("unsat") >= 2


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_shipped_model_forms_and_accuracy(
    path: Path, script: ModuleType, split: tuple[np.ndarray, ...]
) -> None:
    spec = _spec(script, path.stem)
    model = onnx.load(path)
    ops = {n.op_type for n in model.graph.node}
    if spec.form == "operator":
        assert "LSTM" in ops
    else:
        assert "LSTM" not in ops and {"Sigmoid", "Tanh", "Mul", "Gemm"} <= ops
    _, x_test, _, y_test = split
    accuracy = float(np.mean(_logits(path, x_test).argmax(axis=1) == y_test))
    assert accuracy > ACCURACY_THRESHOLD
    recorded = SUMMARY["models"][spec.name]["test_accuracy"]
    assert accuracy == pytest.approx(recorded, abs=1e-4)


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_genbab_graph_matches_onnxruntime(
    path: Path, split: tuple[np.ndarray, ...]
) -> None:
    graph = load_model(path)
    x_test = split[1]
    rng = np.random.default_rng(0)
    x = np.concatenate([x_test[:20], rng.uniform(0, 1, (5, 64))]).astype(np.float32)
    ref = _logits(path, x)
    batch = torch.from_numpy(x.reshape(-1, *graph.input_shape))
    y = graph.to("cpu", torch.float64).forward(batch.double()).numpy()
    assert np.abs(y.reshape(len(x), -1) - ref).max() < 1e-5


@pytest.mark.parametrize(
    "inst", [i for i in INSTANCES if i["known"] == "sat"], ids=lambda i: i["vnnlib"]
)
def test_recorded_counterexample_replays(inst: dict) -> None:
    lower, upper = _box(inst)
    point = np.array(inst["witness"], dtype=np.float32)
    assert np.all(point >= lower) and np.all(point <= upper)
    logits = _logits(ROOT / inst["onnx"], point[None])[0]
    assert np.delete(logits, inst["label"]).max() >= logits[inst["label"]]


@pytest.mark.parametrize(
    "inst", [i for i in INSTANCES if i["known"] == "unsat"], ids=lambda i: i["vnnlib"]
)
def test_recorded_ibp_proof_holds(inst: dict, script: ModuleType) -> None:
    spec = _spec(script, inst["model"])
    model = script.classifier_from_onnx(spec, onnx.load(ROOT / inst["onnx"]))
    lower, upper = _box(inst)
    margin = script.ibp_min_margin(model, lower, upper, inst["label"])
    assert margin > 1e-4
    assert margin == pytest.approx(inst["ibp_margin"], rel=1e-4)
    x = np.random.default_rng(0).uniform(lower, upper, (64, 64)).astype(np.float32)
    logits = _logits(ROOT / inst["onnx"], x)
    sampled = logits[:, inst["label"]] - np.delete(logits, inst["label"], 1).max(1)
    assert sampled.min() >= margin - 1e-4, "IBP bound above a sampled margin"


def test_ibp_encloses_sampled_margins(script: ModuleType, split: tuple) -> None:
    """The script's IBP is a true lower bound also where it proves nothing."""
    spec = _spec(script, "lstm_unrolled_4x16_h16")
    path = ROOT / "models" / f"{spec.name}.onnx"
    model = script.classifier_from_onnx(spec, onnx.load(path))
    _, x_test, _, y_test = split
    for k, eps in [(0, 0.001), (1, 0.003), (2, 0.0003)]:
        lower, upper = script.demo.robustness_box(x_test[k], eps)
        margin = script.ibp_min_margin(model, lower, upper, int(y_test[k]))
        x = np.random.default_rng(k).uniform(lower, upper, (200, 64)).astype("f4")
        with torch.no_grad():
            logits = model(torch.from_numpy(x)).numpy()
        label = int(y_test[k])
        sampled = logits[:, label] - np.delete(logits, label, 1).max(1)
        assert sampled.min() >= margin - 1e-9


@pytest.mark.parametrize(
    ("name", "eps", "method"),
    [
        ("lstm_unrolled_4x16_h16", 0.015, "alpha-crown"),
        ("lstm_op_8x8_h16", 0.01, "crown"),
    ],
)
def test_bounds_enclose_onnxruntime_on_property_box(
    name: str, eps: float, method: str
) -> None:
    inst = next(i for i in INSTANCES if i["model"] == name and i["eps"] == eps)
    path = ROOT / inst["onnx"]
    lower, upper = _box(inst)
    lo, hi = output_bounds(path, lower, upper, method)
    y = _logits(path, box_samples(lower, upper, 100))
    assert np.all(y >= lo - 1e-6) and np.all(y <= hi + 1e-6)
    label = inst["label"]
    assert lo[label] > y[:, label].min() - 60  # not vacuous


@pytest.mark.parametrize("name", RETRAINED)
def test_script_reproduces_shipped_files(
    tmp_path: Path, script: ModuleType, name: str
) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script runs
    try:
        summary = script.write_lstm(tmp_path, only=name)
    finally:
        torch.set_num_threads(threads)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.*"))
    assert Path("models") / f"{name}.onnx" in written
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    assert summary["models"][name] == SUMMARY["models"][name]
    assert summary["instances"] == [i for i in INSTANCES if i["model"] == name]


@pytest.mark.parametrize("name", ["lstm_op_8x8_h16", "lstm_op_8x8_h32"])
def test_operator_export_reproduces_committed_model(
    script: ModuleType, name: str
) -> None:
    spec = _spec(script, name)
    path = ROOT / "models" / f"{spec.name}.onnx"
    model = script.classifier_from_onnx(spec, onnx.load(path))
    exported = script.export(spec, model)
    assert exported.SerializeToString() == onnx.load(path).SerializeToString()


@pytest.mark.parametrize("known", ["unsat", "sat"])
def test_verify_reaches_the_recorded_verdict(known: str) -> None:
    inst = next(
        i
        for i in INSTANCES
        if i["model"] == "lstm_unrolled_4x16_h16" and i["known"] == known
    )
    config = load_config(overrides=["bounds.method=crown"])
    result = genbab.verify(
        ROOT / inst["onnx"], ROOT / inst["vnnlib"], timeout=60, config=config
    )
    assert result.verdict == Verdict(known), result.message
    if known == "sat":
        cex = result.counterexample
        assert cex is not None
        lower, upper = _box(inst)
        assert np.all(cex.x >= lower) and np.all(cex.x <= upper)
        logits = _logits(ROOT / inst["onnx"], cex.x[None].astype(np.float32))[0]
        assert np.delete(logits, inst["label"]).max() >= logits[inst["label"]]
