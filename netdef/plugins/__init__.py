"""Custom TensorRT plugins: CUDA sources shipped with netdef, compiled on first use, loaded by engines.

`compile.py` compiles a plugin folder (e.g. `yolo_decode_nms/`) with nvcc into a cached shared library;
`yolo.py` adds the YOLO decode + NMS plugin to a network. Engines list their plugin libraries in their
metadata ("plugins"), and `load_plugin_libraries` loads them before the engine is deserialized.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from ..errors import NetdefError

_LOADED: dict[str, Any] = {}


def load_library(path: str | Path, engine_path: str | Path | None = None) -> ctypes.CDLL:
    """dlopen a plugin library (RTLD_GLOBAL, once per process); its plugin creators register with TensorRT."""
    from .. import trt_api

    lib = str(path)
    if lib not in _LOADED:
        trt_api.module()  # libnvinfer first: the plugin registers with the very library Python uses
        try:
            _LOADED[lib] = ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            for_engine = f" for {engine_path}" if engine_path else ""
            raise NetdefError(f"cannot load plugin library {lib}{for_engine}: {e}") from None
    return _LOADED[lib]


def load_plugin_libraries(entries: list[dict[str, Any]], engine_path: str | Path) -> None:
    """Load the plugin libraries an engine's metadata lists (each once per process)."""
    for entry in entries:
        lib = str(entry["library"])
        if lib in _LOADED:
            continue
        if not Path(lib).is_file():
            raise NetdefError(f"{engine_path} needs plugin library {lib} ({entry.get('name')}), which is missing; "
                              "rebuild the engine (netdef compiles its plugins on first use)")
        load_library(lib, engine_path)
