"""Ultralytics' own YOLOv5 model definition (PyPI package `yolov5` 7.0.x) as the reference for netdef's
YOLOv5 architectures.

Only `pip install --no-deps yolov5==7.0.14` is needed next to torch and PyYAML. The package's
`models/yolo.py` import chain also imports cv2, pandas, matplotlib, seaborn, requests, ultralytics,
pkg_resources, ... for plotting, data loading and hub code that defining and running a model never calls.
While (and only while) that chain is imported, missing ones are replaced by inert stand-ins; installed
ones are used as they are. The package's `__init__` (hub helpers) is skipped, and the global state the
chain changes (sys.path, print options, warning filters, environment) is put back afterwards.
"""
from __future__ import annotations

import copy
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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
    os.environ.setdefault("YOLOV5_CONFIG_DIR", tempfile.gettempdir())
    yolo = import_with_stand_ins("yolov5.models.yolo")
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


def ultralytics_cfg(name: str) -> Path:
    """Ultralytics' own model YAML for yolov5{n,s,m,l,x} and yolov5{n,s,m,l,x}6 from the installed package."""
    spec = importlib.util.find_spec("yolov5")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pip install --no-deps yolov5==7.0.14")
    root = Path(list(spec.submodule_search_locations)[0]) / "models"
    for cand in (root / f"{name}.yaml", root / "hub" / f"{name}.yaml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"the yolov5 package has no model YAML '{name}'")


def reference_cfg(name: str) -> dict:
    """The model dict for `name`: Ultralytics' YAML where the package ships one (v6/v7 models), else ours
    (the v5.0 layouts `yolov5*-v5`: same row format, and DetectionModel reads only the keys it knows)."""
    try:
        return yaml.safe_load(ultralytics_cfg(name).read_text(encoding="utf-8"))
    except FileNotFoundError:  # not shipped by the yolov5 package (the v5.0 layout): netdef's family file
        from netdef.spec import resolve_arch

        path, scale = resolve_arch(name)
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        cfg["depth_multiple"], cfg["width_multiple"] = cfg.pop("scales")[scale]
        return cfg


def reference_model(name_or_cfg: str | dict, nc: int | None = None, seed: int = 0,
                    v5_buffers: bool = False, tame: bool = False) -> tuple[Any, dict]:
    """An Ultralytics DetectionModel in eval mode with random weights, random BatchNorm statistics and
    random head biases, and its state_dict (without num_batches_tracked).

    `tame=True` scales the BatchNorm gains by 0.1 and the Detect convolutions by 10. With random weights a deep
    SiLU network is chaotic: it amplifies rounding errors row after row (PyTorch's own fp16 output differs
    from its fp32 one by 0.1-0.4 of the output's range on yolov5s/m/s6), which no fp16 engine can beat.
    Tamed, SiLU works in its near-linear range and PyTorch's fp16 error is ~1.3e-3 (yolov5s, m, s6, s-v5)
    while the output still follows the image.

    `v5_buffers=True` adds YOLOv5 <= v5.0's `anchor_grid` buffer (anchors in pixels, (nl, 1, na, 1, 1, 2))
    to the state_dict, as old checkpoints carry it."""
    import torch

    yolo = import_yolov5()
    cfg = copy.deepcopy(reference_cfg(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg)
    torch.manual_seed(seed)
    model = yolo.DetectionModel(cfg=cfg, nc=nc)
    detect = model.model[-1]
    sd = randomize_reference(model, seed, tame, list(detect.m))
    if v5_buffers:
        prefix = f"model.{len(model.model) - 1}"
        sd[f"{prefix}.anchor_grid"] = (detect.anchors * detect.stride.view(-1, 1, 1)).view(
            detect.nl, 1, detect.na, 1, 1, 2).clone()
    return model, sd


def randomize_reference(model: Any, seed: int, tame: bool, head_convs: list[Any]) -> dict:
    """A freshly made reference model (random weights) made fit to compare with: random BatchNorm statistics and
    affine parameters (`tame`: gains x0.1), then statistics near those of its real input (`calibrate_batchnorm`),
    and random biases for the head's last convolutions `head_convs` (`tame`: their weights x10), which Ultralytics
    and YOLOv5 start very negative (all scores near 0). Leaves the model in eval mode; returns its state_dict
    (without num_batches_tracked)."""
    import torch

    from netdef.export import randomize_batchnorm

    randomize_batchnorm(model, seed)
    if tame:
        tame_batchnorm(model)
    calibrate_batchnorm(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # spread the score biases over the sigmoid
        for conv in head_convs:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
            if tame:
                conv.weight.mul_(10.0)
    model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def tame_batchnorm(model: Any) -> None:
    """Scale every BatchNorm's gain and shift by 0.1 (see `reference_model`'s `tame`)."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.mul_(0.1)
                m.bias.mul_(0.1)


def calibrate_batchnorm(model: Any, seed: int, size: int = 256) -> None:
    """Set each BatchNorm's running statistics near those its input really has (random image batch), then
    jitter them. With default-initialised convolutions and purely random statistics the signal dies within a
    few layers and the output hardly depends on the input, which would make the comparison weak."""
    import torch

    g = torch.Generator().manual_seed(seed + 2)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch gives exactly its statistics
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, size, size, generator=g))
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            n = m.num_features
            m.running_mean.add_(torch.randn(n, generator=g) * 0.05 * m.running_var.sqrt())
            m.running_var.mul_(torch.rand(n, generator=g) * 0.45 + 0.8)
    model.eval()


def detect_prefix(model: Any) -> str:
    return f"model.{len(model.model) - 1}"
