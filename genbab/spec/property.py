"""The value types a VNN-LIB property is read into.

A property describes the *unsafe* region: it is violated iff some input ``x`` inside
one case's box makes the network output ``y`` satisfy every row of one of that case's
clauses. All arrays are float64 and read-only, so cases can share them safely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _frozen(array: np.ndarray) -> np.ndarray:
    """Returns ``array`` as a read-only float64 array (no copy if already one)."""
    out = np.asarray(array, dtype=np.float64)
    if out.flags.writeable:
        out = out.copy() if out is array else out
        out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Clause:
    """A conjunction of linear output constraints: violated region is matrix @ y <= rhs.

    Attributes:
        matrix: ``[k, num_outputs]`` coefficients, one row per output atom.
        rhs: ``[k]`` right-hand sides.

    A clause with ``k == 0`` rows has no output condition: every input of its case's
    box violates the property.
    """

    matrix: np.ndarray
    rhs: np.ndarray

    def __post_init__(self) -> None:
        matrix, rhs = _frozen(self.matrix), _frozen(self.rhs)
        if matrix.ndim != 2 or rhs.ndim != 1 or rhs.shape[0] != matrix.shape[0]:
            raise ValueError(
                f"Clause needs matrix [k, n] and rhs [k]; got {matrix.shape} "
                f"and {rhs.shape}"
            )
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "rhs", rhs)


@dataclass(frozen=True, eq=False)
class Case:
    """An input box together with clauses; a counterexample is an x in the box whose
    output satisfies ANY one clause (all rows of it).

    Attributes:
        lower: ``[num_inputs]`` lower bounds of the box.
        upper: ``[num_inputs]`` upper bounds, ``lower <= upper`` elementwise.
        clauses: the disjunction of output conditions, at least one.
    """

    lower: np.ndarray
    upper: np.ndarray
    clauses: tuple[Clause, ...]

    def __post_init__(self) -> None:
        lower, upper = _frozen(self.lower), _frozen(self.upper)
        if lower.ndim != 1 or lower.shape != upper.shape:
            raise ValueError(
                f"Case needs lower and upper of shape [n]; got {lower.shape} "
                f"and {upper.shape}"
            )
        clauses = tuple(self.clauses)
        if not clauses:
            raise ValueError("Case needs at least one clause")
        widths = {clause.matrix.shape[1] for clause in clauses}
        if len(widths) != 1:
            raise ValueError(f"Case clauses disagree on num_outputs: {sorted(widths)}")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "clauses", clauses)


@dataclass(frozen=True, eq=False)
class Property:
    """A whole VNN-LIB property.

    Attributes:
        cases: the property is violated iff some case has a counterexample.
        num_inputs: number of flattened model inputs (``X_i``).
        num_outputs: number of flattened model outputs (``Y_j``).
        path: the file it was read from.
    """

    cases: tuple[Case, ...]
    num_inputs: int
    num_outputs: int
    path: str

    def __post_init__(self) -> None:
        cases = tuple(self.cases)
        for case in cases:
            if case.lower.shape[0] != self.num_inputs:
                raise ValueError(
                    f"case box has {case.lower.shape[0]} inputs, property has "
                    f"{self.num_inputs}"
                )
            if case.clauses[0].matrix.shape[1] != self.num_outputs:
                raise ValueError(
                    f"case clauses have {case.clauses[0].matrix.shape[1]} outputs, "
                    f"property has {self.num_outputs}"
                )
        object.__setattr__(self, "cases", cases)
