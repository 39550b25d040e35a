"""Train genbab's demo MLPs on scikit-learn's digits; write ONNX and VNN-LIB files.

Running ``python scripts/train_demo_models.py`` from the repository root (re)creates:

- ``models/<name>.onnx``: small fully connected classifiers (64 inputs, 10 outputs)
  built node by node with ``onnx.helper`` (Gemm + activation), checked against the
  torch model with onnxruntime on the whole test split;
- ``vnnlib/<name>_img<k>_eps<eps>.vnnlib``: L-inf robustness properties around
  test image ``k`` (an index into the fixed test split), written in VNN-LIB 1.0 as
  the *violation* (some wrong class scores at least the true class);
- ``vnnlib/smoke_unsat.vnnlib`` and ``vnnlib/smoke_sat.vnnlib``: a trivially
  robust and a trivially violated property for CLI smoke tests;
- ``demo_instances.csv``: the instances in VNN-COMP ``instances.csv`` form;
- ``models/demo_summary.json``: accuracies and, per instance, what is known about
  its verdict: ``unsat`` when interval bound propagation (IBP) proves it, ``sat``
  with the witness when a PGD attack found one (replayed with onnxruntime), else
  ``unknown``.

Everything is seeded and single-threaded, so two runs write identical files.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

SPLIT_SEED = 0
TEST_FRACTION = 0.25
NUM_INPUTS = 64
NUM_CLASSES = 10
ONNX_OPSET = 17
GELU_OPSET = 20
ONNX_IR_VERSION = 9
EPSILONS = (0.01, 0.03, 0.08)
IMAGES_PER_MODEL = 2
NUM_IMAGES = 5
TIMEOUT_S = 30
SMOKE_MODEL = "digits_sigmoid_2x32"
SMOKE_EPS_UNSAT = 0.001
SMOKE_EPS_SAT = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and training recipe of one demo MLP.

    Attributes:
        name: File stem, e.g. ``"digits_sigmoid_2x32"``.
        activation: One of ``"sigmoid"``, ``"tanh"``, ``"sin"``, ``"gelu"``.
        hidden: Widths of the hidden layers.
        seed: Seed of the initialisation and of the minibatch order.
        epochs: Passes over the training split.
        lr: Adam learning rate.
    """

    name: str
    activation: str
    hidden: tuple[int, ...]
    seed: int
    epochs: int = 60
    lr: float = 3e-3


MODEL_SPECS = (
    ModelSpec("digits_sigmoid_2x32", "sigmoid", (32, 32), seed=1),
    ModelSpec("digits_tanh_2x32", "tanh", (32, 32), seed=2),
    ModelSpec("digits_sigmoid_3x64", "sigmoid", (64, 64, 64), seed=3),
    ModelSpec("digits_sin_2x32", "sin", (32, 32), seed=4),
    ModelSpec("digits_gelu_2x32", "gelu", (32, 32), seed=5),
)


class Sin(nn.Module):
    """Elementwise sine, as a module so it can sit in ``nn.Sequential``."""

    def forward(self, x: Tensor) -> Tensor:
        """Return ``sin(x)``, same shape as ``x``."""
        return torch.sin(x)


