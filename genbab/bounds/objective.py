"""Linear objectives built from a property, and when they count as proven.

A property case is violated by an output ``y`` satisfying every row of some
clause ``M y <= r``. A clause is refuted on a domain when one of its rows has
``lower(M_i y) > r_i`` there; a case is proven when all its clauses are refuted.

Rows are laid out as ``[B, K, R]``: ``B`` cases (domains), ``K`` clauses, ``R``
rows per clause, padded. Padding rows can never refute (their threshold is
``+inf``); padding clauses count as refuted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from genbab.spec.property import Case


@dataclass(frozen=True)
class Objective:
    """Rows of all clauses of a batch of cases, as tensors.

    Attributes:
        coeffs: ``[B, K * R, num_outputs]`` row coefficients (zero for padding).
        rhs: ``[B, K * R]`` thresholds (``+inf`` for padding rows).
        clause_valid: ``[B, K]`` True for real clauses.
        rows_per_clause: ``R``.
    """

    coeffs: Tensor
    rhs: Tensor
    clause_valid: Tensor
    rows_per_clause: int

    @property
    def num_clauses(self) -> int:
        """``K``."""
        return self.clause_valid.shape[1]

    def clause_margins(self, lower: Tensor) -> Tensor:
        """Best refutation margin per clause, ``[B, K]`` (> 0 means refuted).

        Args:
            lower: Lower bounds of the rows, ``[B, K * R]``.
        """
        B = lower.shape[0]
        margin = (lower - self.rhs).reshape(B, self.num_clauses, -1).max(-1).values
        return torch.where(self.clause_valid, margin, torch.full_like(margin, 1e30))

    def proven(self, lower: Tensor) -> Tensor:
        """``[B]`` True where every clause of the case is refuted."""
        return (self.clause_margins(lower) > 0).all(-1)

    def select(self, index: Tensor) -> Objective:
        """The objective restricted to (or repeated over) domains ``index``."""
        return Objective(
            self.coeffs[index], self.rhs[index], self.clause_valid[index],
            self.rows_per_clause,
        )  # fmt: skip


def build_objective(
    cases: list[Case], dtype: torch.dtype, device: torch.device | str
) -> Objective:
    """Stack the clauses of ``cases`` into an :class:`Objective`."""
    B = len(cases)
    K = max(len(c.clauses) for c in cases)
    R = max(cl.matrix.shape[0] for c in cases for cl in c.clauses)
    n_out = cases[0].clauses[0].matrix.shape[1]
    coeffs = np.zeros((B, K, R, n_out))
    rhs = np.full((B, K, R), np.inf)
    valid = np.zeros((B, K), dtype=bool)
    for b, case in enumerate(cases):
        for k, clause in enumerate(case.clauses):
            rows = clause.matrix.shape[0]
            coeffs[b, k, :rows] = clause.matrix
            rhs[b, k, :rows] = clause.rhs
            valid[b, k] = True
    return Objective(
        torch.as_tensor(coeffs.reshape(B, K * R, n_out), dtype=dtype, device=device),
        torch.as_tensor(rhs.reshape(B, K * R), dtype=dtype, device=device),
        torch.as_tensor(valid, device=device),
        R,
    )
