"""How each kind of nonlinear node is bounded: a rule per op class.

A :class:`NodeRule` gives, for one op class, the interval of its output, one
backward step of the CROWN pass through its relaxation, and the initial values of
its optimizable parameters. Linear ops need no rule: the engine transposes them.
Modules register rules with :func:`register_rule`; the engine looks them up with
:func:`rule_for`.

Shapes: ``ins`` holds the concrete bounds ``(lower, upper)`` of each input,
``[B, *in_shape]``; ``a`` the coefficients on the node's output ``[B, S, *shape]``;
``params`` ``[P, B, S, *shape]`` (or None for the default relaxation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from genbab.errors import BoundsError
from genbab.model.graph import Node
from genbab.model.ops import Op

Interval = tuple[Tensor, Tensor]

IntervalFn = Callable[[Node, list[Interval]], Interval]
BackwardFn = Callable[
    [Node, Tensor, list[Interval], "Tensor | None", list[tuple[int, ...]]],
    tuple[list[Tensor], Tensor],
]
InitFn = Callable[[Node, list[Interval]], "Tensor | None"]


@dataclass(frozen=True)
class NodeRule:
    """Bounding rules of one op class.

    Attributes:
        interval: ``interval(node, ins) -> (lower, upper)``, each ``[B, *shape]``.
        backward: ``backward(node, a, ins, params, in_shapes)`` returns the
            coefficients on each input ``[B, S, *in_shape]`` and the bias
            ``[B, S]`` collected, so that ``a . out >= sum(coeffs . in) + bias``.
        init_params: ``init_params(node, ins)`` returns parameters that give the
            default relaxation, ``[P, B, *shape]``, or None if not optimizable.
    """

    interval: IntervalFn
    backward: BackwardFn
    init_params: InitFn = lambda node, ins: None  # noqa: E731


RULES: dict[type[Op], NodeRule] = {}


def register_rule(op_class: type[Op], rule: NodeRule) -> None:
    """Use ``rule`` for nodes whose op is an instance of ``op_class``."""
    RULES[op_class] = rule


def rule_for(node: Node) -> NodeRule:
    """The rule of ``node``'s op.

    Raises:
        BoundsError: No rule is registered for the op, naming node and operator.
    """
    for cls in type(node.op).__mro__:
        rule = RULES.get(cls)  # type: ignore[arg-type]
        if rule is not None:
            return rule
    raise BoundsError(
        f"no linear relaxation for operator {node.op.op_type} (node '{node.name}')"
    )
