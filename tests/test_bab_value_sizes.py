"""Branch and bound over split values of different sizes (regression test).

Each round splits, per domain, one neuron of the best value; the split point
of a domain must only be read from the value it splits. Rewritten softmax
graphs (a denominator per row next to wider ReLU layers) hit this first.
"""

from __future__ import annotations

import torch

from genbab.bab.loop import run_bab
from genbab.bounds import Box, Engine, bound_objective
from genbab.bounds.objective import Objective
from genbab.config import BabConfig, BoundsConfig
from genbab.model.graph import Graph, Node
from genbab.model.ops import Linear, Mul, Unary

DT = torch.float64
MARGIN = 0.4


def _proven_by_every_heuristic(
    nodes, g, margin, bounds_cfg, heuristics, max_domains
) -> None:
    """A threshold ``margin`` below the sampled minimum of the net on [-1, 1]^2
    is not proven by bounds alone and is proven by BaB with each heuristic."""
    engine = Engine(Graph("input", (2,), nodes, "y"), DT)
    box = Box(-torch.ones(1, 2, dtype=DT), torch.ones(1, 2, dtype=DT))
    x = box.lower + (box.upper - box.lower) * torch.rand(4000, 2, generator=g, dtype=DT)
    y_min = engine.graph.forward(x).min().item()
    objective = Objective(
        torch.ones(1, 1, 1, dtype=DT),
        torch.tensor([[y_min - margin]], dtype=DT),
        torch.ones(1, 1, dtype=torch.bool),
        1,
    )
    lower, bounds = bound_objective(engine, box, objective, bounds_cfg)
    assert lower.item() < y_min - margin  # not proven by bounds alone
    for heuristic in heuristics:
        bab = BabConfig(
            batch_size=4, max_domains=max_domains, branching_point="midpoint",
            heuristic=heuristic,
        )  # fmt: skip
        result = run_bab(engine, box, objective, bounds, lower, bab)
        # Every heuristic runs without an indexing error and proves it.
        assert result.proven, (heuristic, result)


def test_split_values_of_different_sizes() -> None:
    g = torch.Generator().manual_seed(0)
    nodes = [
        Node("h", Linear(torch.randn(2, 8, generator=g, dtype=DT)), ("input",), (8,)),
        Node("r", Unary("relu"), ("h",), (8,)),
        Node("z", Linear(torch.randn(8, 2, generator=g, dtype=DT)), ("r",), (2,)),
        Node("s", Unary("sigmoid"), ("z",), (2,)),
        Node("y", Linear(torch.tensor([[1.0], [-1.0]], dtype=DT)), ("s",), (1,)),
    ]
    _proven_by_every_heuristic(
        nodes,
        g,
        MARGIN,
        BoundsConfig(method="crown"),
        ("babsr", "bbps", "widest"),
        2000,
    )


def test_broadcast_product_input_is_scored_in_its_own_shape() -> None:
    # s (one neuron) multiplies all three ReLU outputs: its BBPS terms are summed
    # over the product's entries (they were product-shaped: a size mismatch).
    g = torch.Generator().manual_seed(1)
    nodes = [
        Node("h", Linear(torch.randn(2, 3, generator=g, dtype=DT)), ("input",), (3,)),
        Node("r", Unary("relu"), ("h",), (3,)),
        Node("z", Linear(torch.randn(2, 1, generator=g, dtype=DT)), ("input",), (1,)),
        Node("s", Unary("sigmoid"), ("z",), (1,)),
        Node("m", Mul(), ("r", "s"), (3,)),
        Node("y", Linear(torch.randn(3, 1, generator=g, dtype=DT)), ("m",), (1,)),
    ]
    _proven_by_every_heuristic(nodes, g, 0.05, BoundsConfig(), ("babsr", "bbps"), 4000)
