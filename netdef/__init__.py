"""netdef: PyTorch weights (.wts) -> TensorRT engines through the network-definition API.

Its modules load on first use (`netdef.registry.block`, `netdef.build.build_engine`, ...): importing netdef alone
imports neither torch nor TensorRT."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

__version__ = "0.2.0"

from .errors import NetdefError  # noqa: E402,F401


def _submodules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str) -> Any:
    """`netdef.<module>` without importing it first (PEP 562)."""
    if not name.startswith("_") and name in _submodules():
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'netdef' has no attribute '{name}'")


def __dir__() -> list[str]:
    """What `netdef.<TAB>` offers: the submodules (imported or not), `NetdefError` and the module's dunders
    (`__version__`), not this file's own imports."""
    return sorted({n for n in globals() if n.startswith("__")} | {"NetdefError", *_submodules()})
