"""Relaxations and bound rules create their tensors on the device of their inputs.

Without a GPU this runs them on PyTorch's ``meta`` device: any tensor made
implicitly on the CPU and combined with the inputs raises, as it would on CUDA.
(The GeLU relaxation is left out: it takes a data-dependent shortcut, which meta
tensors cannot evaluate; its one constant is made with ``device=lo.device``.)
"""

from __future__ import annotations

import pytest
import torch

from genbab.bounds.attention import (
    denominator_interval,
    matmul_interval,
    softmax_interval,
)
from genbab.bounds.piecewise import floor_interval
from genbab.bounds.relax import UNARY_FAMILIES
from genbab.bounds.relax.bivariate import init_mul_params, relax_mul
from genbab.bounds.relax.convex import pow_family
from genbab.bounds.rewrite import decompose_softmax
from genbab.model.graph import Graph, Node
from genbab.model.ops import Linear, Softmax

META = torch.device("meta")
FAMILIES = {k: v for k, v in UNARY_FAMILIES.items() if k != "gelu"}
FAMILIES.update({f"pow{a}": pow_family(a) for a in (3.0, 4.0, -1.0, -3.0, 0.5)})


def _meta(*shape: int, dtype=torch.float32) -> torch.Tensor:
    return torch.empty(*shape, device=META, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", FAMILIES)
def test_unary_relaxations_stay_on_the_input_device(name: str, dtype) -> None:
    family = FAMILIES[name]
    lo, hi = _meta(2, 1, 3, dtype=dtype), _meta(2, 1, 3, dtype=dtype)
    params = family.init_params(lo, hi)
    assert params.device == META and params.shape[0] == family.num_params
    spec = _meta(family.num_params, 2, 4, 3, dtype=dtype)  # per-spec parameters
    for p in (None, params, spec):
        rel = family.relax(lo, hi, p)
        for t in (rel.lower_slope, rel.lower_bias, rel.upper_slope, rel.upper_bias):
            assert t.device == META and t.dtype == dtype


def test_product_and_interval_helpers_stay_on_the_input_device() -> None:
    x = _meta(2, 3, 4)
    for p in (None, init_mul_params(x, x, x, x)):
        rel = relax_mul(x, x, x, x, p)
        assert rel.lower_x.device == META and rel.upper_bias.device == META
    lo, hi = matmul_interval(
        _meta(2, 3, 4), _meta(2, 3, 4), _meta(2, 4, 5), _meta(2, 4, 5)
    )
    assert lo.device == META and lo.shape == (2, 3, 5)
    lo, hi = softmax_interval(_meta(2, 3, 4), _meta(2, 3, 4), 2)
    assert hi.device == META and hi.shape == (2, 3, 4)
    lo, hi = denominator_interval(_meta(2, 3, 4), _meta(2, 3, 4), 2)
    assert lo.device == META and lo.shape == (2, 3)
    lo, hi = floor_interval(_meta(5), _meta(5))
    assert lo.device == META


def test_softmax_rewrite_puts_constants_beside_the_graphs() -> None:
    nodes = [
        Node("h", Linear(torch.ones(2, 3)), ("input",), (3,)),
        Node("s", Softmax(0), ("h",), (3,)),
        Node("h1", Linear(torch.ones(3, 1)), ("s",), (1,)),
        Node("s1", Softmax(0), ("h1",), (1,)),
    ]
    graph = Graph("input", (2,), nodes, "s1").to(META, torch.float64)
    for node in decompose_softmax(graph).nodes:
        for t in node.op.tensors().values():
            assert t.device == META, node.name
            assert not t.is_floating_point() or t.dtype == torch.float64, node.name
