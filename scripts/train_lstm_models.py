"""Train small LSTM digit classifiers; write ONNX, VNN-LIB and an instance list.

Each 8x8 image of scikit-learn's handwritten digits is read as a sequence: 8 steps
of one row (8 pixels), or 4 steps of two rows (16 pixels). A one-layer LSTM runs
over the sequence and a linear layer maps its last hidden state to the 10 class
scores. Running ``python scripts/train_lstm_models.py`` from the repository root
(re)creates:

- ``models/lstm_*.onnx``: in two forms. *operator* models use the ONNX ``LSTM``
  operator (written node by node with ``onnx.helper``): ``input [1, steps,
  features] -> Transpose -> LSTM -> Y_h -> Reshape -> Gemm -> output [1, 10]``.
  *unrolled* models are what ``torch.onnx.export`` writes for an LSTM coded as
  explicit cell steps: per step ``Gather`` of the input row, ``Gemm`` and
  ``Add`` for the gates, ``Slice`` (from ``chunk``), ``Sigmoid``, ``Tanh`` and
  ``Mul``. Each is checked against the torch model with onnxruntime on the whole
  test split.
- ``vnnlib/lstm_*.vnnlib``: L-inf robustness properties around test images, in
  VNN-LIB 1.0, written with the helpers of ``scripts/train_demo_models.py`` (the
  inputs ``X_0 .. X_63`` are the pixels in row-major order, as the ONNX input is
  laid out).
- ``lstm_instances.csv``: the instances in VNN-COMP ``instances.csv`` form.
- ``models/lstm_summary.json``: accuracies and, per instance, its known verdict:
  ``unsat`` when interval bound propagation through the unrolled cell (IBP,
  computed here in float64, independently of genbab) proves it, ``sat`` with the
  witness when a PGD attack found one that onnxruntime confirms, else ``unknown``.

Everything is seeded, single-threaded and on the CPU, so two runs write identical
files. ``--only NAME`` retrains one model (and writes only its files).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

NUM_PIXELS = 64
NUM_CLASSES = 10
EPSILONS = (0.0001, 0.01, 0.015, 0.05)
IMAGES_PER_MODEL = 2
TIMEOUT_S = 30
FIRST_IMAGE = 5  # test images before this one are left to the demo MLPs
# torch stores the gate blocks as i, f, g, o; ONNX as i, o, f, c (c = torch's g)
ONNX_FROM_TORCH_GATES = (0, 3, 1, 2)


def _load_demo() -> ModuleType:
    """``scripts/train_demo_models.py`` as a module (its data split and writers)."""
    name = "train_demo_models"
    if name not in sys.modules:
        path = Path(__file__).resolve().with_name(f"{name}.py")
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


demo = _load_demo()


@dataclass(frozen=True)
class LstmSpec:
    """Architecture, export form and training recipe of one LSTM classifier.

    Attributes:
        name: File stem, starting with ``lstm_``.
        form: ``"operator"`` (ONNX ``LSTM`` node) or ``"unrolled"`` (explicit
            cell steps exported by torch).
        steps: Sequence length; each step reads ``64 // steps`` pixels.
        hidden: Hidden size.
        seed: Seed of the initialisation and of the minibatch order.
        epochs: Passes over the training split.
        lr: Adam learning rate.
    """

    name: str
    form: str
    steps: int
    hidden: int
    seed: int
    epochs: int = 60
    lr: float = 5e-3

    @property
    def features(self) -> int:
        """Pixels read per step."""
        return NUM_PIXELS // self.steps


MODEL_SPECS = (
    LstmSpec("lstm_op_8x8_h16", "operator", steps=8, hidden=16, seed=21),
    LstmSpec("lstm_op_8x8_h32", "operator", steps=8, hidden=32, seed=22),
    LstmSpec("lstm_unrolled_4x16_h16", "unrolled", steps=4, hidden=16, seed=23),
)


class LstmClassifier(nn.Module):
    """``nn.LSTM`` over the image rows, then a linear layer on the last state.

    Attributes:
        steps: Sequence length.
        lstm: One-layer, batch-first ``nn.LSTM``.
        fc: ``hidden -> 10``.
    """

    def __init__(self, steps: int, features: int, hidden: int) -> None:
        super().__init__()
        self.steps = steps
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, 10]`` of images ``[N, 64]`` (or ``[N, steps, features]``)."""
        _, (h, _) = self.lstm(x.reshape(len(x), self.steps, -1))
        return self.fc(h[-1])


