"""Branch-and-bound domains, stored as batches of tensors.

A domain belongs to one *item* (one clause of one property case, see
:mod:`genbab.bab.loop`) and holds tightened bounds of the values the relaxations
depend on (the inputs of nonlinear nodes). Splitting a neuron ``h`` at ``p`` makes
two children, one with ``h <= p`` and one with ``h >= p``; their union covers the
parent, so proving both proves the parent.

Besides the bounds a domain carries what warm-starts its children's bound
computation: the relaxation parameters (alpha) and the split-constraint
multipliers (beta) of its last bound, and the best lower bound of each row found
so far (valid for every descendant, whose region is smaller).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from genbab.bounds.box import Bounds


@dataclass
class Domains:
    """``N`` domains; every tensor is batch-first.

    Attributes:
        item: Index of each domain's item, ``[N]`` (long).
        lower: Best lower bound of each row of the item's clause, ``[N, R]``.
        margin: Clause margin (best row's ``lower - rhs``), ``[N]``.
        depth: Number of splits that led to each domain, ``[N]`` (long).
        bounds: Value name -> ``(lower, upper)``, each ``[N, *shape]``.
        alpha: Node name -> relaxation parameters ``[N, P, R, *shape]``.
        beta: Value name -> multipliers of the constraints ``h >= lower`` and
            ``h <= upper`` of split neurons, ``[N, 2, R, n]``.
    """

    item: Tensor
    lower: Tensor
    margin: Tensor
    depth: Tensor
    bounds: Bounds
    alpha: dict[str, Tensor] = field(default_factory=dict)
    beta: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def fields(self) -> dict[str, Tensor]:
        """All tensors under flat keys (for storage)."""
        out = {
            "item": self.item,
            "lower": self.lower,
            "margin": self.margin,
            "depth": self.depth,
        }
        for k, (lo, hi) in self.bounds.items():
            out["lo:" + k], out["hi:" + k] = lo, hi
        for k, v in self.alpha.items():
            out["alpha:" + k] = v
        for k, v in self.beta.items():
            out["beta:" + k] = v
        return out

    @staticmethod
    def from_fields(f: dict[str, Tensor]) -> Domains:
        """Inverse of :meth:`fields`."""
        bounds: Bounds = {}
        alpha: dict[str, Tensor] = {}
        beta: dict[str, Tensor] = {}
        for key, v in f.items():
            kind, _, name = key.partition(":")
            if kind == "lo":
                bounds[name] = (v, f["hi:" + name])
            elif kind == "alpha":
                alpha[name] = v
            elif kind == "beta":
                beta[name] = v
        return Domains(
            f["item"], f["lower"], f["margin"], f["depth"], bounds, alpha, beta
        )

    def take(self, index: Tensor) -> Domains:
        """The domains at ``index`` (a long tensor or boolean mask)."""
        return Domains.from_fields({k: v[index] for k, v in self.fields().items()})

    def repeat(self, times: int) -> Domains:
        """``times`` copies of the batch, one after the other (``[times * N]``)."""
        return Domains.from_fields(
            {
                k: v.repeat(times, *([1] * (v.dim() - 1)))
                for k, v in self.fields().items()
            }
        )

    @staticmethod
    def concat(parts: list[Domains]) -> Domains:
        """All domains of ``parts`` in one batch."""
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        fields = [p.fields() for p in parts]
        return Domains.from_fields(
            {k: torch.cat([f[k] for f in fields]) for k in fields[0]}
        )


class DomainPool:
    """The open domains, in growable preallocated storage.

    ``pop`` hands out the domains with the lowest margins (the hardest first);
    it and ``push`` cost time in the number of domains moved, plus a selection
    over a ``[capacity]`` vector, not a copy of the whole pool.
    """

    def __init__(self, domains: Domains) -> None:
        f = domains.fields()
        self._store: dict[str, Tensor] = {k: v.clone() for k, v in f.items()}
        n = len(domains)
        device = domains.item.device
        self._used = torch.ones(n, dtype=torch.bool, device=device)
        self._margin = domains.margin.clone()
        self._count = n

    def __len__(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        """Number of domains the storage holds without growing."""
        return int(self._used.shape[0])

    def nbytes(self) -> int:
        """Bytes of the storage."""
        return sum(v.numel() * v.element_size() for v in self._store.values())

    def pop(self, count: int) -> Domains:
        """Remove and return up to ``count`` domains with the lowest margins."""
        count = min(count, self._count)
        keyed = torch.where(self._used, self._margin, torch.inf)
        if count == self._count:
            index = torch.nonzero(self._used).flatten()
        else:
            index = torch.topk(keyed, count, largest=False).indices
        out = Domains.from_fields({k: v[index] for k, v in self._store.items()})
        self._used[index] = False
        self._count -= int(index.numel())
        return out

    def push(self, domains: Domains) -> None:
        """Add domains to the pool."""
        n = len(domains)
        if not n:
            return
        free = torch.nonzero(~self._used).flatten()
        if free.numel() < n:
            self._grow(self._count + n)
            free = torch.nonzero(~self._used).flatten()
        slots = free[:n]
        for k, v in domains.fields().items():
            self._store[k][slots] = v.to(self._store[k].dtype)
        self._margin[slots] = domains.margin.to(self._margin.dtype)
        self._used[slots] = True
        self._count += n

    def _grow(self, needed: int) -> None:
        cap = max(needed, 2 * self.capacity, 16)
        extra = cap - self.capacity
        for k, v in self._store.items():
            pad = v.new_zeros((extra, *v.shape[1:]))
            self._store[k] = torch.cat([v, pad])
        self._used = torch.cat([self._used, self._used.new_zeros(extra)])
        self._margin = torch.cat([self._margin, self._margin.new_zeros(extra)])

    def worst_margin(self) -> float:
        """The lowest margin among open domains (``inf`` when empty)."""
        if not self._count:
            return float("inf")
        return float(torch.where(self._used, self._margin, torch.inf).min())

    def items(self) -> Tensor:
        """Items of the open domains, ``[len]`` (long)."""
        return self._store["item"][self._used]

    def margins(self) -> Tensor:
        """Margins of the open domains, ``[len]``."""
        return self._margin[self._used]
