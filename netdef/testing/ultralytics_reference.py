"""Ultralytics' own YOLOv8/YOLO11/YOLO26 model definitions (PyPI package `ultralytics`, 8.4) as the reference for
netdef's `yolov8*`, `yolo11*` and `yolo26*` architectures: random weights, realistic BatchNorm statistics, eval mode.

Only `pip install --no-deps ultralytics==8.4.190` is needed next to torch and PyYAML: the modules its import
chain names but model code never calls get inert stand-ins while it is imported (as for the YOLOv5 reference).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import tempfile
from typing import Any

FOLDERS = {"yolov8": "v8", "yolo11": "11", "yolo26": "26"}
NAME = re.compile(r"^(yolov8|yolo11|yolo26)([nslmx])(-cls|-pose|-seg|-p2|-p6|-ghost)?$")
MODELS = {None: "DetectionModel", "-cls": "ClassificationModel", "-pose": "PoseModel", "-seg": "SegmentationModel"}


def ultralytics_available() -> bool:
    """Whether the `ultralytics` package is importable."""
    return importlib.util.find_spec("ultralytics") is not None


@functools.lru_cache(maxsize=None)
def import_tasks() -> Any:
    """`ultralytics.nn.tasks` (DetectionModel), with its settings file kept out of the user's home."""
    if not ultralytics_available():
        raise ImportError("the reference needs Ultralytics' code: pip install --no-deps ultralytics==8.4.190")
    from netdef.testing.yolov5_reference import import_with_stand_ins

    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.gettempdir())
    os.environ.setdefault("YOLO_VERBOSE", "False")
    return import_with_stand_ins("ultralytics.nn.tasks")


def cfg_text(name: str) -> str:
    """The text of Ultralytics' own model YAML `name` (yolov8-seg, yolo11, yolo26-pose: family and task)."""
    tasks = import_tasks()
    path = os.path.join(os.path.dirname(tasks.__file__), "..", "cfg", "models", FOLDERS[name[:6]], f"{name}.yaml")
    with open(path, encoding="utf-8") as f:
        return f.read()


def reference_model(name: str, nc: int | None = None, seed: int = 0, tame: bool = False,
                    kpt_shape: tuple[int, int] | None = None) -> tuple[Any, dict]:
    """An Ultralytics DetectionModel `name` (yolov8n ... yolo26x; -cls, -pose and -seg names give the
    classification, pose and segmentation models; yolov8n-p2, -p6 and -ghost its detection variants) in eval mode
    (end-to-end heads with `model.end2end = True`, as Ultralytics' predictor and exporter run them) with random
    weights, BatchNorm statistics close to those of its real input, random head biases; and its state_dict (no
    num_batches_tracked).
    `tame=True`: BatchNorm gains x0.1 and the head's last convolutions x10, as yolov5_reference.reference_model
    explains (a random deep SiLU network amplifies rounding errors; fp16 comparisons need it tamed)."""
    import yaml

    match = NAME.match(name)
    if match is None:
        raise ValueError(f"no Ultralytics reference for '{name}': use yolov8n..x, yolo11n..x or yolo26n..x (-cls, "
                         f"-pose, -seg; yolov8 also -p2, -p6, -ghost)")
    family, scale, task = match.groups()
    cfg = yaml.safe_load(cfg_text(f"{family}{task or ''}"))
    cfg["scale"] = scale
    if kpt_shape is not None:  # a pose model trained with another keypoint shape
        cfg["kpt_shape"] = list(kpt_shape)
    return model_from_cfg(cfg, MODELS.get(task, MODELS[None]), nc, seed, tame)


def model_from_cfg(cfg: dict, kind: str = "DetectionModel", nc: int | None = None, seed: int = 0,
                   tame: bool = False) -> tuple[Any, dict]:
    """reference_model's model and state_dict for an Ultralytics model YAML of one's own (`cfg`, its parsed rows)
    and model class `kind` (DetectionModel, SegmentationModel, PoseModel, ClassificationModel)."""
    import torch

    from netdef.testing.yolov5_reference import randomize_reference

    tasks = import_tasks()
    torch.manual_seed(seed)
    default_act = tasks.Conv.default_act  # a YAML's `activation:` sets it for every model built after it
    try:
        model = getattr(tasks, kind)(cfg, nc=nc, verbose=False)
    finally:
        tasks.Conv.default_act = default_act
    head = model.model[-1]
    names = () if kind == "ClassificationModel" else ("cv2", "cv3", "one2one_cv2", "one2one_cv3")
    convs = [b[-1] for n in names if getattr(head, n, None) is not None for b in getattr(head, n)]
    sd = randomize_reference(model, seed, tame, convs)
    if getattr(head, "one2one_cv2", None) is not None:
        model.end2end = True
    return model, sd
