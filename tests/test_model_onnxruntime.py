"""Every shared VNN-COMP model loads and matches onnxruntime.

Inputs are drawn inside the input box of the model's first VNN-LIB property
(read with a small regex: the first ``(>= X_i c)`` / ``(<= X_i c)`` per input)
and, except where the model divides by a sum of inputs, uniformly in [-1, 1].
"""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from genbab.model import load_model

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
# acasxu has 45 networks of the same architecture: test two of them.
ACASXU_KEEP = ("ACASXU_run2a_1_1_batch_2000", "ACASXU_run2a_5_9_batch_2000")
# Models whose inputs are only meaningful in their VNN-LIB box (mscn divides by
# the sum of a mask input).
BOX_ONLY = ("mscn_128d",)
TOLERANCE = 2e-5  # on max |error| / (1 + max |reference|)


def _models() -> list[Path]:
    found = sorted(BENCHMARKS.glob("*/onnx/*.onnx.gz"))
    return [
        p
        for p in found
        if p.parts[-3] != "acasxu_2023" or p.name.startswith(ACASXU_KEEP)
    ]


MODELS = _models()


def _input_box(model: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The first property's input box of ``model`` (None if not found)."""
    family = model.parents[1]
    with open(family / "instances.csv") as f:
        rows = [r for r in csv.reader(f) if r and Path(r[0]).name == model.name]
    if not rows:
        return None
    text = gzip.decompress((family / rows[0][1]).read_bytes()).decode()
    lower, upper = np.full(n, np.nan), np.full(n, np.nan)
    pattern = r"\((>=|<=) X_(\d+) ([-+0-9.eE]+)\)"
    for op, i, value in re.findall(pattern, text):
        bound = lower if op == ">=" else upper
        if int(i) < n and np.isnan(bound[int(i)]):
            bound[int(i)] = float(value)
    if np.isnan(lower).any() or np.isnan(upper).any():
        return None
    return lower, upper


def _inputs(model: Path, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    gen = np.random.default_rng(0)
    samples = []
    box = _input_box(model, n)
    if box is not None:
        samples.append(gen.uniform(box[0], box[1], (3, n)))
    if box is None or not model.name.startswith(BOX_ONLY):
        samples.append(gen.uniform(-1.0, 1.0, (3, n)))
    return np.concatenate(samples).reshape(-1, *shape).astype(np.float32)


@pytest.mark.skipif(not MODELS, reason="shared benchmarks not found")
@pytest.mark.parametrize("model", MODELS, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_matches_onnxruntime(model: Path) -> None:
    graph = load_model(model)
    x = _inputs(model, graph.input_shape)

    sess = ort.InferenceSession(
        gzip.decompress(model.read_bytes()), providers=["CPUExecutionProvider"]
    )
    name = sess.get_inputs()[0].name
    ref = np.stack([sess.run(None, {name: xi})[0] for xi in x])
    assert ref.shape == (len(x), *graph.output_shape)
    assert np.isfinite(ref).all()

    scale = 1.0 + np.abs(ref).max()
    y32 = graph.forward(torch.from_numpy(x)).numpy()
    assert np.abs(y32 - ref).max() / scale < TOLERANCE
    y64 = graph.to("cpu", torch.float64).forward(torch.from_numpy(x).double())
    assert np.abs(y64.numpy() - ref).max() / scale < TOLERANCE
