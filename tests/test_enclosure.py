"""Whole-network enclosure on every shared VNN-COMP family.

For one instance per family (its smallest model, with the first property that
uses it) the property's rows ``C y`` are bounded over the first case's input box
by interval arithmetic, CROWN and alpha-CROWN, on the graph as the pipeline
bounds it (:func:`~genbab.bounds.rewrite.prepare_for_bounds`). Inputs sampled in
the box (both corners, uniform, edge-heavy Beta(0.5, 0.5), random corners) are
run through onnxruntime on the original ONNX file, and every row value must lie
above its lower bound (upper bounds are checked through the rows of ``-C``).

Slack: onnxruntime computes in float32, the bounds hold for the exact (real)
function. ``test_model_onnxruntime`` asserts that our float64 evaluation and
onnxruntime agree within ``2e-5 * (1 + max |y|)`` on every shared model; a row
``c . y`` can then differ by ``|c|_1`` times that, which is the slack used here.
The float64 graph values on the same (float32-representable, in-box) inputs are
checked without slack (``1e-9`` relative).

Big models are bounded with cheaper settings (documented per family below);
``benchmarks/bench_bounds.py`` measures all methods on them.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import relax_sampling as rs
import torch

from genbab.bounds import Box, Engine, bound_objective, build_objective
from genbab.bounds.objective import Objective
from genbab.bounds.rewrite import prepare_for_bounds
from genbab.config import BoundsConfig
from genbab.model import load_model
from genbab.spec import read_vnnlib

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
DT = torch.float64
ORT_SLACK = 2e-5  # = TOLERANCE of test_model_onnxruntime (see module docs)


@dataclass(frozen=True)
class Instance:
    """One instance to check and how to bound it.

    Attributes:
        family: Folder under the shared benchmarks.
        model: ONNX file name (its first instance's property is used).
        intermediate: ``crown`` or ``interval`` bounds of nonlinear inputs.
        alpha_iterations: alpha-CROWN steps (0: not run).
        samples: Number of random inputs (plus the two box corners).
        crown: Whether to run CROWN (False: interval bounds only).
    """

    family: str
    model: str
    intermediate: str = "crown"
    alpha_iterations: int = 5
    samples: int = 120
    crown: bool = True


INSTANCES = [
    Instance("acasxu_2023", "ACASXU_run2a_1_1_batch_2000.onnx.gz"),
    Instance("mnist_fc_2022", "mnist-net_256x2.onnx.gz"),
    Instance("eran_mnist_vnncomp2021", "ffnnSIGMOID__Point_6x200.onnx.gz"),
    Instance("dist_shift_2023", "mnist_concat.onnx.gz"),
    Instance("ml4acopf_2023", "14_ieee_ml4acopf.onnx.gz"),
    Instance("ml4acopf_2024", "14_ieee_ml4acopf-linear-residual.onnx.gz"),
    Instance("ml4acopf_2024", "14_ieee_ml4acopf-linear-nonresidual.onnx.gz"),
    Instance("lsnc_2024", "quadrotor2d_state.onnx.gz"),
    Instance("lsnc_2024", "quadrotor2d_output.onnx.gz"),
    Instance("nn4sys_2023", "mscn_128d.onnx.gz"),
    Instance("nn4sys_2023", "pensieve_small_parallel.onnx.gz"),
    # The smaller ViT: CROWN takes a few seconds; alpha-CROWN is benchmarked.
    Instance("vit_2023", "pgd_2_3_16.onnx.gz", alpha_iterations=0, samples=40),
    # cGAN (5 inputs): intermediate bounds are forward linear bounds, CROWN
    # passes only where cheap (the rest would take minutes).
    Instance(
        "cgan_2023",
        "cGAN_imgSz32_nCh_3_nonlinear_activations.onnx.gz",
        samples=40,
    ),
    Instance(
        "cgan_2023",
        "cGAN_imgSz32_nCh_3_upsample.onnx.gz",
        alpha_iterations=0,
        samples=40,
    ),
    # The big ones, cheaply: CROWN on the output of interval intermediate bounds
    # (118- and 300-bus ACOPF); interval only for the larger ViT (its CROWN
    # intermediate bounds need about 3 GB per softmax, see the benchmark).
    Instance(
        "ml4acopf_2023",
        "118_ieee_ml4acopf.onnx.gz",
        intermediate="interval",
        alpha_iterations=0,
        samples=40,
    ),
    Instance(
        "ml4acopf_2023",
        "300_ieee_ml4acopf.onnx.gz",
        intermediate="interval",
        alpha_iterations=0,
        samples=40,
    ),
    # Its ReLU sums are single piecewise-linear nodes: CROWN takes seconds.
    Instance(
        "ml4acopf_2024",
        "118_ieee_ml4acopf-linear-residual.onnx.gz",
        alpha_iterations=0,
        samples=40,
    ),
    Instance(
        "vit_2023", "ibp_3_3_8.onnx.gz", alpha_iterations=0, samples=40, crown=False
    ),
]


@pytest.fixture(autouse=True)
def _one_thread():
    with rs.single_thread():
        yield


def _first_property(inst: Instance) -> Path:
    with open(BENCHMARKS / inst.family / "instances.csv") as f:
        for row in csv.reader(f):
            if row and Path(row[0]).name == inst.model:
                return BENCHMARKS / inst.family / row[1]
    raise AssertionError(f"no instance of {inst.model} in {inst.family}")


def _inputs(lower: np.ndarray, upper: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Float32 inputs inside the box: corners, uniform, Beta(0.5, 0.5), vertices."""
    rng = np.random.default_rng(seed)
    k = n // 3
    frac = np.concatenate(
        [
            np.zeros((1, lower.size)),
            np.ones((1, lower.size)),
            rng.uniform(size=(k, lower.size)),
            rng.beta(0.5, 0.5, size=(k, lower.size)),
            rng.integers(0, 2, size=(n - 2 * k, lower.size)).astype(float),
        ]
    )
    x = (lower + frac * (upper - lower)).astype(np.float32)
    # Rounding to float32 may leave the box: step back inside where a float32
    # number lies in it (a point interval may hold none; the caller widens).
    up = np.nextafter(x, np.float32(np.inf))
    down = np.nextafter(x, np.float32(-np.inf))
    x = np.where((x < lower) & (up <= upper), up, x)
    return np.where((x > upper) & (down >= lower), down, x)


def _both_sides(objective: Objective) -> Objective:
    """Rows ``C`` and ``-C`` (lower bounds of ``-C y`` are upper bounds of ``C y``),
    with thresholds nothing reaches, so alpha-CROWN runs all its iterations."""
    c = torch.cat([objective.coeffs, -objective.coeffs], 1)
    S = c.shape[1]
    rhs = torch.full((1, S), 1e9, dtype=c.dtype)
    return Objective(c, rhs, torch.ones(1, S, dtype=torch.bool), 1)


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="shared benchmarks not found")
@pytest.mark.parametrize(
    "inst", INSTANCES, ids=lambda i: i.model.removesuffix(".onnx.gz")
)
def test_bounds_enclose_onnxruntime(inst: Instance) -> None:
    onnx_path = BENCHMARKS / inst.family / "onnx" / inst.model
    original = load_model(onnx_path)
    prop = read_vnnlib(_first_property(inst), original.num_inputs, original.num_outputs)
    case = prop.cases[0]
    graph = prepare_for_bounds(original).to("cpu", DT)
    engine = Engine(graph, DT)
    shape = graph.input_shape
    x = _inputs(case.lower, case.upper, inst.samples, seed=0)
    # The box of the samples: the property's, widened only where it holds no
    # float32 number (a point not representable in float32).
    lower, upper = np.minimum(case.lower, x.min(0)), np.maximum(case.upper, x.max(0))
    assert (lower == case.lower).mean() > 0.5 and (upper == case.upper).mean() > 0.5
    box = Box(
        torch.tensor(lower, dtype=DT).reshape(1, *shape),
        torch.tensor(upper, dtype=DT).reshape(1, *shape),
    )
    objective = _both_sides(build_objective([case], DT, "cpu"))
    rows = objective.coeffs[0]  # [S, n_out]

    # Samples through onnxruntime (float32) and our float64 graph (same inputs).
    sess = ort.InferenceSession(
        gzip.decompress(onnx_path.read_bytes()), providers=["CPUExecutionProvider"]
    )
    name = sess.get_inputs()[0].name
    feed_shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    y_ort = np.stack(
        [sess.run(None, {name: xi.reshape(feed_shape)})[0].reshape(-1) for xi in x]
    )
    with torch.no_grad():
        y64 = graph.forward(torch.from_numpy(x).double().reshape(-1, *shape))
    r_ort = torch.from_numpy(y_ort).double() @ rows.T  # [K, S]
    r64 = y64.flatten(1) @ rows.T
    slack = ORT_SLACK * (1 + np.abs(y_ort).max()) * rows.abs().sum(1)  # [S]

    methods = ["interval"] + (["crown"] if inst.crown else [])
    methods += ["alpha-crown"] if inst.alpha_iterations else []
    lowers = {}
    for method in methods:
        cfg = BoundsConfig(
            method=method,
            intermediate=inst.intermediate,
            alpha_iterations=inst.alpha_iterations,
        )
        lower, _ = bound_objective(engine, box, objective, cfg)
        lower = lower[0]
        assert torch.isfinite(lower).all(), f"{method}: non-finite bound"
        lowers[method] = lower
        worst64 = (lower - r64).max().item() / (1 + r64.abs().max().item())
        assert worst64 <= 1e-9, f"{method}: float64 value below its bound by {worst64}"
        gap = (lower - slack - r_ort).max(0).values
        assert (gap <= 0).all(), (
            f"{method}: onnxruntime row value below its bound (excess {gap.max()})"
        )
    # Each method keeps the best of the cheaper ones.
    if "crown" in lowers:
        assert (lowers["crown"] >= lowers["interval"] - 1e-9).all()
    if "alpha-crown" in lowers:
        assert (lowers["alpha-crown"] >= lowers["crown"] - 1e-9).all()
