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
from genbab.bounds.nonlinear import monotone_direction
from genbab.bounds.rules import rule_for
from genbab.errors import BoundsError
from genbab.model.graph import Graph, Node

logger = logging.getLogger(__name__)

DEFAULT_MAX_ELEMENTS = 1 << 23
"""Default cap on the entries of one coefficient tensor of a CROWN pass (8 Mi:
64 MiB in float64); wider values are bounded a chunk of rows at a time."""

DEFAULT_FORWARD_MAX_INPUTS = 16
"""Default :attr:`Engine.forward_max_inputs`."""

DEFAULT_MAX_PASS_WORK = 1 << 26
"""Default :attr:`Engine.max_pass_work` (about 2 to 5 s of CROWN on one core)."""

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

    Attributes:
        graph: The graph bounded.
        dtype: Floating dtype of the bounds.
        device: Where the bounds are computed.
        max_elements: Cap on the entries of one coefficient tensor
            ``[B, rows, *shape]`` in the passes of :meth:`crown_value`, which
            bounds a wide value a chunk of rows at a time to stay within it.
        forward_max_inputs: Graphs with at most this many inputs get forward
            linear bounds of every value first in :meth:`crown_bounds` (cheap
            for them: the cost grows with the inputs, not the neurons); 0 turns
            it off.
        max_pass_work: With forward bounds, a value whose CROWN passes cost
            more than this (rows times the sizes of the values they visit, per
            domain) keeps its forward bounds.
    """

    graph: Graph
    dtype: torch.dtype = torch.float64
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    max_elements: int = DEFAULT_MAX_ELEMENTS
    forward_max_inputs: int = DEFAULT_FORWARD_MAX_INPUTS
    max_pass_work: int = DEFAULT_MAX_PASS_WORK
    _vjps: dict[str, tuple[Tensor, Callable]] = field(default_factory=dict)
    _shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _widths: dict[str, int] = field(default_factory=dict)
    _work: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._shapes = {self.graph.input_name: self.graph.input_shape}
        for n in self.graph.nodes:
            self._shapes[n.name] = n.shape
        self._order = {n.name: i for i, n in enumerate(self.graph.nodes)}

    def shape(self, name: str) -> tuple[int, ...]:
        """Per-sample shape of value ``name``."""
        return self._shapes[name]

    # ------------------------------------------------------------------ intervals
    def interval(
        self, box: Box, bounds: Bounds | None = None, after: str | None = None
    ) -> Bounds:
        """Interval bounds of every value, tightened by any ``bounds`` given.

        Args:
            box: The input boxes ``[B, *input_shape]``.
            bounds: Known bounds (e.g. from CROWN or branching) that are
                intersected with the interval ones where present.
            after: If given, ``bounds`` must hold every node up to and
                including this one; they are kept as they are and only the
                nodes after it are recomputed.

        Returns:
            Bounds of the input and of every node.
        """
        known = bounds or {}
        out: Bounds = {self.graph.input_name: (box.lower, box.upper)}
        first = 0
        if after is not None:
            first = self._order[after] + 1
            for node in self.graph.nodes[:first]:
                out[node.name] = known[node.name]
        for node in self.graph.nodes[first:]:
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
        deadline: float | None = None,
    ) -> tuple[Tensor, Tensor]:
        """CROWN lower and upper bounds of every neuron of value ``name``.

        The ``2 n`` rows (``+e_i`` for the lower bounds, ``-e_i`` for the upper
        ones) are propagated in chunks so that no coefficient tensor of the pass
        holds more than about :attr:`max_elements` entries (see
        :meth:`rows_per_pass`); every row is bounded on its own, so the result
        does not depend on the chunking.

        Args:
            name: The value.
            box: Input boxes ``[B, *input_shape]``.
            bounds: See :meth:`backward`.
            params: See :meth:`backward`; ``[P, B, 2 n, *shape]`` per node (rows
                as above), or with a spec dimension of 1.
            forms: If given, ``forms[name]`` is set to the linear lower and upper
                bounds of the value in terms of the input (coefficients
                ``[B, n, *input_shape]``, bias ``[B, n]`` with ``n`` its size).
            deadline: ``time.monotonic()`` value; chunks not started by then
                are skipped and their neurons get ``-inf`` / ``+inf`` (callers
                intersect with interval bounds). Not allowed with ``forms``.

        Returns:
            ``(lower, upper)``, each ``[B, *shape(name)]``.
        """
        if deadline is not None and forms is not None:
            raise ValueError("crown_value: a deadline cannot be combined with forms")
        shape = self.shape(name)
        n = _numel(shape)
        B = box.batch
        lo, hi = box.lower, box.upper
        # Rows not bounded (past the deadline) keep value -inf: no bound.
        value = lo.new_full((B, 2 * n), -float("inf"))
        parts: list[tuple[Tensor, Tensor]] = []
        for b0, b1, r0, r1 in self._chunks(name, B, 2 * n):
            if deadline is not None and time.monotonic() > deadline:
                break
            rows = torch.arange(r0, r1, device=lo.device)
            coeffs = lo.new_zeros(r1 - r0, n)
            sign = torch.where(rows < n, 1.0, -1.0).to(lo.dtype)
            coeffs[torch.arange(r1 - r0, device=lo.device), rows % n] = sign
            coeffs = coeffs.reshape(1, r1 - r0, *shape).expand(b1 - b0, -1, *shape)
            whole = (b0, b1) == (0, B)
            form = self.backward(
                name,
                coeffs,
                bounds if whole else _slice_bounds(bounds, b0, b1),
                _slice_params(params, b0, b1, r0, r1, whole),
            )
            sub_box = box if whole else Box(lo[b0:b1], hi[b0:b1])
            value[b0:b1, r0:r1] = sub_box.concretize(form.coeffs, form.bias)
            if forms is not None:
                parts.append((form.coeffs, form.bias))
        if forms is not None:
            forms[name] = _join_forms(parts, n)
        lower = value[:, :n].reshape(B, *shape)
        upper = -value[:, n:].reshape(B, *shape)
        return lower, upper

    def rows_per_pass(self, name: str, batch: int) -> int:
        """How many rows of ``name`` one backward pass takes for ``batch`` domains.

        The pass from ``name`` holds coefficients ``[batch, rows, *shape(v)]`` on
        the values ``v`` it visits (the ancestors of ``name``); the rows are as
        many as keep the largest of these within :attr:`max_elements` (at least
        one).
        """
        width = self._path_width(name)
        return max(1, self.max_elements // max(1, batch * width))

    def _chunks(self, name: str, batch: int, rows: int):
        """``(b0, b1, r0, r1)`` blocks of domains and rows, each one pass."""
        width = self._path_width(name)
        per_domain = max(1, self.max_elements // max(1, width))
        step_b = batch if per_domain >= batch else per_domain
        for b0 in range(0, batch, step_b):
            b1 = min(batch, b0 + step_b)
            step_r = self.rows_per_pass(name, b1 - b0)
            for r0 in range(0, rows, step_r):
                yield b0, b1, r0, min(rows, r0 + step_r)

    def _path_width(self, name: str) -> int:
        """Largest per-domain size of a value the backward pass from ``name``
        visits (its ancestors, itself and the graph input)."""
        if name not in self._widths:
            widest = _numel(self.graph.input_shape)
            seen, todo = set(), [name]
            while todo:
                v = todo.pop()
                if v in seen or v == self.graph.input_name:
                    continue
                seen.add(v)
                widest = max(widest, _numel(self.shape(v)))
                todo.extend(self.graph.node(v).inputs)
            self._widths[name] = widest
        return self._widths[name]

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
        values (and the rows of a value not bounded yet) keep their interval
        bounds. ``forms`` collects the linear bounds of each value (see
        :meth:`crown_value`). Values up to and including ``start_after`` keep
        their ``known`` bounds (branch-and-bound recomputes only what follows a
        split). The outputs of monotone elementwise nodes get the interval of
        their input's bounds instead of a CROWN pass, which could not be
        tighter (see :meth:`interval_suffices`), unless ``forms`` are asked for.
        """
        bounds = self.interval(box, known)
        skip = -1 if start_after is None else self._order.get(start_after, -1)
        forward = forms is None and self.uses_forward()
        if forward:
            bounds = self._forward(box, bounds, skip)
        for name in self.needs_bounds():
            if name == self.graph.input_name or self._order.get(name, -1) <= skip:
                continue
            if forms is None and self.interval_suffices(name):
                continue
            if forward and self.pass_work(name) > self.max_pass_work:
                continue
            if deadline is not None and time.monotonic() > deadline:
                logger.debug("CROWN bounds: deadline passed before '%s'", name)
                break
            t0 = time.monotonic()
            lo, hi = self.crown_value(
                name,
                box,
                bounds,
                forms=forms,
                deadline=None if forms is not None else deadline,
            )
            logger.debug(
                "CROWN bounds of '%s' (%d neurons, %d domains): %.3f s",
                name, lo[0].numel(), box.batch, time.monotonic() - t0,
            )  # fmt: skip
            ilo, ihi = bounds[name]
            lo, hi = torch.maximum(lo, ilo), torch.minimum(hi, ihi)
            check_finite(name, lo, hi)
            bounds[name] = (lo, hi)
            # Later nodes' interval bounds profit from the tighter ones.
            bounds = self.interval(box, bounds, after=name)
        return bounds

    def uses_forward(self) -> bool:
        """Whether :meth:`crown_bounds` starts from forward linear bounds."""
        return 0 < _numel(self.graph.input_shape) <= self.forward_max_inputs

    def pass_work(self, name: str) -> int:
        """Cost of the CROWN passes of ``name`` for one domain: its ``2 n`` rows
        times the summed sizes of the values the passes visit."""
        if name not in self._work:
            seen, todo, total = set(), [name], 0
            while todo:
                v = todo.pop()
                if v in seen or v == self.graph.input_name:
                    continue
                seen.add(v)
                total += _numel(self.shape(v))
                todo.extend(self.graph.node(v).inputs)
            self._work[name] = 2 * _numel(self.shape(name)) * total
        return self._work[name]

    def _forward(self, box: Box, bounds: Bounds, skip: int) -> Bounds:
        """Forward linear bounds of the values after index ``skip``."""
        from genbab.bounds.forward import forward_bounds

        t0 = time.monotonic()
        new = forward_bounds(self, box, bounds)
        for node in self.graph.nodes[skip + 1 :]:
            bounds[node.name] = new[node.name]
        logger.debug("forward linear bounds: %.3f s", time.monotonic() - t0)
        return bounds

    def interval_suffices(self, name: str) -> bool:
        """Whether a CROWN pass from ``name`` cannot beat its interval bounds.

        True for the output ``v = f(z)`` of an elementwise node with ``f``
        monotone on its domain: once ``z`` has its bounds ``[l, u]``, the
        interval of ``v`` is ``[f(l), f(u)]`` (increasing ``f``), the exact
        range of ``f`` on them.

        Why a CROWN pass (without optimized parameters) is never tighter: the
        pass from ``+e_j . v`` first replaces ``v_j`` by the lower line
        ``a z_j + b <= f(z_j)`` of ``f`` on ``[l_j, u_j]``. Every later step
        maps coefficients ``c`` on a value to ``c+ * lower + c- * upper`` lines
        of the next node, and the concretization over the box is a sum of
        ``c+ * lo + c- * hi``: the pass is positively homogeneous, so from
        ``a e_j . z`` with ``a > 0`` it gives ``a`` times the pass from
        ``e_j . z``, whose value is ``z_j``'s CROWN lower bound ``L``; and
        ``L <= l_j``, since ``z`` is bounded before ``v`` with the same earlier
        bounds (or keeps bounds at least that tight, after a split).
        For increasing ``f`` the lower line has ``a >= 0``, so the pass gives
        ``a L + b <= a l_j + b <= f(l_j)``, the interval's bound (with
        ``a = 0`` it gives ``b <= f(l_j)``). The upper bound, and decreasing
        ``f`` (``a <= 0``, through ``z``'s upper bound ``U >= u_j``), follow
        by the same argument with signs flipped. The interval is sound in any
        case; only "not looser" rests on the slopes' signs, which every
        relaxation of a monotone function here has. With optimized (alpha)
        parameters the pass may choose other lines, so this is for plain CROWN.
        """
        if name == self.graph.input_name:
            return False
        node = self.graph.node(name)
        return len(node.inputs) == 1 and monotone_direction(node) != 0

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