def _activation_module(activation: str) -> nn.Module:
    modules = {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "sin": Sin,
        "gelu": lambda: nn.GELU(approximate="none"),
    }
    if activation not in modules:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of {sorted(modules)}"
        )
    return modules[activation]()


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the digits data scaled to [0, 1] and split it (fixed, stratified).

    Returns:
        ``(x_train, x_test, y_train, y_test)``: float32 images of shape ``[N, 64]``
        (pixel value / 16) and int64 labels of shape ``[N]``; 1347 train and 450
        test samples.
    """
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return x_train, x_test, y_train, y_test


def build_mlp(spec: ModelSpec) -> nn.Sequential:
    """Build the untrained MLP ``64 -> hidden... -> 10`` of ``spec``.

    The initialisation is drawn from torch's global generator; seed it first.

    Args:
        spec: Architecture (activation and hidden widths).

    Returns:
        ``nn.Sequential`` of alternating ``nn.Linear`` and activation modules,
        mapping ``[B, 64]`` to logits ``[B, 10]``.
    """
    layers: list[nn.Module] = []
    width = NUM_INPUTS
    for hidden in spec.hidden:
        layers += [nn.Linear(width, hidden), _activation_module(spec.activation)]
        width = hidden
    layers.append(nn.Linear(width, NUM_CLASSES))
    return nn.Sequential(*layers)


def train_mlp(
    spec: ModelSpec, x_train: np.ndarray, y_train: np.ndarray
) -> nn.Sequential:
    """Train the MLP of ``spec`` with Adam on minibatches (deterministic, CPU).

    Args:
        spec: Architecture and recipe.
        x_train: Images, shape ``[N, 64]``, float32 in [0, 1].
        y_train: Labels, shape ``[N]``.

    Returns:
        The trained model in eval mode.
    """
    torch.manual_seed(spec.seed)
    model = build_mlp(spec)
    order_gen = torch.Generator().manual_seed(spec.seed)
    x = torch.from_numpy(x_train)
    y = torch.from_numpy(y_train)
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


def _linear_layers(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


def _activation_nodes(
    activation: str, x: str, out: str, prefix: str, gelu_style: str
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """ONNX nodes (and constants) computing ``out = activation(x)``."""
    simple = {"sigmoid": "Sigmoid", "tanh": "Tanh", "sin": "Sin"}
    if activation in simple:
        node = helper.make_node(simple[activation], [x], [out], name=f"{prefix}")
        return [node], []
    if activation == "gelu" and gelu_style == "op":
        node = helper.make_node("Gelu", [x], [out], name=prefix, approximate="none")
        return [node], []
    if activation == "gelu" and gelu_style == "erf":
        # gelu(x) = x * 0.5 * (1 + erf(x / sqrt(2)))
        consts = [
            numpy_helper.from_array(np.array(math.sqrt(2.0), np.float32), "sqrt2"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        ]
        names = [f"{prefix}_{s}" for s in ("div", "erf", "add", "mul")]
        nodes = [
            helper.make_node("Div", [x, "sqrt2"], [names[0]], name=names[0]),
            helper.make_node("Erf", [names[0]], [names[1]], name=names[1]),
            helper.make_node("Add", [names[1], "one"], [names[2]], name=names[2]),
            helper.make_node("Mul", [x, names[2]], [names[3]], name=names[3]),
            helper.make_node("Mul", [names[3], "half"], [out], name=f"{prefix}_half"),
        ]
        return nodes, consts
    raise ValueError(f"cannot export activation {activation!r} ({gelu_style=})")


def mlp_to_onnx(
    model: nn.Sequential, activation: str, name: str, gelu_style: str = "op"
) -> onnx.ModelProto:
    """Write an MLP from :func:`build_mlp` as an ONNX graph, node by node.

    The graph has input ``input`` ``[1, 64]`` and output ``output`` ``[1, 10]``
    (float32), one ``Gemm`` (``transB=1``) per linear layer and one activation
    node (or the Erf pattern) after each hidden layer. Opset 17, except 20 when
    GeLU is written as the ``Gelu`` operator.

    Args:
        model: The torch MLP.
        activation: Its activation name (see :class:`ModelSpec`).
        name: Graph name.
        gelu_style: ``"op"`` (the opset-20 ``Gelu`` node) or ``"erf"``
            (``x * 0.5 * (1 + Erf(x / sqrt(2)))`` in opset 17).

    Returns:
        The checked ONNX model.
    """
    linears = _linear_layers(model)
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    current = "input"
    for i, lin in enumerate(linears):
        w = lin.weight.detach().numpy().astype(np.float32)
        b = lin.bias.detach().numpy().astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"layer{i}.weight"),
            numpy_helper.from_array(b, f"layer{i}.bias"),
        ]
        last = i == len(linears) - 1
        gemm_out = "output" if last else f"gemm{i}"
        nodes.append(
            helper.make_node(
                "Gemm",
                [current, f"layer{i}.weight", f"layer{i}.bias"],
                [gemm_out],
                name=f"gemm{i}",
                transB=1,
            )
        )
        if not last:
            act_nodes, consts = _activation_nodes(
                activation, gemm_out, f"act{i}", f"act{i}", gelu_style
            )
            nodes += act_nodes
            inits += [c for c in consts if c.name not in {t.name for t in inits}]
            current = f"act{i}"

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, NUM_INPUTS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, NUM_CLASSES])],
        initializer=inits,
    )
    opset = GELU_OPSET if activation == "gelu" and gelu_style == "op" else ONNX_OPSET
    onnx_model = helper.make_model(
        graph,
        producer_name="genbab-demo",
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=ONNX_IR_VERSION,
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def onnx_logits(onnx_model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run an exported model with onnxruntime, one sample at a time.

    Args:
        onnx_model: Model with input ``input`` ``[1, 64]``.
        x: Images, shape ``[N, 64]``.

    Returns:
        Logits, shape ``[N, 10]``, float32.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    rows = [sess.run(None, {"input": xi[None, :].astype(np.float32)})[0][0] for xi in x]
    return np.stack(rows)


def max_onnx_torch_diff(
    model: nn.Sequential, onnx_model: onnx.ModelProto, x: np.ndarray
) -> float:
    """Largest absolute logit difference between torch and onnxruntime on ``x``.

    Args:
        model: The torch MLP.
        onnx_model: Its export.
        x: Images, shape ``[N, 64]``.

    Returns:
        ``max |torch(x) - onnxruntime(x)|`` over all samples and logits.
    """
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    return float(np.abs(onnx_logits(onnx_model, x) - expected).max())


def robustness_box(image: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """L-inf ball of radius ``eps`` around ``image``, clipped to [0, 1].

    Bounds are float32 values rounded inwards, so a float32 point clipped to the
    box lies in it exactly and the float64 text round-trips without error.

    Args:
        image: Shape ``[64]``, values in [0, 1].
        eps: Radius.

    Returns:
        ``(lower, upper)``, float32, shape ``[64]``.
    """
    lo64 = np.clip(image.astype(np.float64) - eps, 0.0, 1.0)
    hi64 = np.clip(image.astype(np.float64) + eps, 0.0, 1.0)
    lower = lo64.astype(np.float32)
    upper = hi64.astype(np.float32)
    lower = np.where(lower < lo64, np.nextafter(lower, np.float32(2)), lower)
    upper = np.where(upper > hi64, np.nextafter(upper, np.float32(-1)), upper)
    return lower.astype(np.float32), upper.astype(np.float32)


def vnnlib_text(lower: np.ndarray, upper: np.ndarray, label: int, title: str) -> str:
    """VNN-LIB 1.0 text of "some class other than ``label`` scores >= ``label``".

    Args:
        lower: Input lower bounds, shape ``[64]``.
        upper: Input upper bounds, shape ``[64]``.
        label: The true class.
        title: First comment line.

    Returns:
        The file content; ``unsat`` means the model is robust on the box.
    """
    lines = [f"; {title}", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(len(lower))]
    lines.append("")
    lines += [f"(declare-const Y_{j} Real)" for j in range(NUM_CLASSES)]
    lines += ["", "; input box"]
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        lines.append(f"(assert (>= X_{i} {float(lo)!r}))")
        lines.append(f"(assert (<= X_{i} {float(hi)!r}))")
    lines += ["", f"; violation: some class scores at least class {label}"]
    lines.append("(assert (or")
    for j in range(NUM_CLASSES):
        if j != label:
            lines.append(f"    (and (>= Y_{j} Y_{label}))")
    lines.append("))")
    return "\n".join(lines) + "\n"


def ibp_min_margin(
    model: nn.Sequential, lower: np.ndarray, upper: np.ndarray, label: int
) -> float:
    """Interval-bound lower bound of ``min_j (y_label - y_j)`` over the box.

    Intervals are propagated in float64 through the hidden layers; the last layer
    is applied to the margin rows ``W[label] - W[j]`` directly.

    Args:
        model: A trained MLP from :func:`train_mlp`.
        lower: Input lower bounds, shape ``[64]``.
        upper: Input upper bounds, shape ``[64]``.
        label: The true class.

    Returns:
        A lower bound on the margin; positive proves robustness (in real
        arithmetic; keep a small safety gap for float32 evaluation).
    """
    lo = torch.from_numpy(lower.astype(np.float64))
    hi = torch.from_numpy(upper.astype(np.float64))
    modules = list(model)
    for module in modules[:-1]:
        if isinstance(module, nn.Linear):
            w = module.weight.detach().double()
            b = module.bias.detach().double()
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
            centre, spread = w @ mid + b, w.abs() @ rad
            lo, hi = centre - spread, centre + spread
        else:
            lo, hi = _activation_interval(module, lo, hi)
    last = modules[-1]
    w = last.weight.detach().double()
    b = last.bias.detach().double()
    others = [j for j in range(NUM_CLASSES) if j != label]
    wm = w[label][None, :] - w[others]
    bm = b[label] - b[others]
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    return float((wm @ mid + bm - wm.abs() @ rad).min())


def _activation_interval(
    module: nn.Module, lo: Tensor, hi: Tensor
) -> tuple[Tensor, Tensor]:
    """Exact elementwise range of an activation on ``[lo, hi]``."""
    if isinstance(module, nn.Sigmoid | nn.Tanh):
        return module(lo), module(hi)
    if isinstance(module, Sin):
        return _sin_interval(lo, hi)
    if isinstance(module, nn.GELU):
        return _gelu_interval(lo, hi)
    raise ValueError(f"no interval rule for {type(module).__name__}")


def _sin_interval(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Range of sin on ``[lo, hi]``: endpoints, plus +-1 where a peak lies inside."""
    s_lo, s_hi = torch.sin(lo), torch.sin(hi)
    low, high = torch.minimum(s_lo, s_hi), torch.maximum(s_lo, s_hi)
    # a maximum pi/2 + 2k pi lies in [lo, hi] iff the first one >= lo is <= hi
    first_max = math.pi / 2 + 2 * math.pi * torch.ceil(
        (lo - math.pi / 2) / (2 * math.pi)
    )
    first_min = -math.pi / 2 + 2 * math.pi * torch.ceil(
        (lo + math.pi / 2) / (2 * math.pi)
    )
    high = torch.where(first_max <= hi, torch.ones_like(high), high)
    low = torch.where(first_min <= hi, -torch.ones_like(low), low)
    return low, high


