"""Counterexample search: PGD on the violation margin, replay with onnxruntime."""

from genbab.attack.check import OnnxRuntimeModel, check_counterexample
from genbab.attack.pgd import make_validator, pgd_attack

__all__ = [
    "OnnxRuntimeModel",
    "check_counterexample",
    "make_validator",
    "pgd_attack",
]
