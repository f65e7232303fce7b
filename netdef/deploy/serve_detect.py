"""The images -> detections model `netdef serve` binds next to the raw one for YOLO engines (`NAME_detect`).

A YOLO detection, segmentation or pose engine (one whose outputs `netdef detect` recognises:
`tools.detect.OutputLayout`) is served twice: `NAME` (the engine's tensors) and `NAME_detect`, which runs
`netdef detect`'s own `Detector` (`tools.detect.engine_detector`: letterbox on the GPU, the engine, NMS, masks,
keypoints, boxes mapped back) on encoded images:

- input `image`: BYTES, one encoded image (JPEG, PNG, anything Pillow reads) per batch item; Triton's dynamic
  batcher joins requests, and images of different sizes share one engine batch (each letterboxed alone);
- outputs per image, padded to K = the server's `max_det` (rows past `num_dets` are zero): `num_dets` INT32 (1),
  `boxes` FP32 (K, 4) x1, y1, x2, y2 in the original image's pixels, `scores` FP32 (K), `classes` INT32 (K), and
  `detections` BYTES (1): the JSON record `netdef detect` writes to detections.json for the image ("image" is the
  item's index in its request; masks as COCO RLE, keypoints for pose). The tensors hold the record's values
  (boxes rounded to 0.01 px, scores to 1e-5, as in detections.json).
- Triton request parameters `conf`, `iou`, `max_det` (numbers, or strings such as "0.5") override the server's
  for that request; `max_det` at most K. Plugin engines keep their built-in NMS: conf may only be raised, iou
  must equal the built one (`engine_detector`'s rule).

Errors: an image Pillow cannot read, or a bad parameter, fails its own request with a Triton error naming the
image (`detect_function` answers the other requests of the batch); the server keeps serving.
"""
from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from .. import defaults
from ..errors import NetdefError, OptionError
from .serve import Binding, TensorSpec

SUFFIX = "_detect"
IMAGE = "image"
PARAMETERS = ("conf", "iou", "max_det")


@dataclass(frozen=True)
class DetectSettings:
    """Post-processing settings: conf and iou (None: the detector's defaults, a plugin engine's built-in values)
    and max_det (boxes per image at most; None: the detector's default, a plugin or end-to-end engine's count)."""

    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None

    @property
    def rows(self) -> int:
        """The detections per image the outputs are padded to: max_det, default defaults.MAX_DET."""
        return defaults.MAX_DET if self.max_det is None else self.max_det


def detector_error(meta: Mapping[str, Any]) -> str | None:
    """Why the engine is no YOLO detector netdef detect can drive: its inputs (`tools.detect.input_problem`) or
    its outputs (`OutputLayout.of`'s message) are not a detector's; None where it is."""
    from ..tools.detect import OutputLayout, input_problem

    problem = input_problem([(t["name"], tuple(t["shape"]), t["dtype"]) for t in meta["inputs"]])
    if problem:
        return f"{meta['arch'].get('name')}: {problem}"
    try:
        OutputLayout.of([(o["name"], tuple(o["shape"])) for o in meta["outputs"]], str(meta["arch"].get("name")))
    except NetdefError as e:
        return str(e)
    return None


def detect_binding(raw: Binding, max_det: int) -> Binding:
    """The `NAME_detect` model of an engine served as `raw`: the same batch limit (a non-batching engine's largest
    batch: the detector pads smaller ones) and batcher settings; outputs padded to `max_det`."""
    if max_det < 1:
        raise OptionError(f"--max-det {max_det}: must be >= 1")
    top = raw.max_batch_size or max(p[2] for p in raw.profiles)
    outputs = (TensorSpec("num_dets", "int32", (1,)), TensorSpec("boxes", "float32", (max_det, 4)),
               TensorSpec("scores", "float32", (max_det,)), TensorSpec("classes", "int32", (max_det,)),
               TensorSpec("detections", "bytes", (1,)))
    return Binding(name=raw.name + SUFFIX, inputs=(TensorSpec(IMAGE, "bytes", (1,)),), outputs=outputs,
                   max_batch_size=top, preferred_batch_sizes=raw.preferred_batch_sizes,
                   max_queue_delay_us=raw.max_queue_delay_us, profiles=raw.profiles)


def request_settings(parameters: Mapping[str, Any] | None, base: DetectSettings, limit: int) -> DetectSettings:
    """`base` with a request's parameters conf, iou, max_det applied (checked; max_det at most `limit`, the
    padded output size). Any other parameter is an error."""
    if not parameters:
        return base
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise NetdefError(f"unknown request parameter(s) {unknown}: this model takes {', '.join(PARAMETERS)}")
    found: dict[str, Any] = {}
    for key in ("conf", "iou"):
        if key in parameters:
            value = _number(key, parameters[key], float)
            if not 0.0 <= value <= 1.0:
                raise NetdefError(f"request parameter {key}={parameters[key]!r}: must be 0..1")
            found[key] = value
    if "max_det" in parameters:
        value = _number("max_det", parameters["max_det"], int)
        if not 1 <= value <= limit:
            raise NetdefError(f"request parameter max_det={parameters['max_det']!r}: must be 1..{limit} (the "
                              f"server's --max-det, the size its outputs are padded to)")
        found["max_det"] = value
    return replace(base, **found)