def _gelu_interval(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Range of GeLU on ``[lo, hi]``; GeLU decreases then increases."""
    gelu = nn.GELU(approximate="none")
    x_min = torch.tensor(-0.7517915246935806, dtype=lo.dtype)
    g_lo, g_hi = gelu(lo), gelu(hi)
    high = torch.maximum(g_lo, g_hi)
    straddles = (lo < x_min) & (hi > x_min)
    low = torch.where(straddles, gelu(x_min) - 1e-12, torch.minimum(g_lo, g_hi))
    return low, high


def pgd_attack(
    model: nn.Sequential,
    lower: np.ndarray,
    upper: np.ndarray,
    label: int,
    *,
    restarts: int = 8,
    steps: int = 100,
    seed: int = 0,
) -> np.ndarray | None:
    """Look for a point of the box where some wrong class scores >= ``label``.

    Projected gradient ascent on ``max_j y_j - y_label`` from the box centre and
    random starts (sign steps, step size decaying from half the box width).

    Args:
        model: A trained MLP.
        lower: Input lower bounds, shape ``[64]``, float32.
        upper: Input upper bounds, shape ``[64]``, float32.
        label: The true class.
        restarts: Number of random starts (besides the centre).
        steps: Gradient steps per start.
        seed: Seed of the random starts.

    Returns:
        A float32 point, shape ``[64]``, inside the box that violates robustness in
        the torch model (check it with onnxruntime), or None.
    """
    gen = torch.Generator().manual_seed(seed)
    lo, hi = torch.from_numpy(lower), torch.from_numpy(upper)
    starts = [(lo + hi) / 2] + [
        lo + (hi - lo) * torch.rand(lo.shape, generator=gen) for _ in range(restarts)
    ]
    x = torch.stack(starts)
    others = torch.tensor([j for j in range(NUM_CLASSES) if j != label])
    for step in range(steps):
        x.requires_grad_(True)
        logits = model(x)
        gap = logits[:, others].max(dim=1).values - logits[:, label]
        if (gap.detach() >= 0).any():
            break
        (grad,) = torch.autograd.grad(gap.sum(), x)
        size = 0.5 * (hi - lo) * (1 - step / steps)
        x = torch.minimum(torch.maximum(x.detach() + size * grad.sign(), lo), hi)
    with torch.no_grad():
        logits = model(x.detach())
        gap = logits[:, others].max(dim=1).values - logits[:, label]
    best = int(gap.argmax())
    return x[best].detach().numpy().copy() if gap[best] >= 0 else None


def witness_violates(
    onnx_model: onnx.ModelProto,
    point: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    label: int,
) -> bool:
    """Whether ``point`` is in the box and onnxruntime scores a wrong class >= label.

    Args:
        onnx_model: The exported model.
        point: Candidate input, shape ``[64]``, float32.
        lower: Input lower bounds, shape ``[64]``.
        upper: Input upper bounds, shape ``[64]``.
        label: The true class.

    Returns:
        True when ``point`` is a genuine counterexample (no tolerance).
    """
    if not (np.all(point >= lower) and np.all(point <= upper)):
        return False
    logits = onnx_logits(onnx_model, point[None, :])[0]
    others = [j for j in range(NUM_CLASSES) if j != label]
    return bool(np.max(logits[others]) >= logits[label])


def pick_images(predictions: Sequence[np.ndarray], y_test: np.ndarray) -> list[int]:
    """First ``NUM_IMAGES`` test indices that every model classifies correctly.

    Args:
        predictions: Per model, predicted labels of the test split, shape ``[N]``.
        y_test: True labels, shape ``[N]``.

    Returns:
        Test-split indices, ascending.
    """
    ok = np.all([p == y_test for p in predictions], axis=0)
    return [int(i) for i in np.flatnonzero(ok)[:NUM_IMAGES]]


def _write_property(
    root: Path,
    stem: str,
    spec_name: str,
    image_index: int,
    image: np.ndarray,
    label: int,
    eps: float,
) -> tuple[str, np.ndarray, np.ndarray]:
    lower, upper = robustness_box(image, eps)
    title = (
        f"{spec_name}: L-inf eps={eps:g} around digits test image "
        f"{image_index} (label {label}), clipped to [0, 1]"
    )
    rel = f"vnnlib/{stem}.vnnlib"
    (root / rel).write_text(vnnlib_text(lower, upper, label, title))
    return rel, lower, upper


def _classify(
    model: nn.Sequential,
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
    point = pgd_attack(model, lower, upper, label, seed=seed)
    if point is not None and witness_violates(onnx_model, point, lower, upper, label):
        return "sat", "pgd", margin, [float(v) for v in point]
    return "unknown", None, margin, None


def train_and_export(
    root: Path, split: tuple[np.ndarray, ...], summary: dict
) -> tuple[dict[str, tuple[nn.Sequential, onnx.ModelProto]], list[np.ndarray]]:
    """Train every model of ``MODEL_SPECS``, check its export, save it.

    Args:
        root: Repository root; models go to ``root/models``.
        split: ``(x_train, x_test, y_train, y_test)`` from :func:`load_digits_split`.
        summary: Gets one entry per model under ``"models"``.

    Returns:
        ``(trained, predictions)``: torch and ONNX model by name, and per model the
        onnxruntime predictions on the test split, shape ``[N]``.

    Raises:
        RuntimeError: onnxruntime and torch differ by 1e-5 or more.
    """
    x_train, x_test, y_train, y_test = split
    trained: dict[str, tuple[nn.Sequential, onnx.ModelProto]] = {}
    predictions = []
    for spec in MODEL_SPECS:
        model = train_mlp(spec, x_train, y_train)
        onnx_model = mlp_to_onnx(model, spec.activation, spec.name)
        diff = max_onnx_torch_diff(model, onnx_model, x_test)
        if diff >= 1e-5:
            raise RuntimeError(f"{spec.name}: onnxruntime differs from torch by {diff}")
        onnx.save(onnx_model, root / "models" / f"{spec.name}.onnx")
        pred = onnx_logits(onnx_model, x_test).argmax(axis=1)
        predictions.append(pred)
        accuracy = float(np.mean(pred == y_test))
        trained[spec.name] = (model, onnx_model)
        summary["models"][spec.name] = {
            "activation": spec.activation,
            "hidden": list(spec.hidden),
            "opset": onnx_model.opset_import[0].version,
            "test_accuracy": round(accuracy, 4),
            "max_abs_diff_onnx_torch": float(f"{diff:.3g}"),
        }
        print(f"{spec.name}: test accuracy {accuracy:.4f} (onnx-torch diff {diff:.2e})")
    return trained, predictions


def _property_jobs(images: Sequence[int]) -> list[tuple[str, int, float, str]]:
    """(model, test index, eps, file stem) of every instance; smoke pair first."""
    smoke = [("smoke_unsat", SMOKE_EPS_UNSAT), ("smoke_sat", SMOKE_EPS_SAT)]
    jobs = [(SMOKE_MODEL, images[0], eps, stem) for stem, eps in smoke]
    for m, spec in enumerate(MODEL_SPECS):
        for r in range(IMAGES_PER_MODEL):
            k = images[(m * IMAGES_PER_MODEL + r) % len(images)]
            for eps in EPSILONS:
                jobs.append((spec.name, k, eps, f"{spec.name}_img{k}_eps{eps:g}"))
    return jobs


def write_demo(root: Path) -> dict:
    """Train, export and check every model; write properties, csv and summary.

    Args:
        root: Repository root (``models/`` and ``vnnlib/`` are created in it).

    Returns:
        The summary written to ``models/demo_summary.json``.
    """
    split = load_digits_split()
    _, x_test, _, y_test = split
    (root / "models").mkdir(exist_ok=True)
    (root / "vnnlib").mkdir(exist_ok=True)
    summary: dict = {"split": _split_info(), "models": {}, "instances": []}
    trained, predictions = train_and_export(root, split, summary)

    # properties around images every model gets right, with known verdicts
    rows = []
    jobs = _property_jobs(pick_images(predictions, y_test))
    for seed, (name, k, eps, stem) in enumerate(jobs):
        label = int(y_test[k])
        rel, lower, upper = _write_property(root, stem, name, k, x_test[k], label, eps)
        model, onnx_model = trained[name]
        verdict, evidence, margin, witness = _classify(
            model, onnx_model, lower, upper, label, seed
        )
        rows.append(f"models/{name}.onnx,{rel},{TIMEOUT_S}")
        summary["instances"].append(
            {
                "onnx": f"models/{name}.onnx",
                "vnnlib": rel,
                "model": name,
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

    (root / "demo_instances.csv").write_text("\n".join(rows) + "\n")
    text = json.dumps(summary, indent=1, sort_keys=True)
    (root / "models" / "demo_summary.json").write_text(text + "\n")
    return summary


def _split_info() -> dict:
    return {
        "dataset": "sklearn.datasets.load_digits, pixel / 16",
        "test_size": TEST_FRACTION,
        "random_state": SPLIT_SEED,
        "stratify": True,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: ``train_demo_models.py [--root DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="repository root to write models/, vnnlib/ and demo_instances.csv in",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    summary = write_demo(args.root)
    known = [i for i in summary["instances"] if i["known"] == "sat"]
    print(f"{len(summary['instances'])} instances, {len(known)} with counterexamples")


if __name__ == "__main__":
    main()
