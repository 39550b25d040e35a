"""Branch and bound reads its branching points from the shipped lookup tables.

The split point of a neuron feeding one univariate function is the table's point
for that function (``pow`` with exponent 2 reads the ``square`` table); a product
reads the ``mul`` table; functions without a table split at the midpoint; and a
branch-and-bound run with table points proves what midpoint splits prove.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch
from test_bab import HARD, _instance

from genbab.bab.branching import SplitValue, split_points
from genbab.bab.loop import run_bab
from genbab.config import BabConfig
from genbab.model.graph import Node
from genbab.model.ops import Mul, Unary
from genbab.tables import load_branching_points

DT = torch.float64


@pytest.fixture(scope="module")
def table():
    return load_branching_points()


def _value(op, inputs=("x",)) -> SplitValue:
    return SplitValue("x", (Node("y", op, inputs, (3,)),), relu_only=False)


LOWER = torch.tensor([[-3.0, -0.5, 0.2]], dtype=DT)
UPPER = torch.tensor([[1.0, 2.5, 0.9]], dtype=DT)


@pytest.mark.parametrize(
    ("op", "key"),
    [
        (Unary("sigmoid"), "sigmoid"),
        (Unary("tanh"), "tanh"),
        (Unary("sin"), "sin"),
        (Unary("gelu"), "gelu"),
        (Unary("pow", 2.0), "square"),
    ],
)
def test_unary_points_come_from_the_table(table, op, key):
    got = split_points(_value(op), LOWER, UPPER, table)
    want = table.points(key, LOWER, UPPER)
    torch.testing.assert_close(got, want)
    assert bool(((got > LOWER) & (got < UPPER)).all())
    mid = (LOWER + UPPER) / 2
    if key != "square":  # square's optimum is the midpoint itself
        assert not torch.allclose(got, mid)


def test_functions_without_a_table_split_at_midpoints(table):
    got = split_points(_value(Unary("pow", 3.0)), LOWER, UPPER, table)
    torch.testing.assert_close(got, (LOWER + UPPER) / 2)


def test_product_points_come_from_the_mul_table(table):
    value = _value(Mul(), ("x", "z"))
    zl = torch.tensor([[-1.0, 0.5, -2.0]], dtype=DT)
    zu = torch.tensor([[2.0, 1.5, -0.4]], dtype=DT)
    bounds = {"x": (LOWER, UPPER), "z": (zl, zu)}
    got = split_points(value, LOWER, UPPER, table, bounds)
    torch.testing.assert_close(got, table.mul_points(LOWER, UPPER, zl, zu))


def test_bab_with_table_points_proves_the_sigmoid_case(tmp_path, table):
    engine, box, obj, bounds, lower = _instance(tmp_path, *HARD[0], -0.05)
    cfg = replace(BabConfig(), branching_point="table")
    result = run_bab(
        engine, box, obj, bounds, lower, cfg, time.monotonic() + 30.0, table
    )
    assert result.proven, result.stats