def _number(key: str, value: Any, kind: type) -> Any:
    """A request parameter's value as `kind` (int or float): a number of that kind (an int for float too) or a
    string holding one; bools and other types are errors."""
    number = None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        if not (kind is int and isinstance(value, float)):
            try:
                number = kind(value)
            except ValueError:
                pass
    if number is None or (kind is float and not math.isfinite(number)):
        what = "an integer" if kind is int else "a number"
        raise NetdefError(f"request parameter {key}={value!r}: expected {what}")
    return number


def decode_image(data: Any, where: str) -> np.ndarray:
    """One encoded image (bytes) as HxWx3 uint8 RGB, read as `netdef detect` reads files (`read_image`)."""
    from ..tools.images import read_image

    if not isinstance(data, (bytes, np.bytes_)):
        raise NetdefError(f"{where}: expected the bytes of an encoded image, got {type(data).__name__}")
    try:
        return read_image(_Bytes(bytes(data)))
    except NetdefError as e:
        raise NetdefError(f"{where}: {e}") from None


class _Bytes(io.BytesIO):
    """Image bytes, named in Pillow's messages by their length."""

    def __repr__(self) -> str:
        return f"<{len(self.getbuffer())} bytes>"


def pack(records: Sequence[Mapping[str, Any]], max_det: int) -> dict[str, np.ndarray]:
    """The detect model's outputs for per-image records (`Detector`'s), padded to `max_det` rows."""
    n = len(records)
    out = {"num_dets": np.zeros((n, 1), np.int32), "boxes": np.zeros((n, max_det, 4), np.float32),
           "scores": np.zeros((n, max_det), np.float32), "classes": np.zeros((n, max_det), np.int32),
           "detections": np.empty((n, 1), dtype=object)}
    for i, rec in enumerate(records):
        k = len(rec["boxes"])
        if k > max_det:
            raise NetdefError(f"image {rec['image']}: {k} detections, more than the outputs' {max_det} rows")
        out["num_dets"][i, 0] = k
        if k:
            out["boxes"][i, :k] = rec["boxes"]
            out["scores"][i, :k] = rec["scores"]
            out["classes"][i, :k] = rec["classes"]
        out["detections"][i, 0] = json.dumps(rec).encode()
    return out


def detect_function(detector: Callable[[DetectSettings], Any], base: DetectSettings
                    ) -> Callable[[list[Any]], list[dict[str, np.ndarray] | NetdefError]]:
    """The function one `NAME_detect` instance runs on the requests of one batch (`stub_model.Request`s: inputs by
    name, `.parameters`): per request its outputs (`pack`, padded to `base.rows`), or the NetdefError its
    images or parameters raised ("this request, image 0: ..."; the other requests are answered).
    `detector(settings)` gives the `Detector` for a request's settings; requests with the same settings run
    together (images of all of them in one call)."""
    max_det = base.rows

    def read(request: Any) -> tuple[DetectSettings, list[np.ndarray]]:
        """The request's settings and decoded images; a NetdefError naming what is wrong with either or both."""
        errors, settings, images = [], base, []
        try:
            settings = request_settings(getattr(request, "parameters", None), base, max_det)
        except NetdefError as e:
            errors.append(f"this request: {e}")
        try:
            items = np.asarray(request[IMAGE]).reshape(-1)
            images = [decode_image(x, f"this request, image {i}") for i, x in enumerate(items)]
        except NetdefError as e:
            errors.append(str(e))
        if errors:
            raise NetdefError("; ".join(errors))
        return settings, images

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray] | NetdefError]:
        answers: list[Any] = []
        read_ok: dict[int, tuple[DetectSettings, list[np.ndarray]]] = {}
        for r, request in enumerate(requests):
            try:
                read_ok[r] = read(request)
                answers.append(None)
            except NetdefError as e:
                answers.append(e)
        for s in dict.fromkeys(settings for settings, _ in read_ok.values()):
            members = [r for r, (rs, _) in read_ok.items() if rs == s]
            flat = [im for r in members for im in read_ok[r][1]]
            labels = [str(i) for r in members for i in range(len(read_ok[r][1]))]
            found = iter(detector(s)(flat, labels))
            for r in members:
                answers[r] = pack([next(found) for _ in read_ok[r][1]], max_det)
        return answers

    return infer


def engine_detectors(engine: Any, base: DetectSettings, names: Sequence[str] | None = None,
                     cache: int = 16, *, names_from: str | os.PathLike | None = None
                     ) -> Callable[[DetectSettings], Any]:
    """settings -> `engine_detector(engine, ...)`, the last `cache` kept; the one for `base` made now, so bad
    server settings fail before serving. `names`, `names_from` as `engine_detector` takes them."""
    from ..tools import detect

    @lru_cache(maxsize=cache)
    def make(s: DetectSettings) -> Any:
        try:
            return detect.engine_detector(engine, s.conf, s.iou, s.max_det, list(names or []) or None,
                                          names_from=names_from)
        except NetdefError as e:
            if s == base:
                raise
            raise NetdefError(f"request parameters conf={s.conf}, iou={s.iou}, max_det={s.max_det}: {e}") from None

    make(base)
    return make
