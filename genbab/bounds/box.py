"""Input sets and small tensor helpers shared by the bound computations."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genbab.errors import BoundsError


@dataclass(frozen=True)
class Box:
    """A batch of axis-aligned input boxes.

    Attributes:
        lower: Lower corners, shape ``[B, *input_shape]``.
        upper: Upper corners, same shape.
    """

    lower: Tensor
    upper: Tensor

    @property
    def batch(self) -> int:
        """Number of boxes ``B``."""
        return self.lower.shape[0]

    def concretize(self, coeffs: Tensor, bias: Tensor) -> Tensor:
        """Lower bound of ``coeffs . x + bias`` over each box.

        Args:
            coeffs: Coefficients on the input, shape ``[B, S, *input_shape]``.
            bias: Constant terms, shape ``[B, S]``.

        Returns:
            The minimum over ``x`` in box ``b`` for each ``(b, s)``, shape
            ``[B, S]``.
        """
        flat = coeffs.flatten(2)
        lo = self.lower.flatten(1).unsqueeze(1)
        hi = self.upper.flatten(1).unsqueeze(1)
        value = (flat.clamp(min=0) * lo + flat.clamp(max=0) * hi).sum(-1)
        return value + bias


Bounds = dict[str, tuple[Tensor, Tensor]]
"""Concrete bounds of graph values: name -> (lower, upper), each ``[B, *shape]``."""


def sum_to_shape(t: Tensor, shape: tuple[int, ...], nlead: int) -> Tensor:
    """Sum ``t`` down to ``shape`` in its trailing dims (undo broadcasting).

    Args:
        t: Tensor of shape ``[*lead, *broadcast_shape]`` with ``nlead`` leading dims.
        shape: The per-sample shape the value had before broadcasting.
        nlead: Number of leading (batch, spec) dims to keep.

    Returns:
        Tensor of shape ``[*lead, *shape]``.
    """
    extra = t.dim() - nlead - len(shape)
    if extra > 0:
        t = t.sum(dim=list(range(nlead, nlead + extra)))
    dims = [
        nlead + i for i, d in enumerate(shape) if d == 1 and t.shape[nlead + i] != 1
    ]
    if dims:
        t = t.sum(dim=dims, keepdim=True)
    return t


def check_finite(name: str, lower: Tensor, upper: Tensor) -> None:
    """Raise :class:`BoundsError` naming ``name`` if bounds are NaN or infinite."""
    if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
        raise BoundsError(
            f"bounds of node '{name}' are infinite or NaN; the input box may be too "
            "wide for this model"
        )


def broadcast_batch(shape: tuple[int, ...], *ts: Tensor) -> list[Tensor]:
    """Expand per-domain tensors ``[B, *s]`` to ``[B, *shape]`` (ONNX broadcast).

    Args:
        shape: The per-sample target shape.
        ts: Tensors ``[B, *s]`` with ``s`` broadcastable to ``shape``.
    """
    out = []
    for t in ts:
        per = t.shape[1:]
        t = t.reshape(t.shape[0], *([1] * (len(shape) - len(per))), *per)
        out.append(t.expand(t.shape[0], *shape))
    return out
