"""genbab's verdicts on a sample of shared VNN-COMP instances agree with the
published ones (``../shared/benchmarks/known_verdicts.csv``).

The sample takes, per family of the first issue, instances that are known
``sat`` and known ``unsat`` and that genbab decides in about a second; the
whole table (every instance) is printed by ``benchmarks/bench_verdicts.py``.
A ``sat`` must come with a counterexample that onnxruntime confirms.
"""

from __future__ import annotations

import csv

import pytest
from onnx_builders import SHARED

import genbab
from genbab.attack import check_counterexample
from genbab.config import load_config
from genbab.spec import read_vnnlib

ERAN = "eran_mnist_vnncomp2021"
SIGMOID = "ffnnSIGMOID__Point_6x200"
SAMPLE = [
    ("acasxu_2023", "ACASXU_run2a_2_1_batch_2000", "prop_2"),
    ("acasxu_2023", "ACASXU_run2a_2_6_batch_2000", "prop_3"),
    ("mnist_fc_2022", "mnist-net_256x2", "prop_1_0.05"),
    ("mnist_fc_2022", "mnist-net_256x2", "prop_7_0.05"),
    (ERAN, SIGMOID, "mnist_spec_idx_7259_eps_0.01200"),
    (ERAN, SIGMOID, "mnist_spec_idx_7167_eps_0.01200"),
    (ERAN, "mnist_relu_9_200", "mnist_spec_idx_4285_eps_0.01500"),
    ("dist_shift_2023", "mnist_concat", "index4881_delta0.13"),
    ("dist_shift_2023", "mnist_concat", "index3392_delta0.13"),
]


def _known() -> dict[tuple[str, str, str], str]:
    path = SHARED / "known_verdicts.csv"
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        return {
            (r["family"], r["onnx"], r["vnnlib"]): r["expected"]
            for r in csv.DictReader(f)
        }


KNOWN = _known()


@pytest.mark.skipif(not KNOWN, reason="shared benchmarks not found")
@pytest.mark.parametrize("family,net,prop", SAMPLE, ids=lambda v: str(v))
def test_verdict_matches_known(family: str, net: str, prop: str) -> None:
    onnx_rel, vnnlib_rel = f"onnx/{net}.onnx.gz", f"vnnlib/{prop}.vnnlib.gz"
    expected = KNOWN[(family, onnx_rel, vnnlib_rel)]
    assert expected in ("sat", "unsat")
    onnx_path, vnnlib_path = SHARED / family / onnx_rel, SHARED / family / vnnlib_rel
    config = load_config(None, ["bab.enabled=false"])
    result = genbab.verify(onnx_path, vnnlib_path, timeout=60, config=config)
    assert str(result.verdict) == expected, result.message
    if expected == "sat":
        cex = result.counterexample
        assert cex is not None
        spec = read_vnnlib(vnnlib_path, len(cex.x), len(cex.y))
        assert check_counterexample(onnx_path, spec, cex.x, case=cex.case)
