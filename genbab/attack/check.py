"""Replay a candidate counterexample on the original ONNX file with onnxruntime.

A candidate is only reported as ``sat`` after it passes :func:`check_counterexample`:
the input is clipped into a case's box in float64, rounded to the model's input
element type (staying inside the box), fed to onnxruntime the way the VNN-COMP
scorer does (C-order reshape to the declared input shape, dynamic dimensions as
1), and the flattened output must satisfy every row of one clause of that case
with no slack at all.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort

from genbab.errors import ModelError
from genbab.result import Counterexample
from genbab.spec.property import Case, Property

logger = logging.getLogger(__name__)

_ELEMENT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def read_onnx_bytes(path: str | os.PathLike) -> bytes:
    """Read an ``.onnx`` or ``.onnx.gz`` file into bytes.

    Raises:
        ModelError: The file cannot be read or is not valid gzip.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        if str(path).endswith(".gz"):
            data = gzip.decompress(data)
    except OSError as exc:
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from None
    except (EOFError, gzip.BadGzipFile) as exc:
        raise ModelError(f"{path}: invalid gzip data: {exc}") from None
    return data


class OnnxRuntimeModel:
    """An onnxruntime session on the unmodified ONNX file, fed like the scorer.

    Attributes:
        path: The ONNX file.
        input_name: Name of the single graph input.
        input_shape: Declared input shape with dynamic dimensions as 1.
        dtype: Input element type, ``np.float32`` or ``np.float64``.
        num_inputs: Number of scalar inputs (product of ``input_shape``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        """Build the session once.

        Raises:
            ModelError: Unreadable file, a model onnxruntime rejects, more than one
                input or output, or an input that is not float32/float64.
        """
        self.path = str(path)
        try:
            self.session = ort.InferenceSession(
                read_onnx_bytes(path), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(
                f"{path}: onnxruntime cannot load the model: {exc}"
            ) from None
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{path}: expected one graph input and one output, got "
                f"{len(inputs)} and {len(outputs)}"
            )
        declared = inputs[0]
        if declared.type not in _ELEMENT_TYPES:
            raise ModelError(
                f"{path}: input '{declared.name}' has type {declared.type}; "
                "only float32 and float64 inputs are supported"
            )
        self.input_name: str = declared.name
        self.input_shape: tuple[int, ...] = tuple(
            d if isinstance(d, int) and d > 0 else 1 for d in declared.shape
        )
        self.dtype: type[np.floating[Any]] = _ELEMENT_TYPES[declared.type]
        self.num_inputs = int(np.prod(self.input_shape, dtype=np.int64))

    def run_one(self, x: np.ndarray) -> np.ndarray:
        """Evaluate one flat input ``x`` [num_inputs] (already in ``dtype``).

        Returns:
            The flattened output (C order), float64, shape [num_outputs].
        """
        if x.size != self.num_inputs:
            raise ModelError(
                f"{self.path}: got {x.size} input values, the model takes "
                f"{self.num_inputs} (shape {self.input_shape})"
            )
        feed = np.asarray(x, dtype=self.dtype).reshape(self.input_shape, order="C")
        (out,) = self.session.run(None, {self.input_name: feed})
        return np.asarray(out).reshape(-1, order="C").astype(np.float64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Evaluate a batch ``x`` [N, num_inputs], one sample per run.

        Each sample is cast to ``dtype`` first. Returns [N, num_outputs] float64.
        """
        x = np.asarray(x).reshape(len(x), -1)
        return np.stack([self.run_one(row.astype(self.dtype)) for row in x])


def round_into_box(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray, dtype: type
) -> np.ndarray | None:
    """Clip ``x`` into [lower, upper] and round it to ``dtype`` inside the box.

    Values that rounding pushes out of the box move one unit in the last place
    back towards it.

    Args:
        x, lower, upper: Flat float64 arrays [num_inputs].
        dtype: ``np.float32`` or ``np.float64``.

    Returns:
        The rounded point as float64 [num_inputs], or None when some dimension of
        the box holds no value of ``dtype`` (a box narrower than one ulp).
    """
    clipped = np.clip(np.asarray(x, dtype=np.float64), lower, upper)
    rounded = clipped.astype(dtype)
    low = rounded.astype(np.float64) < lower
    high = rounded.astype(np.float64) > upper
    rounded[low] = np.nextafter(rounded[low], dtype(np.inf))
    rounded[high] = np.nextafter(rounded[high], dtype(-np.inf))
    result = rounded.astype(np.float64)
    if np.any(result < lower) or np.any(result > upper):
        return None
    return result


