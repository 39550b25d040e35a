"""Interval and backward linear (CROWN) bound propagation over a :class:`Graph`.

Shapes: ``B`` is the number of domains (input boxes, branch-and-bound subproblems),
``S`` the number of linear objectives bounded together. Concrete bounds of a value
are ``[B, *shape]``; linear coefficients on a value are ``[B, S, *shape]``.

A backward pass bounds ``A . v_start + bias`` from below: it walks the graph from
the start value to the input, replacing each node's output by a linear function of
its inputs (exact for linear nodes, a relaxation for nonlinear ones), and finally
minimises the linear function of the input over the box.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from genbab.bounds import attention, nonlinear, piecewise  # noqa: F401  (rules)
from genbab.bounds.box import Bounds, Box, check_finite
from genbab.bounds.rules import rule_for
from genbab.errors import BoundsError
from genbab.model.graph import Graph, Node

logger = logging.getLogger(__name__)

# Parameters of the optimizable relaxations: node name -> tensor ``[P, B, S, *shape]``.
Params = dict[str, Tensor]


@dataclass
class LinearForm:
    """``coeffs . x + bias`` for ``x`` the graph input.

    Attributes:
        coeffs: ``[B, S, *input_shape]``.
        bias: ``[B, S]``.
    """

    coeffs: Tensor
    bias: Tensor


@dataclass
class Engine:
    """Bound propagation over one graph on one device and dtype.

    Holds per-node caches (the transposed linear maps); cheap to keep around for a
    whole verification run.
    """

    graph: Graph
    dtype: torch.dtype = torch.float64
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _vjps: dict[str, tuple[Tensor, Callable]] = field(default_factory=dict)
    _shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._shapes = {self.graph.input_name: self.graph.input_shape}
        for n in self.graph.nodes:
            self._shapes[n.name] = n.shape
        self._order = {n.name: i for i, n in enumerate(self.graph.nodes)}

    def shape(self, name: str) -> tuple[int, ...]:
        """Per-sample shape of value ``name``."""
        return self._shapes[name]

    # ------------------------------------------------------------------ intervals
    def interval(self, box: Box, bounds: Bounds | None = None) -> Bounds:
        """Interval bounds of every value, tightened by any ``bounds`` given.

        Args:
            box: The input boxes ``[B, *input_shape]``.
            bounds: Known bounds (e.g. from CROWN or branching) that are
                intersected with the interval ones where present.

        Returns:
            Bounds of the input and of every node.
        """
        known = bounds or {}
        out: Bounds = {self.graph.input_name: (box.lower, box.upper)}
        for node in self.graph.nodes:
            lo, hi = self._node_interval(node, out)
            if node.name in known:
                klo, khi = known[node.name]
                lo, hi = torch.maximum(lo, klo), torch.minimum(hi, khi)
            out[node.name] = (lo, hi)
        return out

    def _node_interval(self, node: Node, out: Bounds) -> tuple[Tensor, Tensor]:
        ins = [out[i] for i in node.inputs]
        op = node.op
        if op.linear:
            mids = [(lo + hi) / 2 for lo, hi in ins]
            rads = [((hi - lo) / 2).clamp(min=0) for lo, hi in ins]
            mid = torch.vmap(op.forward)(*mids)
            rad = torch.vmap(op.abs_forward)(*rads)
            return mid - rad, mid + rad
        return rule_for(node).interval(node, ins)

    # ------------------------------------------------------------------ backward
    def needs_bounds(self) -> list[str]:
        """Values whose concrete bounds the relaxations need, in topological order."""
        names: list[str] = []
        for node in self.graph.nodes:
            if node.op.linear:
                continue
            for i in node.inputs:
                if i not in names:
                    names.append(i)
        return sorted(names, key=lambda n: self._order.get(n, -1))

    def backward(
        self,
        start: str,
        coeffs: Tensor,
        bounds: Bounds,
        params: Params | None = None,
        record: dict[str, Tensor] | None = None,
        extra: dict[str, tuple[Tensor, Tensor]] | None = None,
    ) -> LinearForm:
        """Propagate ``coeffs . value(start)`` back to a linear form of the input.

        The result is a valid lower bound: ``coeffs . value(start) >= form(x)`` for
        every input ``x`` in the boxes whose values respect ``bounds``.

        Args:
            start: Name of the value being bounded.
            coeffs: Coefficients on it, ``[B, S, *shape(start)]``.
            bounds: Concrete bounds of at least every input of every nonlinear node
                between the graph input and ``start``, each ``[B, *shape]``.
            params: Optimizable relaxation parameters by node name, or None for
                the default relaxations.
            record: If given, filled with the coefficients on the output of each
                nonlinear node reached, ``[B, S, *shape]`` (branching uses them).
            extra: Terms added when the pass reaches a value: name ->
                ``(coeffs [B, S, *shape], bias [B, S])``; the coefficients are
                added to those on the value and the bias to the result. The
                caller keeps the bound valid (e.g. beta-CROWN adds
                ``-beta * sign * (h - p)``, non-negative where ``sign * (h - p)
                >= 0``, and bounds the smaller function).

        Returns:
            The linear form in the graph input.
        """
        B, S = coeffs.shape[:2]
        acc: dict[str, Tensor] = {start: coeffs}
        bias = coeffs.new_zeros(B, S)
        stop = self._order.get(start, -1)
        for node in reversed(self.graph.nodes[: stop + 1]):
            a = acc.pop(node.name, None)
            if extra is not None and node.name in extra:
                c, b = extra[node.name]
                a = c if a is None else a + c
                bias = bias + b
            if a is None:
                continue
            if record is not None and not node.op.linear:
                record[node.name] = a
            contributions, b = self._node_backward(node, a, bounds, params)
            bias = bias + b
            for name, c in zip(node.inputs, contributions, strict=True):
                acc[name] = acc[name] + c if name in acc else c
        a_in = acc.pop(self.graph.input_name, None)
        if a_in is None:  # the start value does not depend on the input
            a_in = coeffs.new_zeros(B, S, *self.graph.input_shape)
        return LinearForm(a_in, bias)

    def _node_backward(
        self, node: Node, a: Tensor, bounds: Bounds, params: Params | None
    ) -> tuple[list[Tensor], Tensor]:
        """Coefficients on each input of ``node`` and the bias collected."""
        op = node.op
        if op.linear:
            const, vjp = self._linear_vjp(node)
            B, S = a.shape[:2]
            flat = a.reshape(B * S, *a.shape[2:])
            grads = torch.vmap(vjp)(flat)
            outs = [g.reshape(B, S, *g.shape[1:]) for g in grads]
            bias = (a * const).flatten(2).sum(-1)
            return outs, bias
        p = None if params is None else params.get(node.name)
        ins = [bounds[i] for i in node.inputs]
        shapes = [self.shape(i) for i in node.inputs]
        coeffs, bias = rule_for(node).backward(node, a, ins, p, shapes)
        if not torch.isfinite(bias).all():
            raise BoundsError(
                f"the relaxation of node '{node.name}' ({node.op.op_type}) is "
                "unbounded on its input bounds; the input box may be too wide"
            )
        return coeffs, bias

    def _linear_vjp(self, node: Node) -> tuple[Tensor, Callable]:
        """The constant term and the transposed map of a linear node (cached)."""
        if node.name not in self._vjps:
            zeros = [
                torch.zeros(self.shape(i), dtype=self.dtype, device=self.device)
                for i in node.inputs
            ]
            const, vjp = torch.func.vjp(node.op.forward, *zeros)
            self._vjps[node.name] = (const.detach(), vjp)
        return self._vjps[node.name]

    # ------------------------------------------------------------------ CROWN
    def crown_value(
        self,
        name: str,
        box: Box,
        bounds: Bounds,
        params: Params | None = None,
        forms: dict[str, tuple[LinearForm, LinearForm]] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """CROWN lower and upper bounds of every neuron of value ``name``.

        Args:
            forms: If given, ``forms[name]`` is set to the linear lower and upper
                bounds of the value in terms of the input (coefficients
                ``[B, n, *input_shape]``, bias ``[B, n]`` with ``n`` its size).

        Returns:
            ``(lower, upper)``, each ``[B, *shape(name)]``.
        """
        shape = self.shape(name)
        n = _numel(shape)
        B = box.batch
        eye = torch.eye(n, dtype=box.lower.dtype, device=box.lower.device)
        coeffs = torch.cat([eye, -eye]).reshape(1, 2 * n, *shape).expand(B, -1, *shape)
        form = self.backward(name, coeffs, bounds, params)
        value = box.concretize(form.coeffs, form.bias)
        if forms is not None:
            low = LinearForm(form.coeffs[:, :n], form.bias[:, :n])
            up = LinearForm(-form.coeffs[:, n:], -form.bias[:, n:])
            forms[name] = (low, up)
        lower = value[:, :n].reshape(B, *shape)
        upper = -value[:, n:].reshape(B, *shape)
        return lower, upper

    def crown_bounds(
        self,
        box: Box,
        known: Bounds | None = None,
        deadline: float | None = None,
        forms: dict[str, tuple[LinearForm, LinearForm]] | None = None,
        start_after: str | None = None,
    ) -> Bounds:
        """Bounds of every value that a relaxation needs, by CROWN.

        Values are bounded in topological order, each intersected with its
        interval bounds (and ``known`` ones). Past ``deadline`` the remaining
        values keep their interval bounds. ``forms`` collects the linear bounds
        of each value (see :meth:`crown_value`). Values up to and including
        ``start_after`` keep their ``known`` bounds (branch-and-bound recomputes
        only what follows a split).
        """
        bounds = self.interval(box, known)
        skip = -1 if start_after is None else self._order.get(start_after, -1)
        for name in self.needs_bounds():
            if name == self.graph.input_name or self._order.get(name, -1) <= skip:
                continue
            if deadline is not None and time.monotonic() > deadline:
                break
            lo, hi = self.crown_value(name, box, bounds, forms=forms)
            ilo, ihi = bounds[name]
            lo, hi = torch.maximum(lo, ilo), torch.minimum(hi, ihi)
            check_finite(name, lo, hi)
            bounds[name] = (lo, hi)
            # Later nodes' interval bounds profit from the tighter ones.
            bounds = self.interval(box, bounds)
        return bounds

    def objective_lower(
        self,
        coeffs: Tensor,
        box: Box,
        bounds: Bounds,
        params: Params | None = None,
        record: dict[str, Tensor] | None = None,
        forms: list[LinearForm] | None = None,
    ) -> Tensor:
        """Lower bounds of ``coeffs . y`` for ``y`` the flattened graph output.

        Args:
            coeffs: ``[B, S, num_outputs]``.
            record: See :meth:`backward`.
            forms: If given, the linear form in the input is appended to it.

        Returns:
            ``[B, S]``.
        """
        B, S = coeffs.shape[:2]
        shape = self.graph.output_shape
        form = self.backward(
            self.graph.output_name,
            coeffs.reshape(B, S, *shape),
            bounds,
            params,
            record,
        )
        if forms is not None:
            forms.append(form)
        return box.concretize(form.coeffs, form.bias)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
