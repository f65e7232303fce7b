"""Custom TensorRT plugins: CUDA sources shipped with netdef, compiled on first use, loaded by engines.

`compile.py` compiles a plugin folder (e.g. `yolo_decode_nms/`) with nvcc into a cached shared library;
`yolo.py` adds the YOLO decode + NMS plugin to a network. Engines list their plugin libraries in their
metadata ("plugins"), and `load_plugin_libraries` loads them before the engine is deserialized.
"""
from __future__ import annotations

import ctypes
import sys
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
    """Load the plugin libraries an engine's metadata lists (each once per process); one that is gone (a
    cleared cache) is compiled again from netdef's sources first."""
    for entry in entries:
        lib = str(entry["library"])
        if lib in _LOADED:
            continue
        if not Path(lib).is_file():
            lib = _compile_again(entry, engine_path)
        load_library(lib, engine_path)


def _compile_again(entry: dict[str, Any], engine_path: str | Path) -> str:
    """Compile a missing plugin library again. It is the engine's own when it lands at the recorded path: the
    file name encodes the sources, TensorRT, the toolchain and the GPU architecture."""
    from .compile import compile_plugin

    missing = f"{engine_path} needs plugin library {entry['library']} ({entry.get('name')}), which is missing"
    try:
        lib = compile_plugin(str(entry.get("name")))
    except NetdefError as e:
        why = " ".join(str(e).split())  # its list of problems, on one line
        raise NetdefError(f"{missing}, and compiling it again failed ({why}); rebuild the engine with `netdef build`") \
            from None
    if str(lib.path) != str(entry["library"]):
        raise NetdefError(f"{missing}; compiled again it is {lib.path} (other sources, toolchain or $NETDEF_CACHE "
                          f"than at build time): rebuild the engine with `netdef build`")
    print(f"[netdef] compiled the missing plugin library {lib.path} again for {engine_path}", file=sys.stderr)
    return str(lib.path)
