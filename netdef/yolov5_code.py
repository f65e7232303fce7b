"""Ultralytics' YOLOv5 code (PyPI package `yolov5` 7.0.x) with the fewest dependencies: for YOLOv5 checkpoints,
which pickle its classes, and for the reference models tests compare with.

Only `pip install --no-deps yolov5==7.0.14` is needed next to torch and PyYAML. The package's `models/yolo.py`
import chain also imports cv2, pandas, matplotlib, seaborn, requests, ultralytics, pkg_resources, ... for plotting,
data loading and hub code that defining and running a model never calls. While (and only while) that chain is
imported, missing ones are replaced by inert stand-ins; installed ones are used as they are. The package's
`__init__` (hub helpers) is skipped, and the global state the chain changes (sys.path, print options, warning
filters, environment) is put back afterwards.
"""
from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import pickle
import re
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# Top-level modules the import chain names but the model code does not use.
OPTIONAL_MODULES = ("cv2", "pandas", "matplotlib", "seaborn", "requests", "psutil", "ultralytics", "pkg_resources",
                    "git", "huggingface_hub", "scipy", "thop", "PIL", "IPython", "albumentations", "tensorboard",
                    "polars", "pynvml", "ultralytics_thop", "ultralytics_platform")

class _Inert:
    """Stands in for anything from a stubbed module: attributes, calls and items give more of the same."""

    def __getattr__(self, name: str) -> "_Inert":
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Inert()

    def __call__(self, *args: Any, **kwargs: Any) -> "_Inert":
        return _Inert()

    def __getitem__(self, key: Any) -> "_Inert":
        return _Inert()

    def __setattr__(self, name: str, value: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def __iter__(self) -> Any:
        return iter(())

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)  # `class X(stub.Base)` gives a plain class


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Inert()


def _parse_version(text: str) -> tuple[int, ...]:
    """pkg_resources.parse_version stand-in: the leading release numbers ('2.1.0+cu121' -> (2, 1, 0))."""
    m = re.match(r"\d+(?:\.\d+)*", str(text))
    return tuple(int(p) for p in m.group(0).split(".")) if m else (0,)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Placed last on sys.meta_path: finds only the optional modules that nothing else found."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] not in OPTIONAL_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: Any) -> types.ModuleType:
        mod = _StubModule(spec.name)
        mod.__path__ = []
        if spec.name == "pkg_resources":
            mod.parse_version = _parse_version
        self.made.append(spec.name)
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def yolov5_available() -> bool:
    """Whether the `yolov5` package (its files, not its dependencies) is installed."""
    return importlib.util.find_spec("yolov5") is not None


@functools.lru_cache(maxsize=None)
def import_yolov5() -> types.ModuleType:
    """`yolov5.models.yolo` (DetectionModel, Detect, parse_model), imported with the fewest dependencies."""
    if "yolov5.models.yolo" in sys.modules:
        return sys.modules["yolov5.models.yolo"]
    spec = importlib.util.find_spec("yolov5")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the reference needs Ultralytics' YOLOv5 code: pip install --no-deps yolov5==7.0.14")
    if "yolov5" not in sys.modules:  # the package itself without its __init__ (hub helpers, heavy imports)
        sys.modules["yolov5"] = importlib.util.module_from_spec(spec)
    configured = "YOLOV5_CONFIG_DIR" in os.environ
    os.environ.setdefault("YOLOV5_CONFIG_DIR", tempfile.gettempdir())  # its settings file: not in the user's home
    try:
        yolo = import_with_stand_ins("yolov5.models.yolo")
    finally:
        if not configured:
            os.environ.pop("YOLOV5_CONFIG_DIR", None)
    logging.getLogger("yolov5").setLevel(logging.WARNING)  # parse_model prints a table per model
    return yolo


def import_with_stand_ins(module: str) -> types.ModuleType:
    """Import `module` with inert stand-ins for the OPTIONAL_MODULES that are not installed, only during the
    import, and the process-wide state the import changes put back."""
    finder = _StubFinder()
    saved = _GlobalState()
    sys.meta_path.append(finder)
    try:
        return importlib.import_module(module)
    finally:
        sys.meta_path.remove(finder)
        for name in finder.made:  # later imports elsewhere must not see the stand-ins
            sys.modules.pop(name, None)
        saved.restore()


class _GlobalState:
    """What importing YOLOv5's utils changes for the whole process."""

    def __init__(self) -> None:
        import torch

        self.path = list(sys.path)
        self.environ = dict(os.environ)
        self.np_print = np.get_printoptions()
        self.warnings = list(warnings.filters)
        self.torch = torch
        self.pil_open = _pil_image().open if _pil_image() is not None else None  # Ultralytics 8 patches it

    def restore(self) -> None:
        sys.path[:] = self.path
        os.environ.clear()
        os.environ.update(self.environ)
        np.set_printoptions(**self.np_print)
        warnings.filters[:] = self.warnings
        self.torch.set_printoptions(profile="default")
        if self.pil_open is not None:
            _pil_image().open = self.pil_open


def _pil_image() -> Any:
    """PIL.Image when Pillow is installed (the real one, not a stand-in), else None."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image if hasattr(Image, "__file__") else None


# The top-level packages of the yolov5 repository, which a checkpoint saved by its train.py pickles classes from
REPOSITORY_PACKAGES = ("models", "utils")


def load_repository_checkpoint(path: str | Path) -> Any:
    """torch.load (full unpickling) a checkpoint of YOLOv5's classes: saved by the yolov5 repository's own code
    (`models.yolo.DetectionModel`, `models.common.Conv`, ...: taken from the installed `yolov5` package instead,
    so no clone of the repository need be on sys.path) or by the package (`yolov5.models.yolo...`), its modules
    imported with stand-ins for the plotting and data dependencies the model does not use."""
    import torch

    import_yolov5()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module.split(".")[0] in REPOSITORY_PACKAGES:
                module = f"yolov5.{module}"
            if module.startswith("yolov5.") and module not in sys.modules:
                import_with_stand_ins(module)
            return super().find_class(module, name)

    renaming = types.ModuleType("netdef_yolov5_pickle")
    renaming.Unpickler = Unpickler  # type: ignore[attr-defined]
    renaming.load = pickle.load  # type: ignore[attr-defined]
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=renaming)