def _slice_bounds(bounds: Bounds, b0: int, b1: int) -> Bounds:
    """The bounds of domains ``b0:b1`` (views)."""
    return {k: (lo[b0:b1], hi[b0:b1]) for k, (lo, hi) in bounds.items()}


def _slice_params(
    params: Params | None, b0: int, b1: int, r0: int, r1: int, whole: bool
) -> Params | None:
    """The parameters of domains ``b0:b1`` and rows ``r0:r1``.

    Parameters are ``[P, B, S, *shape]``; a domain or spec dimension of size 1
    is broadcast and kept whole.
    """
    if params is None:
        return None
    out: Params = {}
    for k, p in params.items():
        if p.shape[1] != 1 and not whole:
            p = p[:, b0:b1]
        if p.shape[2] != 1:
            p = p[:, :, r0:r1]
        out[k] = p
    return out


def _join_forms(
    parts: list[tuple[Tensor, Tensor]], n: int
) -> tuple[LinearForm, LinearForm]:
    """Lower and upper linear forms of a value from the chunks of its rows.

    Chunks come one block of domains after the other, and within a block the
    rows ``0 .. 2 n`` in order.
    """
    blocks: list[list[tuple[Tensor, Tensor]]] = []
    done = 0
    for c, b in parts:
        if done == 0:
            blocks.append([])
        blocks[-1].append((c, b))
        done = (done + c.shape[1]) % (2 * n)
    coeffs = torch.cat([torch.cat([c for c, _ in bl], 1) for bl in blocks], 0)
    bias = torch.cat([torch.cat([b for _, b in bl], 1) for bl in blocks], 0)
    low = LinearForm(coeffs[:, :n], bias[:, :n])
    up = LinearForm(-coeffs[:, n:], -bias[:, n:])
    return low, up


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
