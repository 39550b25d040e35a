"""One small instance of each general-graph family, end to end through
``genbab.verify``.

ACOPF (both years, the piecewise-linear surrogates included), the control
graph of ``lsnc_2024``, the ``nn4sys_2023`` models and one ViT are decided at
the root in seconds: their verdicts must agree with
``../shared/benchmarks/known_verdicts.csv``, and a ``sat`` must come with a
counterexample that onnxruntime confirms. Where genbab cannot decide an
instance in CI time yet (the cGAN, an MSCN property of many boxes), the run
must still end without error, with finite bounds, on time. Branch and bound
is off here (these checks are about the graphs, not the search).
"""

from __future__ import annotations

import csv
import math

import pytest
from onnx_builders import SHARED

import genbab
from genbab.attack import check_counterexample
from genbab.config import load_config
from genbab.spec import read_vnnlib

KNOWN_FILE = SHARED / "known_verdicts.csv"
pytestmark = pytest.mark.skipif(
    not KNOWN_FILE.exists(), reason="shared benchmarks not found"
)

# (family, model, property): decided at the root, in seconds.
DECIDED = [
    ("ml4acopf_2023", "14_ieee_ml4acopf", "14_ieee_prop2"),
    ("ml4acopf_2024", "14_ieee_ml4acopf-linear-residual", "14_ieee_prop4"),
    ("ml4acopf_2024", "14_ieee_ml4acopf-linear-nonresidual", "14_ieee_prop1"),
    ("lsnc_2024", "quadrotor2d_output", "quadrotor2d_output_1"),
    ("nn4sys_2023", "pensieve_small_parallel", "pensieve_parallel_4"),
    ("vit_2023", "pgd_2_3_16", "pgd_2_3_16_6058"),
]


def _known() -> dict[tuple[str, str, str], str]:
    if not KNOWN_FILE.exists():
        return {}
    with open(KNOWN_FILE, encoding="utf-8") as f:
        return {
            (r["family"], r["onnx"], r["vnnlib"]): r["expected"]
            for r in csv.DictReader(f)
        }


def _config(*extra: str):
    return load_config(None, ["bab.enabled=false", "general.num_threads=1", *extra])


def _paths(family: str, model: str, prop: str):
    folder = SHARED / family
    return folder / f"onnx/{model}.onnx.gz", folder / f"vnnlib/{prop}.vnnlib.gz"


@pytest.mark.parametrize("family,model,prop", DECIDED, ids=lambda v: str(v))
def test_family_verdict_matches_known(family: str, model: str, prop: str) -> None:
    expected = _known()[(family, f"onnx/{model}.onnx.gz", f"vnnlib/{prop}.vnnlib.gz")]
    onnx_path, vnnlib_path = _paths(family, model, prop)
    result = genbab.verify(onnx_path, vnnlib_path, timeout=60, config=_config())
    assert str(result.verdict) == expected, result.message
    if expected == "sat":
        cex = result.counterexample
        assert cex is not None
        spec = read_vnnlib(vnnlib_path, len(cex.x), len(cex.y))
        assert check_counterexample(onnx_path, spec, cex.x, case=cex.case)
    else:
        assert result.message.startswith("proven by")
        assert result.stats["worst_margin"] > 0 or "splitting" in result.message


def _first_row(family: str, model: str) -> str:
    with open(SHARED / family / "instances.csv", encoding="utf-8") as f:
        for row in csv.reader(f):
            if row and model in row[0]:
                return row[1].strip().removeprefix("vnnlib/").removesuffix(".vnnlib.gz")
    raise AssertionError(f"no instance of {model}")


OPEN = [
    # 5 inputs: forward linear bounds of the generator, input splitting.
    ("cgan_2023", "cGAN_imgSz32_nCh_3_nonlinear_activations", 12.0),
    # The ViT with 5 tokens: CROWN through two attention layers.
    ("vit_2023", "pgd_2_3_16", 15.0),
    # 500 input boxes: the attack may use a quarter of the time, the bounds the rest.
    ("nn4sys_2023", "mscn_128d", 10.0),
]


@pytest.mark.parametrize("family,model,timeout", OPEN, ids=lambda v: str(v))
def test_family_runs_on_time_with_finite_bounds(
    family: str, model: str, timeout: float
) -> None:
    prop = (
        "cardinality_0_500_128" if model == "mscn_128d" else _first_row(family, model)
    )
    onnx_path, vnnlib_path = _paths(family, model, prop)
    expected = _known().get(
        (family, f"onnx/{model}.onnx.gz", f"vnnlib/{prop}.vnnlib.gz")
    )
    result = genbab.verify(onnx_path, vnnlib_path, timeout=timeout, config=_config())
    assert str(result.verdict) != "error", result.message
    assert result.seconds <= timeout + 2.0
    if str(result.verdict) in ("sat", "unsat"):
        assert str(result.verdict) == expected or expected in (None, "unknown")
        return
    margin = result.stats.get("worst_margin")
    assert margin is not None and math.isfinite(margin), result.stats