class UnrolledLstm(nn.Module):
    """The same network as a :class:`LstmClassifier`, one explicit cell per step.

    Shares the classifier's parameters; this is the form written to ONNX for
    *unrolled* models (``torch.onnx.export`` traces the Python loop).
    """

    def __init__(self, model: LstmClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, 10]`` of inputs ``[N, steps, features]``."""
        lstm = self.model.lstm
        h = x.new_zeros(x.shape[0], lstm.hidden_size)
        c = x.new_zeros(x.shape[0], lstm.hidden_size)
        for t in range(self.model.steps):
            gates = F.linear(x[:, t], lstm.weight_ih_l0, lstm.bias_ih_l0) + F.linear(
                h, lstm.weight_hh_l0, lstm.bias_hh_l0
            )
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.model.fc(h)


def train_lstm(spec: LstmSpec, x_train: np.ndarray, y_train: np.ndarray) -> nn.Module:
    """Train the classifier of ``spec`` with Adam on minibatches (deterministic).

    Args:
        spec: Architecture and recipe.
        x_train: Images, shape ``[N, 64]``, float32 in [0, 1].
        y_train: Labels, shape ``[N]``.

    Returns:
        The trained :class:`LstmClassifier` in eval mode.
    """
    torch.manual_seed(spec.seed)
    model = LstmClassifier(spec.steps, spec.features, spec.hidden)
    order_gen = torch.Generator().manual_seed(spec.seed)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(spec.epochs):
        perm = torch.randperm(len(x), generator=order_gen)
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def onnx_gate_order(t: np.ndarray) -> np.ndarray:
    """Reorder torch's gate blocks ``i, f, g, o`` (axis 0) to ONNX's ``i, o, f, c``.

    Args:
        t: Weights ``[4 * hidden, ...]`` or bias ``[4 * hidden]``.
    """
    blocks = np.split(t, 4)
    return np.concatenate([blocks[k] for k in ONNX_FROM_TORCH_GATES])


def classifier_from_onnx(spec: LstmSpec, onnx_model: onnx.ModelProto) -> LstmClassifier:
    """The :class:`LstmClassifier` whose weights are those of an exported model.

    Args:
        spec: The model's architecture.
        onnx_model: Its export by :func:`export` (either form).

    Returns:
        The torch model in eval mode.
    """
    inits = {t.name: numpy_helper.to_array(t) for t in onnx_model.graph.initializer}
    torch_order = [ONNX_FROM_TORCH_GATES.index(k) for k in range(4)]

    def from_onnx(t: np.ndarray) -> np.ndarray:
        blocks = np.split(t, 4)
        return np.concatenate([blocks[k] for k in torch_order])

    if spec.form == "operator":
        b_ih, b_hh = np.split(inits["lstm.B"][0], 2)
        state = {
            "lstm.weight_ih_l0": from_onnx(inits["lstm.W"][0]),
            "lstm.weight_hh_l0": from_onnx(inits["lstm.R"][0]),
            "lstm.bias_ih_l0": from_onnx(b_ih),
            "lstm.bias_hh_l0": from_onnx(b_hh),
            "fc.weight": inits["fc.weight"],
            "fc.bias": inits["fc.bias"],
        }
    else:
        state = {k.removeprefix("model."): v for k, v in inits.items()}
    model = LstmClassifier(spec.steps, spec.features, spec.hidden)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    return model.eval()


def lstm_operator_onnx(model: LstmClassifier, name: str) -> onnx.ModelProto:
    """Write a classifier with the ONNX ``LSTM`` operator, node by node.

    Args:
        model: A trained :class:`LstmClassifier`.
        name: Graph name.

    Returns:
        The checked model: ``input [1, steps, features] -> output [1, 10]``.
    """
    lstm = model.lstm
    hidden = lstm.hidden_size

    def arr(p: Tensor) -> np.ndarray:
        return p.detach().numpy().astype(np.float32)

    w = onnx_gate_order(arr(lstm.weight_ih_l0))[None]
    r = onnx_gate_order(arr(lstm.weight_hh_l0))[None]
    b = np.concatenate(
        [onnx_gate_order(arr(lstm.bias_ih_l0)), onnx_gate_order(arr(lstm.bias_hh_l0))]
    )[None]
    inits = [
        numpy_helper.from_array(w, "lstm.W"),
        numpy_helper.from_array(r, "lstm.R"),
        numpy_helper.from_array(b, "lstm.B"),
        numpy_helper.from_array(np.array([1, hidden], np.int64), "state_shape"),
        numpy_helper.from_array(arr(model.fc.weight), "fc.weight"),
        numpy_helper.from_array(arr(model.fc.bias), "fc.bias"),
    ]
    nodes = [
        helper.make_node(
            "Transpose", ["input"], ["X"], name="time_major", perm=[1, 0, 2]
        ),
        helper.make_node(
            "LSTM",
            ["X", "lstm.W", "lstm.R", "lstm.B"],
            ["", "Y_h"],
            name="lstm",
            hidden_size=hidden,
        ),
        helper.make_node("Reshape", ["Y_h", "state_shape"], ["h_last"], name="h_last"),
        helper.make_node(
            "Gemm", ["h_last", "fc.weight", "fc.bias"], ["output"], name="fc", transB=1
        ),
    ]
    shape = [1, model.steps, lstm.input_size]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, NUM_CLASSES])],
        initializer=inits,
    )
    onnx_model = helper.make_model(
        graph,
        producer_name="genbab-lstm",
        opset_imports=[helper.make_opsetid("", demo.ONNX_OPSET)],
        ir_version=demo.ONNX_IR_VERSION,
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def lstm_unrolled_onnx(model: LstmClassifier, name: str) -> onnx.ModelProto:
    """Export :class:`UnrolledLstm` of ``model`` with ``torch.onnx.export``.

    Uses the TorchScript exporter (``dynamo=False``: the default one needs
    ``onnxscript``), opset 17, fixed batch 1.

    Returns:
        The checked model: ``input [1, steps, features] -> output [1, 10]``.
    """
    shape = (1, model.steps, model.lstm.input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        torch.onnx.export(
            UnrolledLstm(model).eval(),
            (torch.zeros(shape),),
            buffer,
            dynamo=False,
            opset_version=demo.ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
        )
    onnx_model = onnx.load_from_string(buffer.getvalue())
    onnx_model.graph.name = name
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def onnx_logits(onnx_model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime logits ``[N, 10]`` of images ``[N, 64]``, one at a time."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    (inp,) = sess.get_inputs()
    rows = [
        sess.run(None, {inp.name: xi.reshape(inp.shape).astype(np.float32)})[0][0]
        for xi in x
    ]
    return np.stack(rows)


def _interval_linear(
    lo: Tensor, hi: Tensor, w: Tensor, b: Tensor
) -> tuple[Tensor, Tensor]:
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    centre, spread = mid @ w.T + b, rad @ w.abs().T
    return centre - spread, centre + spread


def _interval_mul(
    a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    corners = torch.stack([x * y for x in a for y in b])
    return corners.min(0).values, corners.max(0).values


def ibp_min_margin(
    model: LstmClassifier, lower: np.ndarray, upper: np.ndarray, label: int
) -> float:
    """Interval-bound lower bound of ``min_j (y_label - y_j)`` over the box.

    Intervals go through the unrolled cell in float64: gate pre-activations by
    midpoint and radius, sigmoid and tanh by their end points (both increase),
    products by the four corners.

    Args:
        model: A trained :class:`LstmClassifier`.
        lower: Input lower bounds, shape ``[64]``.
        upper: Input upper bounds, shape ``[64]``.
        label: The true class.

    Returns:
        A lower bound on the margin; positive proves robustness (in real
        arithmetic; keep a small gap for float32 evaluation).
    """
    lstm = model.lstm
    p = {k: v.detach().double() for k, v in lstm.named_parameters()}
    w, r, b = p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"] + p["bias_hh_l0"]
    xs_lo = torch.from_numpy(lower.astype(np.float64)).reshape(model.steps, -1)
    xs_hi = torch.from_numpy(upper.astype(np.float64)).reshape(model.steps, -1)
    zero = torch.zeros(lstm.hidden_size, dtype=torch.float64)
    h, c = (zero, zero), (zero, zero)
    for t in range(model.steps):
        z_lo, z_hi = _interval_linear(xs_lo[t], xs_hi[t], w, b)
        zh_lo, zh_hi = _interval_linear(h[0], h[1], r, torch.zeros_like(b))
        parts = zip((z_lo + zh_lo).chunk(4), (z_hi + zh_hi).chunk(4), strict=True)
        (i, f, g, o) = [
            (torch.tanh(lo), torch.tanh(hi)) if k == 2 else (lo.sigmoid(), hi.sigmoid())
            for k, (lo, hi) in enumerate(parts)
        ]
        fc, ig = _interval_mul(f, c), _interval_mul(i, g)
        c = (fc[0] + ig[0], fc[1] + ig[1])
        h = _interval_mul(o, (torch.tanh(c[0]), torch.tanh(c[1])))
    wf, bf = model.fc.weight.detach().double(), model.fc.bias.detach().double()
    others = [j for j in range(NUM_CLASSES) if j != label]
    lo, _ = _interval_linear(h[0], h[1], wf[label] - wf[others], bf[label] - bf[others])
    return float(lo.min())


def witness_violates(
    onnx_model: onnx.ModelProto,
    point: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    label: int,
) -> bool:
    """Whether ``point`` ``[64]`` is in the box and onnxruntime misclassifies it.

    "Misclassifies" is the property's violation: some wrong class scores at
    least ``label`` (no tolerance).
    """
    if not (np.all(point >= lower) and np.all(point <= upper)):
        return False
    logits = onnx_logits(onnx_model, point[None, :])[0]
    return bool(np.delete(logits, label).max() >= logits[label])


def classify(
    model: LstmClassifier,
    onnx_model: onnx.ModelProto,
    lower: np.ndarray,
    upper: np.ndarray,
    label: int,
    seed: int,
) -> tuple[str, str | None, float, list[float] | None]:
    """Known verdict of one property: (verdict, evidence, ibp margin, witness)."""
    margin = ibp_min_margin(model, lower, upper, label)
    if margin > 1e-4:
        return "unsat", "ibp", margin, None
    point = demo.pgd_attack(model, lower, upper, label, seed=seed)
    if point is not None and witness_violates(onnx_model, point, lower, upper, label):
        return "sat", "pgd", margin, [float(v) for v in point]
    return "unknown", None, margin, None


def export(spec: LstmSpec, model: LstmClassifier) -> onnx.ModelProto:
    """The ONNX form of ``spec`` for a trained model."""
    if spec.form == "operator":
        return lstm_operator_onnx(model, spec.name)
    if spec.form == "unrolled":
        return lstm_unrolled_onnx(model, spec.name)
    raise ValueError(f"{spec.name}: unknown form {spec.form!r}")


def train_and_export(
    root: Path, specs: Sequence[LstmSpec], split: tuple[np.ndarray, ...]
) -> dict[str, tuple[LstmClassifier, onnx.ModelProto, dict]]:
    """Train, export and check each model of ``specs``; save it under ``models/``.

    Returns:
        By name: the torch model, its ONNX export and its summary entry.

    Raises:
        RuntimeError: onnxruntime differs from torch by 1e-5 or more, or the
            unrolled module from ``nn.LSTM``.
    """
    x_train, x_test, y_train, y_test = split
    done = {}
    for spec in specs:
        model = train_lstm(spec, x_train, y_train)
        onnx_model = export(spec, model)
        with torch.no_grad():
            expected = model(torch.from_numpy(x_test)).numpy()
            seqs = torch.from_numpy(x_test).reshape(len(x_test), spec.steps, -1)
            unrolled = UnrolledLstm(model)(seqs).numpy()
        logits = onnx_logits(onnx_model, x_test)
        diff = float(np.abs(logits - expected).max())
        if diff >= 1e-5 or np.abs(unrolled - expected).max() >= 1e-5:
            raise RuntimeError(f"{spec.name}: exports differ from torch by {diff}")
        onnx.save(onnx_model, root / "models" / f"{spec.name}.onnx")
        accuracy = float(np.mean(logits.argmax(axis=1) == y_test))
        entry = {
            "form": spec.form,
            "steps": spec.steps,
            "features": spec.features,
            "hidden": spec.hidden,
            "opset": demo.ONNX_OPSET,
            "ops": sorted({n.op_type for n in onnx_model.graph.node}),
            "test_accuracy": round(accuracy, 4),
            "max_abs_diff_onnx_torch": float(f"{diff:.3g}"),
        }
        done[spec.name] = (model, onnx_model, entry)
        print(f"{spec.name}: test accuracy {accuracy:.4f} (onnx-torch diff {diff:.2e})")
    return done


def pick_images(spec: LstmSpec, predicted: np.ndarray, y_test: np.ndarray) -> list[int]:
    """Test indices of the properties of ``spec``: images its model gets right.

    Each model takes its own slice of the correctly classified images from
    ``FIRST_IMAGE`` on, so models mostly get different images and one model's
    files can be rewritten without the others.

    Args:
        spec: The model.
        predicted: Its onnxruntime predictions on the test split, shape ``[N]``.
        y_test: True labels, shape ``[N]``.
    """
    right = np.flatnonzero(predicted == y_test)
    right = right[right >= FIRST_IMAGE]
    m = MODEL_SPECS.index(spec)
    return [int(k) for k in right[m * IMAGES_PER_MODEL : (m + 1) * IMAGES_PER_MODEL]]


def write_properties(
    root: Path,
    spec: LstmSpec,
    model: LstmClassifier,
    onnx_model: onnx.ModelProto,
    split: tuple[np.ndarray, ...],
) -> list[dict]:
    """Write the properties of one model and find out what is known of each.

    Returns:
        One summary entry per property (see the module docstring).
    """
    _, x_test, _, y_test = split
    predicted = onnx_logits(onnx_model, x_test).argmax(axis=1)
    entries = []
    images = pick_images(spec, predicted, y_test)
    jobs = [(k, eps) for k in images for eps in EPSILONS]
    for j, (k, eps) in enumerate(jobs):
        label = int(y_test[k])
        lower, upper = demo.robustness_box(x_test[k], eps)
        title = (
            f"{spec.name}: L-inf eps={eps:g} around digits test image {k} "
            f"(label {label}), clipped to [0, 1]"
        )
        rel = f"vnnlib/{spec.name}_img{k}_eps{eps:g}.vnnlib"
        (root / rel).write_text(demo.vnnlib_text(lower, upper, label, title))
        seed = 100 * MODEL_SPECS.index(spec) + j
        verdict, evidence, margin, witness = classify(
            model, onnx_model, lower, upper, label, seed
        )
        entries.append(
            {
                "onnx": f"models/{spec.name}.onnx",
                "vnnlib": rel,
                "model": spec.name,
                "image_index": k,
                "label": label,
                "eps": eps,
                "known": verdict,
                "evidence": evidence,
                "ibp_margin": float(f"{margin:.6g}"),
                "witness": witness,
            }
        )
        print(f"  {rel}: {verdict} ({evidence or 'open'}, ibp margin {margin:.3g})")
    return entries


def write_lstm(root: Path, only: str | None = None) -> dict:
    """Train, export and check the models; write properties, csv and summary.

    Args:
        root: Repository root (``models/`` and ``vnnlib/`` are created in it).
        only: Name of one model to write (then neither the csv nor the summary
            is written), or None for all.

    Returns:
        The summary (``models/lstm_summary.json`` when ``only`` is None).
    """
    specs = [s for s in MODEL_SPECS if only in (None, s.name)]
    if not specs:
        raise ValueError(f"no model named {only!r}")
    split = demo.load_digits_split()
    (root / "models").mkdir(exist_ok=True)
    (root / "vnnlib").mkdir(exist_ok=True)
    done = train_and_export(root, specs, split)
    summary: dict = {
        "split": demo._split_info(),
        "models": {name: entry for name, (_, _, entry) in done.items()},
        "instances": [],
    }
    for spec in specs:
        model, onnx_model, _ = done[spec.name]
        summary["instances"] += write_properties(root, spec, model, onnx_model, split)
    if only is None:
        rows = [f"{i['onnx']},{i['vnnlib']},{TIMEOUT_S}" for i in summary["instances"]]
        (root / "lstm_instances.csv").write_text("\n".join(rows) + "\n")
        text = json.dumps(summary, indent=1, sort_keys=True)
        (root / "models" / "lstm_summary.json").write_text(text + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``train_lstm_models.py [--root DIR] [--only M]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="repository root to write models/, vnnlib/ and lstm_instances.csv in",
    )
    parser.add_argument(
        "--only",
        choices=[s.name for s in MODEL_SPECS],
        help="retrain only this model and write only its files",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    summary = write_lstm(args.root, args.only)
    known = [i["known"] for i in summary["instances"]]
    counts = {v: known.count(v) for v in ("unsat", "sat", "unknown")}
    print(f"{len(known)} instances: {counts}")


if __name__ == "__main__":
    main()
