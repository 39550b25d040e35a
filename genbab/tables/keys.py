"""Table keys (no torch import, so the command line can use them cheaply).

Keys are the names of genbab's ``Unary`` ops (``node.op.func``), except that
``pow`` with exponent 2 has the key ``"square"``; ``"mul"`` is the table for
splitting ``x`` of ``x * y``.
"""

from __future__ import annotations

__all__ = ["ALL_KEYS", "MUL_KEY", "UNARY_KEYS", "table_key"]

#: The one-input functions genbab builds tables for.
UNARY_KEYS: tuple[str, ...] = (
    "sigmoid", "tanh", "sin", "cos", "gelu", "exp", "reciprocal", "sqrt", "square",
)  # fmt: skip

#: Key of the multiplication table (split ``x`` of ``x * y``).
MUL_KEY = "mul"

#: Every table key, in build order (the slow ones first, for parallel builds).
ALL_KEYS: tuple[str, ...] = ("gelu", "sin", "cos") + tuple(
    k for k in UNARY_KEYS if k not in ("gelu", "sin", "cos")
) + (MUL_KEY,)  # fmt: skip


def table_key(func: str, param: float | None = None) -> str | None:
    """The table key of a ``Unary`` op, or None if genbab has no table for it.

    Args:
        func: ``node.op.func`` (``"sigmoid"``, ``"pow"``, ...).
        param: ``node.op.param`` (the exponent of ``pow``), else None.

    Returns:
        ``func`` itself for the functions of :data:`UNARY_KEYS`, ``"square"`` for
        ``pow`` with exponent 2, None otherwise.
    """
    if func == "pow":
        return "square" if param is not None and float(param) == 2.0 else None
    return func if func in UNARY_KEYS and param is None else None
