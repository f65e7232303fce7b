"""Helpers shared by several test modules: scikit-image's photos, the CLI in a subprocess, a script of scripts/ as a
module, a synthetic INT8 calibration table, tensor-name checks."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # 512x512, 400x600, 300x451, 427x640


def photos(bgr: bool = False) -> list[np.ndarray]:
    """scikit-image's colour photos, HxWx3 uint8 (RGB, or BGR as cv2.imread gives them); skips without it."""
    data = pytest.importorskip("skimage.data")
    return [np.ascontiguousarray(getattr(data, n)()[..., ::-1] if bgr else getattr(data, n)()) for n in PHOTOS]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m netdef.cli ARGS` in a new process that sees this one's imports."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "netdef.cli", *args], capture_output=True, text=True, env=env)


def load_script(name: str) -> ModuleType:
    """scripts/NAME.py as the module NAME, imported once (a neighbour script's import of it gets the same module),
    with scripts/ on sys.path as `python scripts/NAME.py` has it, so that its own neighbour scripts import."""
    scripts = Path(__file__).resolve().parent.parent / "scripts"
    path = scripts / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    if str(scripts) not in sys.path:
        sys.path.insert(0, str(scripts))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def lenet_weights(seed: int) -> dict[str, np.ndarray]:
    """The state_dict of netdef's example LeNet made after `torch.manual_seed(seed)`, as numpy arrays."""
    import torch

    from netdef.examples.digits import LeNet

    torch.manual_seed(seed)
    return {k: v.numpy() for k, v in LeNet().state_dict().items()}


def synthetic_table(arch: str, wts, path: Path, input_hw=None):
    """A valid calibration table with a distinct amax per point (1.0, 1.25, 1.5, ...); `wts` a .wts path or a
    mapping of arrays (in-memory weights)."""
    from netdef.define import weights_identity
    from netdef.int8.calibrate import quantization_points
    from netdef.int8.calibration import CalibrationTable
    from netdef.int8.quantize import fingerprint, fingerprint_parts
    from netdef.spec import load_spec

    spec = load_spec(arch)
    points = quantization_points(arch, wts, input_hw)
    amax = {k: 1.0 + 0.25 * i for i, k in enumerate(points)}
    shape, sha = spec.input_shape_for(input_hw), weights_identity(wts)[1]
    table = CalibrationTable(fingerprint(spec, sha, shape), "max", amax, fingerprint_parts(spec, sha, shape))
    table.save(path)
    return table


def misnamed_tensors(definition) -> list[str]:
    """Layer outputs of a network definition not named after their layer (`NAME` or `NAME:i`); network
    outputs, which carry their own names, are exempt."""
    outputs = {definition.get_output(i).name for i in range(definition.num_outputs)}
    bad = []
    for li in range(definition.num_layers):
        layer = definition.get_layer(li)
        for i in range(layer.num_outputs):
            name = layer.get_output(i).name
            if name not in outputs and name not in (layer.name, f"{layer.name}:{i}"):
                bad.append(f"{layer.name} -> {name}")
    return bad