def violated_clause(case: Case, y: np.ndarray) -> int | None:
    """Index of the first clause of ``case`` whose rows all hold for ``y``.

    A row holds when ``matrix @ y - rhs <= 0`` exactly, in float64.
    """
    for j, clause in enumerate(case.clauses):
        matrix = np.asarray(clause.matrix, dtype=np.float64)
        rhs = np.asarray(clause.rhs, dtype=np.float64)
        if np.all(matrix @ y - rhs <= 0.0):
            return j
    return None


def box_distance(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Largest distance (L-infinity) of ``x`` outside the box; 0 inside."""
    gap = np.maximum(lower - x, x - upper)
    return float(np.max(gap, initial=0.0))


def validate_point(
    evaluate: Callable[[np.ndarray], np.ndarray],
    dtype: type,
    prop: Property,
    x: np.ndarray,
    *,
    case: int | None = None,
    tolerance: float = 1e-6,
) -> Counterexample | None:
    """Check ``x`` against every case (or one) with a given evaluator.

    Args:
        evaluate: Maps one flat input [num_inputs] (float64 holding values of
            ``dtype``) to the flat float64 output [num_outputs].
        dtype: Element type the evaluator rounds its input to.
        prop: The property.
        x: Candidate [num_inputs].
        case: Only try this case; None tries all, nearest box first.
        tolerance: ``x`` may lie this far (absolute, L-infinity) outside a box and
            is then clipped into it; farther boxes are not tried.

    Returns:
        The counterexample, or None.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    indices = range(len(prop.cases)) if case is None else [case]
    tried: list[tuple[float, int]] = []
    for i in indices:
        c = prop.cases[i]
        lower = np.asarray(c.lower, dtype=np.float64)
        upper = np.asarray(c.upper, dtype=np.float64)
        if lower.shape != x.shape:
            raise ValueError(
                f"candidate has {x.size} inputs, case {i} has {lower.size}"
            )
        distance = box_distance(x, lower, upper)
        if distance <= tolerance:
            tried.append((distance, i))
    for _, i in sorted(tried):
        c = prop.cases[i]
        lower = np.asarray(c.lower, dtype=np.float64)
        upper = np.asarray(c.upper, dtype=np.float64)
        point = round_into_box(x, lower, upper, dtype)
        if point is None:
            logger.info(
                "case %d: box holds no %s value in some dimension; candidate "
                "cannot be replayed",
                i,
                np.dtype(dtype).name,
            )
            continue
        y = evaluate(point)
        clause = violated_clause(c, y)
        if clause is not None:
            return Counterexample(x=point, y=y, case=i, clause=clause)
    return None


def check_counterexample(
    onnx_path: str | os.PathLike,
    prop: Property,
    x: np.ndarray,
    *,
    session: OnnxRuntimeModel | None = None,
    case: int | None = None,
    tolerance: float = 1e-6,
) -> Counterexample | None:
    """Replay ``x`` with onnxruntime on the ONNX file and check the property.

    ``x`` is clipped into a case's box (it may lie at most ``tolerance`` outside
    it), rounded to the model's input element type while staying inside the box,
    and evaluated as the VNN-COMP scorer does. It is a counterexample when the
    flattened output satisfies every row of one clause of that case with
    ``matrix @ y - rhs <= 0`` exactly in float64.

    Args:
        onnx_path: The original ``.onnx`` or ``.onnx.gz`` file.
        prop: The property (``cases`` with ``lower``/``upper`` [num_inputs] and
            ``clauses`` with ``matrix`` [k, num_outputs] and ``rhs`` [k]).
        x: Candidate input, any shape with num_inputs elements (C order).
        session: A model built once with :class:`OnnxRuntimeModel` for this file;
            built here when None.
        case: Only try this case; None tries every case whose box is near ``x``.
        tolerance: Largest distance outside a box that is clipped away.

    Returns:
        The counterexample with ``x`` as fed to onnxruntime (float64 holding
        values of the input type) and ``y`` onnxruntime's output as float64,
        or None when ``x`` is not one.

    Raises:
        ModelError: The model cannot be loaded by onnxruntime.
    """
    model = session if session is not None else OnnxRuntimeModel(onnx_path)
    cex = validate_point(
        model.run_one, model.dtype, prop, x, case=case, tolerance=tolerance
    )
    if cex is not None:
        logger.info(
            "onnxruntime confirms the counterexample (case %d, clause %d)",
            cex.case,
            cex.clause,
        )
    return cex
