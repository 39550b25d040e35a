"""Disjunctive normal form of a VNN-LIB property, and its expansion into cases.

The reader (:mod:`genbab.spec.vnnlib`) turns every assert into a list of alternative
:class:`Conj` (conjunctions of atoms); :class:`Expander` multiplies these lists out,
builds each disjunct's box and clause, and merges disjuncts with equal boxes.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable

import numpy as np

from genbab.errors import SpecError
from genbab.spec.property import Case, Clause

logger = logging.getLogger(__name__)

#: The most disjuncts a property may expand to before reading gives up.
MAX_DISJUNCTS = 100_000


class NeedPrecise(Exception):
    """Reading needs the precise (position-tracking) reader to report an error."""


class Conj:
    """One conjunction of atoms: input bounds and output rows, in file order.

    Bounds come as bulk chunks ``(index [b], value [b], is_upper [b])`` and as single
    atoms (``xi, xv, xu`` with file offsets ``xo``). Rows are ``(plus, minus, rhs)``
    meaning ``y[plus] - y[minus] <= rhs`` with -1 for an absent term.
    """

    __slots__ = ("chunks", "xi", "xv", "xu", "xo", "rows", "_bounds", "_block")

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.xi: list[int] = []
        self.xv: list[float] = []
        self.xu: list[bool] = []
        self.xo: list[int] = []
        self.rows: list[tuple[int, int, float]] = []
        self._bounds: tuple[np.ndarray, ...] | None = None
        self._block: tuple[np.ndarray, np.ndarray] | None = None

    def extend(self, other: Conj) -> None:
        """Appends the atoms of ``other`` (in place)."""
        self.chunks += other.chunks
        self.xi += other.xi
        self.xv += other.xv
        self.xu += other.xu
        self.xo += other.xo
        self.rows += other.rows

    def merged(self, other: Conj) -> Conj:
        """Returns a new conjunction holding the atoms of ``self`` then ``other``."""
        out = Conj()
        out.extend(self)
        out.extend(other)
        return out

    def has_bounds(self) -> bool:
        """Whether any input atom is present."""
        return bool(self.chunks or self.xi)

    def apply(self, lower: np.ndarray, upper: np.ndarray) -> None:
        """Intersects the box ``lower/upper [n]`` (in place) with this conjunction."""
        if self._bounds is None:
            idx = np.concatenate([c[0] for c in self.chunks] + [np.array(self.xi)])
            val = np.concatenate([c[1] for c in self.chunks] + [np.array(self.xv)])
            up = np.concatenate([c[2] for c in self.chunks] + [np.array(self.xu)])
            idx, up = idx.astype(np.int64), up.astype(bool)
            self._bounds = (idx[~up], val[~up], idx[up], val[up])
        lo_idx, lo_val, up_idx, up_val = self._bounds
        np.maximum.at(lower, lo_idx, lo_val)
        np.minimum.at(upper, up_idx, up_val)

    def block(self, num_outputs: int) -> tuple[np.ndarray, np.ndarray]:
        """Returns the rows as ``matrix [k, num_outputs]`` and ``rhs [k]``."""
        if self._block is None:
            matrix = np.zeros((len(self.rows), num_outputs))
            rhs = np.zeros(len(self.rows))
            for r, (plus, minus, value) in enumerate(self.rows):
                if plus >= 0:
                    matrix[r, plus] += 1.0
                if minus >= 0:
                    matrix[r, minus] -= 1.0
                rhs[r] = value
            self._block = (matrix, rhs)
        return self._block


def too_many(count: int) -> str:
    """The message for a property that expands to ``count`` disjuncts."""
    return f"property expands to {count} disjuncts (more than {MAX_DISJUNCTS})"


class Expander:
    """Expands DNF factors into cases (boxes with their clauses).

    Args:
        path: the property file, for messages.
        num_inputs: ``n``, the declared inputs.
        num_outputs: ``m``, the declared outputs.
        declared: file offset of each input's declaration (-1 if unknown).
        error: builds the positioned error for a file offset and a message.
        precise: whether every bound atom carries its offset; if not, errors that
            need a position raise :class:`NeedPrecise` instead.
    """

    def __init__(
        self,
        path: str,
        num_inputs: int,
        num_outputs: int,
        declared: dict[int, int],
        error: Callable[[int, str], Exception],
        precise: bool,
    ) -> None:
        self._path = path
        self._n = num_inputs
        self._m = num_outputs
        self._declared = declared
        self._error = error
        self._precise = precise

    def cases(self, factors: list[list[Conj]]) -> tuple[Case, ...]:
        """Returns the cases of the conjunction of ``factors`` (each a list of
        alternatives): disjuncts with equal boxes merged, in file order."""
        total = math.prod(len(f) for f in factors)
        if total > MAX_DISJUNCTS:
            raise SpecError(f"{self._path}: {too_many(total)}")
        shared = [f[0] for f in factors if len(f) == 1]
        base = self._box(shared, [])
        grouped: dict[bytes, tuple[np.ndarray, np.ndarray, list[Clause]]] = {}
        for combo in itertools.product(*factors):
            boxed = [
                c
                for c, f in zip(combo, factors, strict=True)
                if len(f) > 1 and c.has_bounds()
            ]
            lower, upper, key = self._box(shared, boxed, base) if boxed else base
            entry = grouped.setdefault(key, (lower, upper, []))
            entry[2].append(self._clause(combo))
        cases = []
        for lower, upper, clauses in grouped.values():
            self._check_bounded(lower, "lower")
            self._check_bounded(upper, "upper")
            cases.append(Case(lower, upper, tuple(clauses)))
        empty = sum(c.matrix.shape[0] == 0 for case in cases for c in case.clauses)
        if empty:
            logger.warning(
                "%s: %d disjuncts have no output constraint; every input in their "
                "box violates the property",
                self._path,
                empty,
            )
        return tuple(cases)

    def _clause(self, combo: tuple[Conj, ...]) -> Clause:
        """The output rows of one disjunct, in file order."""
        blocks = [c.block(self._m) for c in combo]
        if not blocks:
            return Clause(np.zeros((0, self._m)), np.zeros(0))
        matrix = np.concatenate([b[0] for b in blocks])
        rhs = np.concatenate([b[1] for b in blocks])
        return Clause(matrix, rhs)

    def _box(
        self,
        shared: list[Conj],
        boxed: list[Conj],
        base: tuple[np.ndarray, np.ndarray, bytes] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, bytes]:
        """The box of the conjunction of ``shared`` and ``boxed``, checked for
        emptiness, and its merge key. If ``base`` (the box of ``shared``) is given,
        only ``boxed`` is applied, to a copy of it."""
        if base is None:
            lower, upper = np.full(self._n, -np.inf), np.full(self._n, np.inf)
            todo = shared + boxed
        else:
            lower, upper, todo = base[0].copy(), base[1].copy(), boxed
        for conj in todo:
            conj.apply(lower, upper)
        lower += 0.0  # -0.0 -> 0.0, so equal boxes get equal keys
        upper += 0.0
        if not (lower <= upper).all():
            self._empty_error(shared + boxed, int(np.argmax(lower > upper)))
        lower.flags.writeable = False
        upper.flags.writeable = False
        return lower, upper, lower.tobytes() + upper.tobytes()

    def _check_bounded(self, bound: np.ndarray, side: str) -> None:
        """Raises if some input has no ``side`` bound."""
        if not np.isinf(bound).any():
            return
        if not self._precise:
            raise NeedPrecise()
        var = int(np.argmax(np.isinf(bound)))
        raise self._error(self._declared[var], f"input X_{var} has no {side} bound")

    def _empty_error(self, conjs: list[Conj], var: int) -> None:
        """Raises the error for the atom at which X_var's range became empty."""
        if not self._precise:
            raise NeedPrecise()
        events = sorted(
            (offset, value, is_upper)
            for conj in conjs
            for index, value, is_upper, offset in zip(
                conj.xi, conj.xv, conj.xu, conj.xo, strict=True
            )
            if index == var
        )
        lower, upper = -math.inf, math.inf
        for offset, value, is_upper in events:
            if is_upper:
                upper = min(upper, value)
            else:
                lower = max(lower, value)
            if lower > upper:
                raise self._error(
                    offset,
                    f"input X_{var} has an empty range: lower bound {lower!r} > "
                    f"upper bound {upper!r}",
                )
        raise AssertionError(f"empty range of X_{var} not found among its atoms")
