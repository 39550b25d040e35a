"""Branch-and-bound domains, stored as one batch of tensors.

A domain is a property case together with tightened bounds of the values that the
relaxations depend on (the inputs of nonlinear nodes). Splitting a neuron ``h``
at ``p`` makes two children, one with ``h <= p`` and one with ``h >= p``; their
union covers the parent, so proving both proves the parent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genbab.bounds.box import Bounds


@dataclass
class Domains:
    """``N`` domains.

    Attributes:
        case: Index of each domain's property case, ``[N]`` (long).
        bounds: Value name -> ``(lower, upper)``, each ``[N, *shape]``.
        margin: Worst clause margin of each domain's last bound, ``[N]``.
        depth: Number of splits that led to each domain, ``[N]`` (long).
    """

    case: Tensor
    bounds: Bounds
    margin: Tensor
    depth: Tensor

    def __len__(self) -> int:
        return int(self.case.shape[0])

    def take(self, index: Tensor) -> Domains:
        """The domains at ``index`` (a long tensor or boolean mask)."""
        return Domains(
            self.case[index],
            {k: (lo[index], hi[index]) for k, (lo, hi) in self.bounds.items()},
            self.margin[index],
            self.depth[index],
        )

    @staticmethod
    def concat(parts: list[Domains]) -> Domains:
        """All domains of ``parts`` in one batch."""
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        keys = parts[0].bounds.keys()
        return Domains(
            torch.cat([p.case for p in parts]),
            {
                k: (
                    torch.cat([p.bounds[k][0] for p in parts]),
                    torch.cat([p.bounds[k][1] for p in parts]),
                )
                for k in keys
            },
            torch.cat([p.margin for p in parts]),
            torch.cat([p.depth for p in parts]),
        )


class DomainPool:
    """The open domains; hands out the hardest (lowest margin) first."""

    def __init__(self, domains: Domains) -> None:
        self._domains = domains

    def __len__(self) -> int:
        return len(self._domains)

    def pop(self, count: int) -> Domains:
        """Remove and return up to ``count`` domains with the lowest margins."""
        n = len(self._domains)
        if count >= n:
            out = self._domains
            self._domains = out.take(torch.zeros(0, dtype=torch.long))
            return out
        order = torch.argsort(self._domains.margin)
        out = self._domains.take(order[:count])
        self._domains = self._domains.take(order[count:])
        return out

    def push(self, domains: Domains) -> None:
        """Add domains to the pool."""
        if len(domains):
            self._domains = Domains.concat([self._domains, domains])

    def worst_margin(self) -> float:
        """The lowest margin among open domains (``inf`` when empty)."""
        if not len(self._domains):
            return float("inf")
        return float(self._domains.margin.min())
