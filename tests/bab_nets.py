"""Tiny networks and properties for the branch-and-bound tests (not a test file).

Everything works on 2-input networks over a box, whose true output range a dense
grid gives to within the grid's resolution.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import random_mlp

from genbab.bab.loop import _setup
from genbab.bounds import Box, Engine, bound_objective
from genbab.bounds.objective import Objective
from genbab.config import BabConfig, BoundsConfig
from genbab.model import load_model

DT = torch.float64


def engine_for(path: Path) -> Engine:
    """The float64 CPU engine of an ONNX file."""
    graph = load_model(path).to("cpu", DT)
    return Engine(graph, DT, torch.device("cpu"))


def net(tmp_path: Path, act: str, seed: int, sizes=(2, 8, 8, 1)) -> Engine:
    """A random MLP with activation ``act``."""
    return engine_for(
        random_mlp(tmp_path / f"{act}{seed}.onnx", list(sizes), act, seed)
    )


def product_net(tmp_path: Path, seed: int = 0) -> Engine:
    """``y = w . (sigmoid(A x) * tanh(B x))``: a Mul with two perturbed inputs."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(2, 4)).astype(np.float32), "A"),
        numpy_helper.from_array(rng.normal(size=(2, 4)).astype(np.float32), "B"),
        numpy_helper.from_array(rng.normal(size=(4, 1)).astype(np.float32), "W"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "A"], ["a"], name="ma"),
        helper.make_node("MatMul", ["input", "B"], ["b"], name="mb"),
        helper.make_node("Sigmoid", ["a"], ["sa"], name="sig"),
        helper.make_node("Tanh", ["b"], ["tb"], name="tanh"),
        helper.make_node("Mul", ["sa", "tb"], ["p"], name="mul"),
        helper.make_node("MatMul", ["p", "W"], ["output"], name="mw"),
    ]
    graph = helper.make_graph(
        nodes,
        "product",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / f"product{seed}.onnx"
    onnx.save(model, path)
    return engine_for(path)


def unit_box(engine: Engine, radius: float = 1.0) -> Box:
    """``[-radius, radius]^n`` as one box."""
    shape = engine.graph.input_shape
    lo = torch.full((1, *shape), -radius, dtype=DT)
    return Box(lo, -lo)


def objective(threshold: float, sign: float = 1.0) -> Objective:
    """One clause with one row: refuted when ``sign * y > threshold``."""
    return Objective(
        torch.tensor([[[sign]]], dtype=DT),
        torch.tensor([[threshold]], dtype=DT),
        torch.tensor([[True]]),
        1,
    )


def grid_values(engine: Engine, box: Box, n: int = 201) -> tuple[Tensor, dict]:
    """A dense grid of the box (2 inputs) and every value of the graph on it."""
    lo, hi = box.lower.flatten(), box.upper.flatten()
    axes = [torch.linspace(float(lo[i]), float(hi[i]), n, dtype=DT) for i in range(2)]
    g = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    return samples_values(engine, g.reshape(-1, *engine.graph.input_shape))


def samples_values(engine: Engine, x: Tensor) -> tuple[Tensor, dict]:
    """Every value of the graph on the samples ``x`` ``[M, *input_shape]``."""
    names = [engine.graph.input_name] + [n.name for n in engine.graph.nodes]
    with torch.no_grad():
        values = engine.graph.forward_values(x, names)
    return x, values


def random_samples(box: Box, count: int, seed: int = 0) -> Tensor:
    """Uniform samples of the box plus its corners, ``[count + 2^n, *shape]``."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = box.lower[0], box.upper[0]
    u = torch.rand((count, *lo.shape), generator=gen, dtype=DT)
    corners = torch.tensor(
        [[(c >> i) & 1 for i in range(lo.numel())] for c in range(2 ** lo.numel())],
        dtype=DT,
    ).reshape(-1, *lo.shape)
    return lo + torch.cat([u, corners]) * (hi - lo)


def root(engine: Engine, box: Box, obj: Objective, **bab):
    """The problem and optimized root domains of a property (CROWN bounds)."""
    cfg = replace(BabConfig(branching_point="midpoint"), **bab)
    lower, bounds = bound_objective(engine, box, obj, BoundsConfig(), method="crown")
    problem, doms = _setup(engine, box, obj, bounds, lower, cfg, None)
    return problem, doms, bounds, lower, cfg


Tensor = torch.Tensor
