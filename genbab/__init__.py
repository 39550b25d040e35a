"""genbab: branch-and-bound verification of neural networks with general
nonlinearities.

The public API, imported lazily (``import genbab`` stays cheap; torch is loaded
only when something that needs it is used)::

    import genbab

    result = genbab.verify("net.onnx", "prop.vnnlib", timeout=60)
    print(result.verdict)  # genbab.Verdict.UNSAT, ...

``genbab.verify`` is the module :mod:`genbab.verify`, made callable: calling it
calls the function ``genbab.verify.verify``, looked up at call time (so
monkeypatching ``genbab.verify.verify`` affects ``genbab.verify(...)`` too),
while ``import genbab.verify`` and ``from genbab.verify import verify`` work as
for any module.
"""

from __future__ import annotations

import importlib
import sys
import types
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

# Public name -> (module, attribute); attribute None means the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "Config": ("genbab.config", "Config"),
    "load_config": ("genbab.config", "load_config"),
    "Counterexample": ("genbab.result", "Counterexample"),
    "Result": ("genbab.result", "Result"),
    "Verdict": ("genbab.result", "Verdict"),
    "load_model": ("genbab.model", "load_model"),
    "read_vnnlib": ("genbab.spec", "read_vnnlib"),
    "verify": ("genbab.verify", None),
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
    value = module if attribute is None else getattr(module, attribute)
    setattr(sys.modules[__name__], name, value)
    return getattr(sys.modules[__name__], name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _CallableModule(types.ModuleType):
    """A module that, called, calls its function of the same name."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        function = self.__dict__[self.__name__.rpartition(".")[2]]
        return function(*args, **kwargs)


class _Package(types.ModuleType):
    """genbab itself: makes the submodule ``genbab.verify`` callable as it is set."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "verify" and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
