"""What every branch-and-bound round needs: the items and their root data.

An *item* is one clause of one property case that bounds alone did not refute.
Clauses are independent problems (a case holds when each of its clauses is
refuted on the whole box), so each gets its own tree of domains, its own
objective rows and its own split choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genbab.bab.branching import SplitValue
from genbab.bounds.box import Bounds, Box
from genbab.bounds.engine import Engine
from genbab.bounds.objective import Objective
from genbab.config import BabConfig


@dataclass
class Shortcuts:
    """Linear bounds of every split neuron in terms of the input, at the root.

    ``lower_coeffs[c, t] . x + lower_bias[c, t] <= h_t(x)`` (and the upper ones
    the other way) for every ``x`` in case ``c``'s box, where ``t`` runs over the
    neurons of all split values, concatenated in the order of
    :attr:`Problem.values`. Stored in float32: they only rank candidates.

    Attributes:
        lower_coeffs: ``[C, T, I]`` (``I`` input size).
        lower_bias: ``[C, T]``.
        upper_coeffs: ``[C, T, I]``.
        upper_bias: ``[C, T]``.
    """

    lower_coeffs: Tensor
    lower_bias: Tensor
    upper_coeffs: Tensor
    upper_bias: Tensor


@dataclass
class Problem:
    """The items of one branch-and-bound run.

    Attributes:
        engine: The bound engine.
        item_case: Case of each item, ``[I]`` (long).
        case_lower: Lower corners of the cases' boxes, ``[C, *input_shape]``.
        case_upper: Upper corners.
        objective: The clause rows of each item, ``[I, R]`` (one clause each).
        root_bounds: Intermediate bounds of each item's root, ``[I, *shape]``.
        values: The split values, in topological order.
        offsets: Start of each split value's neurons in the concatenation.
        config: Branch-and-bound options.
        table: Branching-point lookup or None (midpoints).
        shortcuts: Root linear bounds for BBPS, or None.
    """

    engine: Engine
    item_case: Tensor
    case_lower: Tensor
    case_upper: Tensor
    objective: Objective
    root_bounds: Bounds
    values: list[SplitValue]
    offsets: list[int]
    config: BabConfig
    table: object | None = None
    shortcuts: Shortcuts | None = None

    def box(self, item: Tensor) -> Box:
        """Input boxes of domains of ``item`` (``[N]`` long), ``[N, *input_shape]``."""
        case = self.item_case[item]
        return Box(self.case_lower[case], self.case_upper[case])

    def full_bounds(self, item: Tensor, bounds: Bounds) -> Bounds:
        """``bounds`` plus the graph input's (from the boxes), for the engine."""
        name = self.engine.graph.input_name
        if name in bounds:
            return bounds
        box = self.box(item)
        return {**bounds, name: (box.lower, box.upper)}

    @property
    def num_neurons(self) -> int:
        """Total neurons of all split values."""
        return self.offsets[-1] if self.offsets else 0


def value_offsets(engine: Engine, values: list[SplitValue]) -> list[int]:
    """Start of each value's neurons, plus the total at the end."""
    out = [0]
    for v in values:
        n = 1
        for d in engine.shape(v.name):
            n *= d
        out.append(out[-1] + n)
    return out


def flat(t: Tensor) -> Tensor:
    """``[N, *shape] -> [N, n]``."""
    return t.reshape(t.shape[0], -1)


def zeros_like_rows(t: Tensor, rows: int) -> Tensor:
    """Zeros ``[N, rows]`` of ``t``'s dtype and device."""
    return torch.zeros(t.shape[0], rows, dtype=t.dtype, device=t.device)
