"""Bounds of a model's outputs over a box, and points of the box to check them on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genbab.bounds import Box, Engine, bound_objective
from genbab.bounds.objective import Objective
from genbab.config import BoundsConfig
from genbab.model import load_model


def _output_objective(n: int) -> Objective:
    """Rows ``y_j`` and ``-y_j`` of every output, each its own clause."""
    eye = torch.eye(n, dtype=torch.float64)
    coeffs = torch.cat([eye, -eye]).unsqueeze(0)
    rhs = torch.full((1, 2 * n), float("inf"), dtype=torch.float64)
    return Objective(coeffs, rhs, torch.ones(1, 2 * n, dtype=torch.bool), 1)


def output_bounds(
    path: Path, lower: np.ndarray, upper: np.ndarray, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the flattened output of a model over the box, by ``method``."""
    graph = load_model(path)
    engine = Engine(graph.to("cpu", torch.float64))
    shape = graph.input_shape
    box = Box(
        torch.from_numpy(lower.astype(np.float64)).reshape(1, *shape),
        torch.from_numpy(upper.astype(np.float64)).reshape(1, *shape),
    )
    n = graph.num_outputs
    config = BoundsConfig(method=method, alpha_iterations=10)
    low, _ = bound_objective(engine, box, _output_objective(n), config, method=method)
    low = low[0].numpy()
    return low[:n], -low[n:]


def box_samples(
    lower: np.ndarray, upper: np.ndarray, n: int, seed: int = 0
) -> np.ndarray:
    """Uniform points, random vertices and the two extreme corners of the box."""
    rng = np.random.default_rng(seed)
    uniform = rng.uniform(lower, upper, (n, lower.size))
    vertices = np.where(rng.random((n, lower.size)) < 0.5, lower, upper)
    return np.concatenate([uniform, vertices, [lower, upper]]).astype(np.float32)
