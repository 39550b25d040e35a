"""Checks of the committed demo models, properties and instance list.

The files are written by ``scripts/train_demo_models.py``; these tests do not
retrain (too slow) but recompute everything that can be checked cheaply from the
committed files: accuracy on the fixed digits test split, the property boxes and
labels, the recorded counterexamples (replayed with onnxruntime) and the
recorded IBP proofs (recomputed from the ONNX weights).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_demo_models.py"
CSV_PATH = ROOT / "demo_instances.csv"
SUMMARY_PATH = ROOT / "models" / "demo_summary.json"
ACCURACY_THRESHOLD = 0.93
# The LSTM models and properties (scripts/train_lstm_models.py) share the folders.
OTHER_PREFIX = "lstm_"
MODEL_FILES = sorted(
    p for p in (ROOT / "models").glob("*.onnx") if not p.name.startswith(OTHER_PREFIX)
)
SUMMARY = json.loads(SUMMARY_PATH.read_text())
INSTANCES = SUMMARY["instances"]
INSTANCE_IDS = [Path(i["vnnlib"]).stem for i in INSTANCES]

_BOUND = re.compile(r"^\(assert \((<=|>=) X_(\d+) (\S+)\)\)$", re.M)
_OUT = re.compile(r"\(and \(>= Y_(\d+) Y_(\d+)\)\)")


def _load_script() -> ModuleType:
    name = "train_demo_models"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    return _load_script()


@pytest.fixture(scope="module")
def split(demo: ModuleType) -> tuple[np.ndarray, ...]:
    return demo.load_digits_split()


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _logits(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """onnxruntime logits ``[N, 10]`` of images ``[N, 64]``, one at a time."""
    rows = [sess.run(None, {"input": xi[None].astype(np.float32)})[0][0] for xi in x]
    return np.stack(rows)


def _read_property(path: Path) -> tuple[np.ndarray, np.ndarray, int, list[int]]:
    """Box, true label and wrong classes of one of our generated files (regex)."""
    text = path.read_text()
    lower = np.full(64, np.nan)
    upper = np.full(64, np.nan)
    for op, idx, value in _BOUND.findall(text):
        (lower if op == ">=" else upper)[int(idx)] = float(value)
    pairs = [(int(j), int(t)) for j, t in _OUT.findall(text)]
    labels = {t for _, t in pairs}
    assert len(labels) == 1, f"{path}: output constraints mix labels {labels}"
    return lower, upper, labels.pop(), sorted(j for j, _ in pairs)


def _torch_from_onnx(demo: ModuleType, name: str) -> torch.nn.Sequential:
    """The torch MLP of model ``name`` with the weights of its committed ONNX file."""
    spec = next(s for s in demo.MODEL_SPECS if s.name == name)
    model = demo.build_mlp(spec)
    inits = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(ROOT / "models" / f"{name}.onnx").graph.initializer
    }
    for i, lin in enumerate(m for m in model if isinstance(m, torch.nn.Linear)):
        lin.weight.data = torch.from_numpy(inits[f"layer{i}.weight"].copy())
        lin.bias.data = torch.from_numpy(inits[f"layer{i}.bias"].copy())
    return model.eval()


def test_model_files_match_script_and_summary(demo: ModuleType) -> None:
    names = {p.stem for p in MODEL_FILES}
    assert names == {s.name for s in demo.MODEL_SPECS}
    assert names == set(SUMMARY["models"])
    assert {"digits_sigmoid_2x32", "digits_tanh_2x32", "digits_sigmoid_3x64"} <= names


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_model_loads_and_is_accurate(path: Path, split: tuple[np.ndarray, ...]) -> None:
    _, x_test, _, y_test = split
    sess = _session(path)
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("input", [1, 64], "tensor(float)")
    assert (out.name, out.shape) == ("output", [1, 10])

    accuracy = float(np.mean(_logits(sess, x_test).argmax(axis=1) == y_test))
    assert accuracy > ACCURACY_THRESHOLD
    assert accuracy == pytest.approx(
        SUMMARY["models"][path.stem]["test_accuracy"], abs=1e-4
    )


def test_instances_csv_lists_existing_files() -> None:
    with CSV_PATH.open(newline="") as f:
        rows = list(csv.reader(f))
    assert 20 <= len(rows) <= 40
    assert len({r[1] for r in rows}) == len(rows), "duplicate property"
    for onnx_rel, vnnlib_rel, timeout in rows:
        assert (CSV_PATH.parent / onnx_rel).is_file(), onnx_rel
        assert (CSV_PATH.parent / vnnlib_rel).is_file(), vnnlib_rel
        assert onnx_rel.startswith("models/") and vnnlib_rel.startswith("vnnlib/")
        assert float(timeout) == 30
    listed = {r[1] for r in rows}
    on_disk = {
        f"vnnlib/{p.name}"
        for p in (ROOT / "vnnlib").glob("*.vnnlib")
        if not p.name.startswith(OTHER_PREFIX)
    }
    assert listed == on_disk, "every property file is an instance and vice versa"
    assert [(r[0], r[1]) for r in rows] == [(i["onnx"], i["vnnlib"]) for i in INSTANCES]


def test_instance_mix_has_proofs_and_counterexamples() -> None:
    known = [
        i["known"] for i in INSTANCES if not i["vnnlib"].startswith("vnnlib/smoke")
    ]
    assert known.count("sat") >= 3
    assert known.count("unsat") >= 5
    smoke = {i["vnnlib"]: i["known"] for i in INSTANCES[:2]}
    assert smoke == {
        "vnnlib/smoke_unsat.vnnlib": "unsat",
        "vnnlib/smoke_sat.vnnlib": "sat",
    }


@pytest.mark.parametrize("inst", INSTANCES, ids=INSTANCE_IDS)
def test_property_is_robustness_around_a_correct_image(
    inst: dict, split: tuple[np.ndarray, ...]
) -> None:
    _, x_test, _, y_test = split
    lower, upper, label, wrong = _read_property(ROOT / inst["vnnlib"])
    k, eps = inst["image_index"], inst["eps"]
    image = x_test[k].astype(np.float64)

    # box = clip(image +- eps, 0, 1) up to float32 rounding, containing the image
    assert not np.isnan(lower).any() and not np.isnan(upper).any()
    assert np.all(lower <= image) and np.all(image <= upper)
    np.testing.assert_allclose(lower, np.clip(image - eps, 0, 1), atol=1e-7)
    np.testing.assert_allclose(upper, np.clip(image + eps, 0, 1), atol=1e-7)

    # the violation is "some other class >= the true label", for every other class
    assert label == y_test[k] == inst["label"]
    assert wrong == [j for j in range(10) if j != label]
    sess = _session(ROOT / inst["onnx"])
    assert int(_logits(sess, x_test[k : k + 1]).argmax()) == label


@pytest.mark.parametrize(
    "inst", [i for i in INSTANCES if i["known"] == "sat"], ids=lambda i: i["vnnlib"]
)
def test_recorded_counterexample_replays(inst: dict) -> None:
    lower, upper, label, _ = _read_property(ROOT / inst["vnnlib"])
    point = np.array(inst["witness"], dtype=np.float32)
    assert np.array_equal(point.astype(np.float64), inst["witness"]), "not float32"
    assert np.all(point >= lower) and np.all(point <= upper)
    logits = _logits(_session(ROOT / inst["onnx"]), point[None])[0]
    assert np.delete(logits, label).max() >= logits[label]


@pytest.mark.parametrize(
    "inst", [i for i in INSTANCES if i["known"] == "unsat"], ids=lambda i: i["vnnlib"]
)
def test_recorded_ibp_proof_holds(inst: dict, demo: ModuleType) -> None:
    lower, upper, label, _ = _read_property(ROOT / inst["vnnlib"])
    model = _torch_from_onnx(demo, inst["model"])
    margin = demo.ibp_min_margin(model, lower, upper, label)
    assert margin > 1e-4
    assert margin == pytest.approx(inst["ibp_margin"], rel=1e-4)

    # sanity: sampled points of the box (and its corners' extremes) keep the label
    gen = torch.Generator().manual_seed(0)
    lo, hi = torch.from_numpy(lower), torch.from_numpy(upper)
    x = lo + (hi - lo) * torch.rand((512, 64), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x.float())
    assert bool((logits.argmax(dim=1) == label).all())
    others = [j for j in range(10) if j != label]
    sampled = (logits[:, label : label + 1] - logits[:, others]).min().item()
    assert sampled >= margin - 1e-4, "IBP bound above a sampled margin"


def _array_leaves(obj: object, depth: int = 0) -> list[np.ndarray]:
    """Every numeric array found inside whatever the VNN-LIB reader returned."""
    if depth > 6 or obj is None or isinstance(obj, str | bytes):
        return []
    if isinstance(obj, torch.Tensor):
        return [obj.detach().cpu().double().numpy()]
    if isinstance(obj, np.ndarray):
        return [obj.astype(np.float64)] if obj.dtype.kind in "fiu" else []
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, list | tuple):
        try:
            return [np.asarray(obj, dtype=np.float64)]
        except (TypeError, ValueError):
            children = list(obj)
    elif is_dataclass(obj):
        children = [getattr(obj, f.name) for f in fields(obj)]
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    else:
        return []
    return [a for c in children for a in _array_leaves(c, depth + 1)]


@pytest.mark.parametrize("inst", INSTANCES, ids=INSTANCE_IDS)
def test_property_parses_with_genbab_reader(inst: dict) -> None:
    try:
        from genbab.spec import read_vnnlib
    except ImportError as exc:
        pytest.skip(f"genbab.spec.read_vnnlib not available yet ({exc})")
    path = ROOT / inst["vnnlib"]
    lower, upper, _, _ = _read_property(path)
    prop = read_vnnlib(path)

    # structure-agnostic: the 64-input box is in there, and [*, 10] output rows
    leaves = _array_leaves(prop)
    vectors = [a.reshape(-1) for a in leaves if a.size == 64]
    vectors += [col for a in leaves if a.shape[-2:] == (64, 2) for col in a.T]
    vectors += [row for a in leaves if a.shape[-2:] == (2, 64) for row in a]
    assert any(np.array_equal(v, lower) for v in vectors), "input lower bounds"
    assert any(np.array_equal(v, upper) for v in vectors), "input upper bounds"
    assert any(a.ndim >= 1 and a.shape[-1] == 10 for a in leaves), "10 outputs"
    assert not any(a.ndim == 2 and a.shape[-1] == 65 for a in leaves), "extra input"


@pytest.mark.parametrize(
    ("activation", "gelu_style"),
    [("sigmoid", "op"), ("tanh", "op"), ("sin", "op"), ("gelu", "op"), ("gelu", "erf")],
)
def test_export_matches_torch_on_tiny_model(
    demo: ModuleType, activation: str, gelu_style: str
) -> None:
    spec = demo.ModelSpec("tiny", activation, (5, 4), seed=0)
    torch.manual_seed(0)
    model = demo.build_mlp(spec).eval()
    onnx_model = demo.mlp_to_onnx(model, activation, "tiny", gelu_style=gelu_style)

    graph = onnx_model.graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["output"]
    assert [n.op_type for n in graph.node].count("Gemm") == 3
    expected_opset = 20 if (activation, gelu_style) == ("gelu", "op") else 17
    assert onnx_model.opset_import[0].version == expected_opset

    x = np.random.default_rng(0).uniform(-3, 3, (16, 64)).astype(np.float32)
    assert demo.max_onnx_torch_diff(model, onnx_model, x) < 1e-5


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "sin", "gelu"])
def test_ibp_activation_range_contains_samples(
    demo: ModuleType, activation: str
) -> None:
    module = demo._activation_module(activation)
    gen = torch.Generator().manual_seed(1)
    centre = 8 * torch.rand(200, generator=gen, dtype=torch.float64) - 4
    radius = 4 * torch.rand(200, generator=gen, dtype=torch.float64) ** 3
    lo, hi = centre - radius, centre + radius
    low, high = demo._activation_interval(module, lo, hi)
    t = torch.linspace(0, 1, 401, dtype=torch.float64)[:, None]
    values = module(lo + t * (hi - lo))
    assert bool((values >= low - 1e-12).all() and (values <= high + 1e-12).all())
    # and the range is tight: its ends are (nearly) attained on the dense grid
    assert float((values.min(dim=0).values - low).max()) < 1e-3
    assert float((high - values.max(dim=0).values).max()) < 1e-3
