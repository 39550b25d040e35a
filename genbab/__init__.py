"""genbab: branch-and-bound verification of neural networks with general
nonlinearities.

The public API, imported lazily (``import genbab`` stays cheap; torch is loaded
only when something that needs it is used)::

    import genbab

    result = genbab.verify("net.onnx", "prop.vnnlib", timeout=60)
    print(result.verdict)  # genbab.Verdict.UNSAT, ...

``genbab.verify`` calls :func:`genbab.pipeline.verify`, looked up at call time
(so monkeypatching ``genbab.pipeline.verify`` affects ``genbab.verify(...)``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = [
    "Config",
    "Counterexample",
    "Result",
    "Verdict",
    "load_config",
    "load_model",
    "read_vnnlib",
    "verify",
]

# Public name -> (module, attribute).
_LAZY: dict[str, tuple[str, str]] = {
    "Config": ("genbab.config", "Config"),
    "load_config": ("genbab.config", "load_config"),
    "Counterexample": ("genbab.result", "Counterexample"),
    "Result": ("genbab.result", "Result"),
    "Verdict": ("genbab.result", "Verdict"),
    "load_model": ("genbab.model", "load_model"),
    "read_vnnlib": ("genbab.spec", "read_vnnlib"),
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from genbab.runner.results import genbab_version

        return genbab_version()
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'genbab' has no attribute '{name}'") from None
    module = importlib.import_module(module_name)
    value = getattr(module, attribute)
    setattr(sys.modules[__name__], name, value)
    return getattr(sys.modules[__name__], name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def verify(model_path, property_path, *, timeout=None, config=None):  # noqa: ANN001
    """Verify one instance; see :func:`genbab.pipeline.verify`."""
    pipeline = importlib.import_module("genbab.pipeline")
    return pipeline.verify(model_path, property_path, timeout=timeout, config=config)
