"""How the pipeline turns a branch-and-bound outcome into a verdict.

Branch and bound runs on an open demo instance (the GeLU net at eps 0.08, which
alpha-CROWN leaves open); its result is replaced to pin each case: proven gives
``unsat``, stopping for time gives ``timeout`` even when the clock has a little
left, any other stop gives ``unknown`` with a message naming branch and bound.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import genbab
from genbab import pipeline
from genbab.bab.loop import BabResult
from genbab.config import load_config

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_gelu_2x32.onnx"
PROPERTY = ROOT / "vnnlib" / "digits_gelu_2x32_img5_eps0.08.vnnlib"
STATS = {"bab_items": 1, "bab_domains": 7, "bab_worst_margin": -0.25}


def _verify(monkeypatch, result: BabResult):
    calls = []

    def fake_bab(*args, **kwargs):
        calls.append(1)
        return result

    monkeypatch.setattr(pipeline, "run_bab", fake_bab)
    config = load_config(None, ["attack.enabled=false", "general.num_threads=1"])
    out = genbab.verify(MODEL, PROPERTY, timeout=60, config=config)
    assert calls, "branch and bound was not reached"
    return out


@pytest.mark.parametrize(
    ("result", "verdict", "words"),
    [
        (BabResult(True, "", dict(STATS)), "unsat", "branch and bound"),
        (BabResult(False, "timeout", dict(STATS)), "timeout", "time limit"),
        (
            BabResult(False, "max_domains", dict(STATS)),
            "unknown",
            "branch and bound stopped (max_domains) after 7 domains",
        ),
    ],
)
def test_bab_outcome_sets_the_verdict(monkeypatch, result, verdict, words):
    out = _verify(monkeypatch, result)
    assert out.verdict.value == verdict
    assert words in out.message
