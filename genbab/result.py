"""The outcome of verifying one instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class Verdict(StrEnum):
    """VNN-COMP verdicts. ``unsat`` means the property is verified (no
    counterexample exists); ``sat`` means a counterexample was found and checked."""

    SAT = "sat"
    UNSAT = "unsat"
    UNKNOWN = "unknown"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True)
class Counterexample:
    """An input that violates the property, with the model's output on it.

    Attributes:
        x: Flattened input, shape ``[num_inputs]``, float64, inside the case's box.
        y: Flattened output of onnxruntime on ``x``, shape ``[num_outputs]``.
        case: Index of the property case it violates.
        clause: Index of the clause (within the case) it satisfies.
    """

    x: np.ndarray
    y: np.ndarray
    case: int = 0
    clause: int = 0


@dataclass
class Result:
    """What :func:`genbab.verify` returns.

    Attributes:
        verdict: The verdict.
        seconds: Wall-clock time spent.
        counterexample: Set exactly when the verdict is ``sat``.
        message: Why, in one line (the error for ``error``, the method that
            decided otherwise).
        stats: Numbers worth reporting: bounds per method, domains visited, ...
    """

    verdict: Verdict
    seconds: float = 0.0
    counterexample: Counterexample | None = None
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
