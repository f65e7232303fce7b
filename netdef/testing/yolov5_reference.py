"""Ultralytics' own YOLOv5 model definition (PyPI package `yolov5` 7.0.x) as the reference for netdef's
YOLOv5 architectures (imported with the fewest dependencies by `netdef.yolov5_code`)."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import yaml

from ..yolov5_code import import_with_stand_ins, import_yolov5, yolov5_available  # noqa: F401  re-exported

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
