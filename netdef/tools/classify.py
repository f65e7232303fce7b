"""Classification engines in `netdef detect`: yolov8-cls, yolo11-cls and yolov5-cls (their Classify head).

Images are pre-processed on the GPU as the reference predictor does (`preprocess.classify_batch`: Ultralytics'
resize + centre crop, or YOLOv5's centre crop + cv2 resize + ImageNet normalisation; the architecture family
decides), run through the engine, and the top-5 classes are kept: the engine's probabilities (Ultralytics'
Classify ends in a softmax), or the softmax of its logits (YOLOv5's Classify returns logits; its predictor
applies the softmax), as the engine header's "model" record says.

detections.json for a classification engine: one entry per image: {"image", "height", "width", "classes" (the
top-5 class indices, best first), "scores" (their probabilities), "names"}; the annotated image shows the top-1.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import NetdefError
from .preprocess import classify_batch, pad_batch

TOPK = 5


def top_classes(scores: Any, k: int = TOPK, logits: bool = False) -> tuple[Any, Any]:
    """(probabilities (B, k), class indices (B, k)), best first, of (B, nc) probabilities or `logits` (softmax
    first); k at most nc."""
    if scores.ndim != 2:
        raise NetdefError(f"classification scores must be (B, classes), got {tuple(scores.shape)}")
    probs = scores.float().softmax(1) if logits else scores.float()
    return probs.topk(min(k, probs.shape[1]), dim=1)


@dataclass
class Classifier:
    """Pre-process (`transforms`: "ultralytics" or "yolov5") -> `infer` -> top-k classes. `infer(batch) ->
    {name: tensor}`; `output` names the (B, nc) scores, `logits` says they need a softmax."""

    infer: Callable[[Any], dict[str, Any]]
    input_hw: tuple[int, int]
    output: str
    transforms: str = "ultralytics"
    logits: bool = False
    topk: int = TOPK
    batch_range: tuple[int, int] = (1, 1)  # (min, max) batch the engine takes
    device: Any = "cpu"
    names: list[str] = field(default_factory=list)

    def __call__(self, images: Sequence[np.ndarray], labels: Sequence[str] | None = None,
                 bgr: bool = False) -> list[dict[str, Any]]:
        """The top-k classes of HxWx3 uint8 images (RGB unless `bgr`), one dict per image (module docstring)."""
        results = []
        for i, ((probs, classes), im) in enumerate(zip(self.classify_tensors(images, bgr), images)):
            cls = [int(c) for c in classes.tolist()]
            results.append({"image": labels[i] if labels is not None else str(i), "height": int(im.shape[0]),
                            "width": int(im.shape[1]), "classes": cls,
                            "scores": [round(float(p), 5) for p in probs.tolist()],
                            "names": [self.class_name(c) for c in cls]})
        return results

    def classify_tensors(self, images: Sequence[np.ndarray], bgr: bool = False) -> list[tuple[Any, Any]]:
        """Per image (probabilities (k,), class indices (k,)) on the host, best first."""
        lo, hi = self.batch_range
        results: list[tuple[Any, Any]] = []
        for start in range(0, len(images), hi):
            chunk = list(images[start:start + hi])
            batch = pad_batch(classify_batch(chunk, self.input_hw, self.transforms, bgr=bgr, device=self.device), lo)
            probs, classes = top_classes(self.infer(batch)[self.output], self.topk, self.logits)
            results.extend(zip(probs[:len(chunk)].cpu(), classes[:len(chunk)].cpu()))
        return results

    def class_name(self, c: int) -> str:
        return self.names[c] if 0 <= c < len(self.names) else str(c)


def engine_classifier(eng: Any, model: dict[str, Any] | None, names: list[str] | None = None,
                      input_hw: tuple[int, int] | None = None) -> Classifier:
    """A Classifier over a loaded `netdef.runtime.Engine` of a classification model: its one (B, nc) output, the
    family's transforms (YOLOv5's for yolov5* architectures, else Ultralytics'), a softmax where the head gives
    logits (`model`, the header's record; without one, as the family's Classify: YOLOv5's gives logits)."""
    import torch

    arch = str(eng.meta.get("arch", {}).get("name", ""))
    yolov5 = arch.startswith("yolov5")
    scores = [(o.name, tuple(o.shape)) for o in eng.outputs if len(o.shape) == 2]
    if len(eng.outputs) != 1 or len(scores) != 1:
        shapes = ", ".join(f"{o.name} {list(o.shape)}" for o in eng.outputs)
        raise NetdefError(f"{eng.path} is a classification engine ({arch or 'no architecture recorded'}) but has "
                          f"outputs {shapes}: expected one (B, classes) output")
    (name, shape), = scores
    if model is not None and shape[1] != model["nc"]:
        raise NetdefError(f"{eng.path}: its header records {model['nc']} classes, its output {name} is {list(shape)}")
    logits = model["head"] == "logits" if model is not None else yolov5
    lo, _, hi = eng.batch_range
    image = eng.inputs[0]

    def infer(batch: Any) -> dict[str, Any]:
        return eng.infer({image.name: batch}, as_numpy=False)

    hw = input_hw or (int(image.shape[2]), int(image.shape[3]))
    return Classifier(infer, hw, name, "yolov5" if yolov5 else "ultralytics",
                      logits, TOPK, (lo, hi), torch.device("cuda", eng.device), names or [])


def draw_top1(image: np.ndarray, det: dict[str, Any]) -> Any:
    """A PIL image: the RGB `image` with its top-1 class and probability written in its top-left corner."""
    from PIL import Image, ImageDraw

    from .detect import _PALETTE  # detection's class colours (that module imports this one)

    im = Image.fromarray(image)
    if det["classes"]:
        draw = ImageDraw.Draw(im)
        label = f"{det['names'][0]} {det['scores'][0]:.2f}"
        draw.rectangle(draw.textbbox((4, 4), label), fill=_PALETTE[det["classes"][0] % len(_PALETTE)])
        draw.text((4, 4), label, fill=(255, 255, 255))
    return im
