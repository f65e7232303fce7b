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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import NetdefError
from .preprocess import classify_batch, pad_batch

TOPK = 5
_PALETTE = [(255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49), (72, 249, 10),
            (146, 204, 23), (61, 219, 134), (26, 147, 52), (0, 212, 187), (44, 153, 168), (0, 194, 255),
            (52, 69, 147), (100, 115, 255), (0, 24, 236), (132, 56, 255), (82, 0, 133), (203, 56, 255),
            (255, 149, 200), (255, 55, 199)]  # class colours of the annotated images (detection's too)


class EngineModel:
    """What `Classifier` and `netdef.tools.detect.Detector` share: both are dataclasses with `names` (class
    names) and `batch_range` ((min, max) batch the engine takes)."""

    names: list[str]
    batch_range: tuple[int, int]

    def class_name(self, c: int) -> str:
        return self.names[c] if 0 <= c < len(self.names) else str(c)

    @staticmethod
    def label(labels: Sequence[str] | None, k: int) -> str:
        """Image k's label in the results: its given label, or its index."""
        return labels[k] if labels is not None else str(k)

    def batches(self, images: Sequence[np.ndarray], prepare: Callable[[list[np.ndarray]], tuple[Any, Any]],
                pad: float = 0.0) -> Iterator[tuple[list[np.ndarray], Any, Any]]:
        """`images` in chunks of at most the largest batch: per chunk (its images, its batch, the rest of what
        `prepare(chunk) -> (batch, rest)` gives), the batch padded with `pad` images up to the smallest batch
        (`pad_batch`: its rows past the chunk's images are padding)."""
        for chunk in self.chunks(images):
            batch, rest = prepare(chunk)
            yield chunk, pad_batch(batch, self.batch_range[0], pad), rest

    def chunks(self, images: Sequence[np.ndarray]) -> Iterator[list[np.ndarray]]:
        """`images` in chunks of at most the largest batch."""
        hi = self.batch_range[1]
        for start in range(0, len(images), hi):
            yield list(images[start:start + hi])


def engine_io(eng: Any) -> tuple[Callable[[Any], dict[str, Any]], tuple[int, int], Any]:
    """A loaded `netdef.runtime.Engine`'s `infer(batch) -> {output name: torch tensor}` (its first input), its
    (min, max) batch and its torch device."""
    import torch

    lo, _, hi = eng.batch_range
    name = eng.inputs[0].name

    def infer(batch: Any) -> dict[str, Any]:
        return eng.infer({name: batch}, as_numpy=False)

    return infer, (lo, hi), torch.device("cuda", eng.device)


def top_classes(scores: Any, k: int = TOPK, logits: bool = False) -> tuple[Any, Any]:
    """(probabilities (B, k), class indices (B, k)), best first, of (B, nc) probabilities or `logits` (softmax
    first); k at most nc."""
    if scores.ndim != 2:
        raise NetdefError(f"classification scores must be (B, classes), got {tuple(scores.shape)}")
    probs = scores.float().softmax(1) if logits else scores.float()
    return probs.topk(min(k, probs.shape[1]), dim=1)


@dataclass
class Classifier(EngineModel):
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
            results.append({"image": self.label(labels, i), "height": int(im.shape[0]),
                            "width": int(im.shape[1]), "classes": cls,
                            "scores": [round(float(p), 5) for p in probs.tolist()],
                            "names": [self.class_name(c) for c in cls]})
        return results

    def classify_tensors(self, images: Sequence[np.ndarray], bgr: bool = False) -> list[tuple[Any, Any]]:
        """Per image (probabilities (k,), class indices (k,)) on the host, best first."""
        def prepare(chunk: list[np.ndarray]) -> tuple[Any, None]:
            return classify_batch(chunk, self.input_hw, self.transforms, bgr=bgr, device=self.device), None

        results: list[tuple[Any, Any]] = []
        for chunk, batch, _ in self.batches(images, prepare):
            probs, classes = top_classes(self.infer(batch)[self.output], self.topk, self.logits)
            results.extend(zip(probs[:len(chunk)].cpu(), classes[:len(chunk)].cpu()))
        return results


def engine_classifier(eng: Any, model: dict[str, Any] | None, names: list[str] | None = None,
                      input_hw: tuple[int, int] | None = None) -> Classifier:
    """A Classifier over a loaded `netdef.runtime.Engine` of a classification model: its one (B, nc) output, the
    family's transforms (YOLOv5's for yolov5* architectures, else Ultralytics'), a softmax where the head gives
    logits (`model`, the header's record; without one, as the family's Classify: YOLOv5's gives logits)."""
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
    infer, batch_range, device = engine_io(eng)
    image = eng.inputs[0].shape
    hw = input_hw or (int(image[2]), int(image[3]))
    return Classifier(infer, hw, name, "yolov5" if yolov5 else "ultralytics",
                      logits, TOPK, batch_range, device, names or [])


def draw_top1(image: np.ndarray, det: dict[str, Any]) -> Any:
    """A PIL image: the RGB `image` with its top-1 class and probability written in its top-left corner."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    if det["classes"]:
        draw = ImageDraw.Draw(im)
        label = f"{det['names'][0]} {det['scores'][0]:.2f}"
        draw.rectangle(draw.textbbox((4, 4), label), fill=_PALETTE[det["classes"][0] % len(_PALETTE)])
        draw.text((4, 4), label, fill=(255, 255, 255))
    return im
