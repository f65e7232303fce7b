"""`netdef detect`: object detection, instance segmentation, pose and classification with a YOLO engine, pre- and
post-processing on the GPU.

Images are read with Pillow, letterboxed on the GPU (`netdef.preprocess`), run through the engine, and
post-processed: engines built with the decode+NMS plugin already give (num_dets, boxes, scores, classes);
engines with the plain (B, N, 5+nc) output get YOLOv5's filtering + torchvision's batched_nms in torch, and
the anchor-free YOLOv8/YOLO11 output (B, 4+nc, N) the same without objectness (as Ultralytics' NMS).

The task comes from the engine header's "model" record (the head wrote it at build time: detect, segment, pose
with its kpt_shape, end2end, classify); classification engines go to `netdef.tools.classify` (top-5 classes),
the others' outputs must then fit the recorded task. Engines without the record (older files, raw plans with a
sidecar) are recognised as before: a `-cls` architecture is a classifier, and the task follows from the outputs
(`OutputLayout.of`): a second, 4-D output (B, nm, H/4, W/4) is a segmentation
head's prototypes (the prediction's last nm channels are mask coefficients; plugin engines: `mask_coefs`
(B, K, nm) and `protos`); a plugin engine's `keypoints` (B, K, nkpt, ndim) make it a pose engine. A plain pose
head's (B, 4 + nc + nkpt*ndim, N) looks like a detection output: there the architecture (`-pose`) and its
`kpt_shape` (from the YAML the engine header records, or given) tell it. Masks are assembled as Ultralytics 8.4's
predictor does (`netdef.tools.masks.process_masks`, then `preprocess.scale_masks`; a detection whose mask is empty
is dropped, as there), keypoints mapped like boxes. Boxes are mapped back to the original images;
`detections.json` and annotated images are written (never over an input, nor over a file in the output folder that
no earlier `netdef detect` wrote: `check_outputs`).

detections.json: a list, one entry per image: {"image", "height", "width", "boxes" [[x1, y1, x2, y2], ...]
(original pixels), "scores", "classes", "names"}; segmentation adds "masks": one COCO compressed RLE
{"size": [h, w], "counts": str} per detection (pycocotools' `mask.decode` reads it; `netdef.tools.masks`), pose
adds "keypoints": per detection [[x, y, visibility], ...] (original pixels; [x, y] for 2-D keypoints).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import defaults
from ..class_names import engine_names
from ..defaults import IMAGE_SUFFIXES
from ..errors import NetdefError, OptionError
from ..fileio import atomic_write, check_output, json_kind
from .classify import _PALETTE, Classifier, EngineModel, draw_top1, engine_classifier, engine_io
from .images import open_image, read_image
from .masks import process_masks, rle_decode, rle_encode
from .preprocess import letterbox, pad_to, scale_boxes, scale_keypoints, scale_masks

PLUGIN_OUTPUTS = ("num_dets", "boxes", "scores", "classes")
PLUGIN_SEGMENT, PLUGIN_POSE = ("mask_coefs", "protos"), ("keypoints",)  # the plugin head's task outputs
DETECTIONS_JSON = "detections.json"
DETECTIONS_FILE = json_kind("a netdef detections.json",
                            lambda d: isinstance(d, list) and all(isinstance(r, dict) and "image" in r for r in d),
                            starts=rb'\s*\[\s*\{\s*"image"')
DEFAULT_CONF, DEFAULT_IOU, DEFAULT_MAX_DET = 0.25, 0.45, 300
ANNOTATED_BY = "netdef detect"  # in each annotated image (JPEG comment, PNG Software text): a later run may replace it
MAX_WH = 7680  # YOLOv5's class offset for batched NMS (larger than any box coordinate)


# ---------------------------------------------------------------- inputs

def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files from files and folders (folders: their image files, sorted, not recursive)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not files:
                raise NetdefError(f"{p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif p.is_file():
            found.append(p)
        else:
            raise NetdefError(f"no such image or folder: {p}")
    if not found:
        raise NetdefError("no images given")
    return found


# ---------------------------------------------------------------- YOLOv5 post-processing in torch

def decode_predictions(feats: Sequence[Any], anchors_px: Any, strides: Sequence[int]) -> Any:
    """YOLOv5 Detect inference decode in torch: raw (B, na*(5+nc), H, W) maps -> (B, N, 5+nc) xywh pixels."""
    import torch

    anchors = torch.as_tensor(np.asarray(anchors_px, np.float32))
    out = []
    for i, x in enumerate(feats):
        x = x.float()
        b, _, h, w = x.shape
        na = anchors.shape[1]
        y = x.view(b, na, -1, h, w).permute(0, 1, 3, 4, 2).sigmoid()
        yv, xv = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32),
                                torch.arange(w, device=x.device, dtype=torch.float32), indexing="ij")
        grid = torch.stack((xv, yv), 2).view(1, 1, h, w, 2) - 0.5
        anchor_grid = anchors[i].to(x.device).view(1, na, 1, 1, 2)
        xy, wh, conf = y.split((2, 2, y.shape[-1] - 4), 4)
        xy = (xy * 2 + grid) * float(strides[i])
        wh = (wh * 2) ** 2 * anchor_grid
        out.append(torch.cat((xy, wh, conf), 4).view(b, -1, y.shape[-1]))
    return torch.cat(out, 1)


def non_max_suppression(pred: Any, conf_thres: float = DEFAULT_CONF, iou_thres: float = DEFAULT_IOU,
                        max_det: int = DEFAULT_MAX_DET, max_nms: int = defaults.MAX_NMS,
                        objectness: bool = True) -> list[tuple[Any, Any, Any]]:
    """YOLOv5's non_max_suppression (single best class per box) on (B, N, 5+nc) predictions; `objectness=False`:
    the anchor-free heads' (YOLOv8/YOLO11) predictions (B, 4+nc, N), class scores without objectness.

    Keeps boxes with obj > conf_thres and obj*cls > conf_thres (anchor-free: cls > conf_thres), the `max_nms`
    best per image, class-aware torchvision NMS, then the best `max_det`. Returns per image (boxes (n, 4)
    x1y1x2y2, scores (n,), classes (n,)).
    """
    return [kept[:3] for kept in nms_with_extras(pred, 0, conf_thres, iou_thres, max_det, max_nms, objectness)]


def nms_with_extras(pred: Any, extra: int, conf_thres: float = DEFAULT_CONF, iou_thres: float = DEFAULT_IOU,
                    max_det: int = DEFAULT_MAX_DET, max_nms: int = defaults.MAX_NMS,
                    objectness: bool = True) -> list[tuple[Any, Any, Any, Any]]:
    """`non_max_suppression` on predictions whose last `extra` channels are not class scores (mask coefficients,
    keypoints): per image (boxes, scores, classes, extras (n, extra)), the extras of the kept rows (with
    objectness: times it, as YOLOv5's NMS leaves its mask coefficients)."""
    import torch

    try:
        from torchvision.ops import batched_nms
    except ImportError:
        raise NetdefError("engines without the NMS plugin need torchvision for NMS: pip install torchvision") from None
    results = []
    for x in (pred if objectness else pred.transpose(1, 2)).float():
        end = x.shape[1] - extra  # the class scores end here
        if objectness:
            x = x[x[:, 4] > conf_thres]
            cls_conf = x[:, 5:end] * x[:, 4:5]
        else:
            cls_conf = x[:, 4:end]
        conf, j = cls_conf.max(1)
        keep = conf > conf_thres
        x, conf, j = x[keep], conf[keep], j[keep]
        order = conf.argsort(descending=True)[:max_nms]
        x, conf, j = x[order], conf[order], j[order]
        boxes = torch.cat((x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2), 1)
        i = batched_nms(boxes, conf, j, iou_thres)[:max_det]
        extras = x[i, end:] * x[i, 4:5] if objectness else x[i, end:]
        results.append((boxes[i], conf[i], j[i].int(), extras))
    return results


# ---------------------------------------------------------------- the detector

@dataclass
class OutputLayout:
    """Which engine outputs hold the detections: the plugin's four, one raw YOLOv5 prediction (B, N, 5+nc), or
    one anchor-free YOLOv8/YOLO11 prediction (B, 4+nc, N) (channels first: fewer rows than positions); and the
    task: "detect", "segment" (prototypes, `extra` = nm mask coefficients) or "pose" (`kpt_shape`, `extra` =
    nkpt*ndim keypoint channels of a plain prediction)."""

    kind: str  # "plugin", "raw", "anchor_free" or "end_to_end"
    names: dict[str, str]  # role -> output name: plugin: PLUGIN_OUTPUTS (+ mask_coefs, protos | keypoints);
    #                        others: "pred" (+ "protos")
    task: str = "detect"
    extra: int = 0  # channels after the class scores of a plain prediction
    kpt_shape: tuple[int, int] | None = None

    @staticmethod
    def of(outputs: Sequence[tuple[str, tuple[int, ...]]], where: str = "the engine",
           end_to_end: bool = False, kpt_shape: Sequence[int] | None = None) -> "OutputLayout":
        """The layout of `outputs` (name, shape). `end_to_end`: the engine ends in YOLO26's top-k head, whose
        (B, K, 6) = x1, y1, x2, y2, score, class detections need no NMS (by shape alone it would pass for a
        one-class YOLOv5 prediction). `kpt_shape` (keypoints, dims): a plain pose head's prediction, which by
        shape alone passes for a detection output with more classes."""
        shapes = ", ".join(f"{n} {list(s)}" for n, s in outputs)
        if end_to_end:  # rows x1, y1, x2, y2, score, class [, mask coefficients | keypoints]
            protos = [(n, s) for n, s in outputs if len(s) == 4]
            layout = OutputLayout("end_to_end", {})
            if protos:
                layout.names["protos"], layout.task, layout.extra = protos[0][0], "segment", int(protos[0][1][1])
            elif kpt_shape is not None:
                layout.task, layout.kpt_shape = "pose", (int(kpt_shape[0]), int(kpt_shape[1]))
                layout.extra = layout.kpt_shape[0] * layout.kpt_shape[1]
            hits = [n for n, s in outputs if len(s) == 3 and s[-1] == 6 + layout.extra]
            if len(hits) != 1 or len(protos) > 1:
                raise NetdefError(f"{where}: expected one end-to-end output (B, K, {6 + layout.extra})"
                                  f"{' and the prototypes' if protos else ''}, got {shapes}")
            layout.names["pred"] = hits[0]
            return layout
        by_role = _roles(outputs, PLUGIN_OUTPUTS + PLUGIN_SEGMENT + PLUGIN_POSE)
        if all(r in by_role for r in PLUGIN_OUTPUTS):
            layout = _plugin_layout(by_role, dict(outputs), where)
            if kpt_shape is not None and layout.kpt_shape != tuple(kpt_shape):
                raise NetdefError(f"{where}: kpt_shape {list(kpt_shape)} given, but the engine's keypoints are "
                                  f"{list(layout.kpt_shape or ()) or 'none'}")
            return layout
        # a prediction (B, rows, cols): channels >= 5 on one axis, positions on the other (-1 where the input
        # size is chosen at run time: the positions' axis)
        raw = [(n, s) for n, s in outputs if len(s) == 3 and max(s[1:]) >= 5 and (min(s[1:]) >= 5 or -1 in s[1:])]
        protos = [(n, s) for n, s in outputs if len(s) == 4]
        if len(raw) == 1 and len(protos) <= 1:
            name, shape = raw[0]
            positions_last = shape[2] == -1 or (shape[1] != -1 and shape[1] < shape[2])
            kind = "anchor_free" if positions_last else "raw"
            channels = shape[1] if kind == "anchor_free" else shape[2]
            first = 4 if kind == "anchor_free" else 5  # where the class scores start
            layout = OutputLayout(kind, {"pred": name})
            if protos:
                layout.names["protos"] = protos[0][0]
                layout.task, layout.extra = "segment", int(protos[0][1][1])
            elif kpt_shape is not None:
                layout.task, layout.kpt_shape = "pose", (int(kpt_shape[0]), int(kpt_shape[1]))
                layout.extra = layout.kpt_shape[0] * layout.kpt_shape[1]
                if kind != "anchor_free":
                    raise NetdefError(f"{where}: a pose engine needs the anchor-free (B, 4 + nc + nkpt*ndim, N) "
                                      f"prediction, got {name} {list(shape)}")
            if channels - first - layout.extra < 1:
                what = f"{layout.extra} mask coefficients" if protos else f"kpt_shape {list(layout.kpt_shape or ())}"
                raise NetdefError(f"{where}: {name} {list(shape)} has {channels} channels per box: too few for "
                                  f"{first} box values, a class and {what}")
            return layout
        raise NetdefError(f"{where} has outputs {shapes}: expected either the NMS plugin's num_dets/boxes/scores/"
                          "classes or one YOLO prediction tensor: YOLOv5's (B, N, 5+nc) or YOLOv8/YOLO11's "
                          "(B, 4+nc, N) (segmentation: and the prototypes (B, nm, H/4, W/4))")


def _roles(outputs: Sequence[tuple[str, tuple[int, ...]]], roles: Sequence[str]) -> dict[str, str]:
    """role -> the one output named `role` or `.../role`."""
    found = {}
    for role in roles:
        hits = [n for n, _ in outputs if n == role or n.endswith("/" + role)]
        if len(hits) == 1:
            found[role] = hits[0]
    return found


def _plugin_layout(by_role: dict[str, str], shapes: dict[str, tuple[int, ...]], where: str) -> OutputLayout:
    """A plugin engine's layout; its task from the extra outputs (mask_coefs + protos, or keypoints)."""
    layout = OutputLayout("plugin", by_role)
    k = shapes[by_role["scores"]][1]
    seg = [r for r in PLUGIN_SEGMENT if r in by_role]
    if seg and "keypoints" in by_role:
        raise NetdefError(f"{where}: both mask outputs and keypoints: expected one task's outputs")
    if seg:
        if len(seg) != 2:
            raise NetdefError(f"{where}: the plugin's {seg[0]} output without "
                              f"{[r for r in PLUGIN_SEGMENT if r not in seg][0]}: a segmentation engine has both")
        coefs, protos = shapes[by_role["mask_coefs"]], shapes[by_role["protos"]]
        if len(coefs) != 3 or len(protos) != 4 or coefs[1] != k or coefs[2] != protos[1]:
            raise NetdefError(f"{where}: mask_coefs {list(coefs)} and protos {list(protos)} do not fit: expected "
                              f"(B, {k}, nm) and (B, nm, H/4, W/4)")
        layout.task = "segment"
    if "keypoints" in by_role:
        kpts = shapes[by_role["keypoints"]]
        if len(kpts) != 4 or kpts[1] != k or kpts[3] not in (2, 3):
            raise NetdefError(f"{where}: keypoints {list(kpts)}: expected (B, {k}, nkpt, 2 or 3)")
        layout.task, layout.kpt_shape = "pose", (int(kpts[2]), int(kpts[3]))
    return layout


@dataclass
class Detections:
    """One image's detections: boxes (n, 4) x1y1x2y2, scores (n,), classes (n,); segmentation: masks (n, h, w) bool
    (after `Detector.detect_tensors`: on the original image), pose: keypoints (n, nkpt, ndim). Iterates as
    (boxes, scores, classes), so detection code unpacks it like a triple."""

    boxes: Any
    scores: Any
    classes: Any
    masks: Any = None
    keypoints: Any = None
    coefs: Any = None  # before mask assembly: (n, nm) mask coefficients and the image's (nm, h, w) prototypes
    protos: Any = None

    def __iter__(self) -> Any:
        return iter((self.boxes, self.scores, self.classes))


@dataclass
class Detector(EngineModel):
    """Letterbox -> `infer` -> post-process -> boxes on the original images. `infer(batch) -> {name: tensor}`."""

    infer: Callable[[Any], dict[str, Any]]
    input_hw: tuple[int, int]
    layout: OutputLayout
    conf: float = DEFAULT_CONF
    iou: float = DEFAULT_IOU
    max_det: int = DEFAULT_MAX_DET
    batch_range: tuple[int, int] = (1, 1)  # (min, max) batch the engine takes
    device: Any = "cpu"
    names: list[str] = field(default_factory=list)
    rect: bool = False  # letterbox each batch to the smallest `stride` multiple that holds it (dynamic engines)
    stride: int = 32
    min_hw: tuple[int, int] = (1, 1)  # rect: the smallest size the engine takes (grey added bottom and right)
    graphs: Any = None  # a detect_graphs.DetectGraphs: letterbox, engine and output copies as one CUDA graph
    letterbox_kernel: bool = False  # letterbox with netdef's CUDA kernel (preprocess.letterbox's `kernel`)

    def __call__(self, images: Sequence[np.ndarray], labels: Sequence[str] | None = None,
                 bgr: bool = False) -> list[dict[str, Any]]:
        """Detections for HxWx3 uint8 images (RGB unless `bgr`), one dict per image (module docstring)."""
        results = []
        for k, (det, im) in enumerate(zip(self.detect_tensors(images, bgr), images)):
            results.append(self._record(self.label(labels, k), im.shape, det))
        return results

    def detect_tensors(self, images: Sequence[np.ndarray], bgr: bool = False) -> list[Detections]:
        """Per image its Detections on the original image: on the device for raw predictions and masks, on the
        host for the plugin's boxes, scores, classes and keypoints (and, with CUDA graphs, YOLO26's rows)."""
        def prepare(chunk: list[np.ndarray]) -> tuple[Any, list[Any]]:
            batch, ratio_pads = letterbox(chunk, self.input_hw, self.stride, self.rect, bgr=bgr, device=self.device,
                                          kernel=self.letterbox_kernel)
            return (pad_to(batch, self.min_hw, self.stride, 114 / 255.0) if self.rect else batch), ratio_pads

        results: list[Detections] = []
        if self.graphs is not None:
            for chunk in self.chunks(images):
                with self.graphs.lock:  # the outputs are the graph's buffers until read
                    outs, input_hw, ratio_pads = self.graphs(chunk, bgr, self.letterbox_kernel)
                    results += self._finish(outs, input_hw, ratio_pads, chunk)
            return results
        for chunk, batch, ratio_pads in self.batches(images, prepare, 114 / 255.0):  # grey images up to the minimum
            results += self._finish(self.infer(batch), tuple(batch.shape[2:]), ratio_pads, chunk)
        return results

    def _finish(self, outs: dict[str, Any], input_hw: tuple[int, int], ratio_pads: list[Any],
                chunk: list[np.ndarray]) -> list[Detections]:
        """The chunk's Detections on its original images from the engine's outputs for it."""
        per_image = self.postprocess(outs)[:len(chunk)]
        return [self._to_original(det, input_hw, rp, im.shape) for det, rp, im in zip(per_image, ratio_pads, chunk)]

    @staticmethod
    def _to_original(det: Detections, input_hw: tuple[int, int], rp: Any, shape: tuple[int, ...]) -> Detections:
        """Masks assembled on the letterboxed input (empty ones dropped, as Ultralytics' predictor does), then
        boxes, masks and keypoints mapped to the original image."""
        masks = None
        if det.protos is not None:
            lb_masks = process_masks(det.protos, det.coefs, det.boxes, input_hw)
            keep = lb_masks.flatten(1).amax(1) > 0
            if not bool(keep.all()):
                det = _select(det, keep)
                lb_masks = lb_masks[keep]
            masks = scale_masks(lb_masks, rp, shape)
        return Detections(scale_boxes(det.boxes, rp, shape), det.scores, det.classes, masks=masks,
                          keypoints=None if det.keypoints is None else scale_keypoints(det.keypoints, rp, shape))

    def postprocess(self, outs: dict[str, Any]) -> list[Detections]:
        """Per image its Detections on the letterboxed input (segmentation: coefficients and prototypes, masks not
        yet assembled): NMS on the device for raw predictions; the plugin's fixed-size outputs are copied to the
        host once and sliced there (no synchronisation per image; mask coefficients stay on the device)."""
        lay = self.layout
        if lay.kind in ("raw", "anchor_free"):
            kept = nms_with_extras(outs[lay.names["pred"]], lay.extra, self.conf, self.iou, self.max_det,
                                   objectness=lay.kind == "raw")
            protos = outs[lay.names["protos"]] if lay.task == "segment" else None
            return [Detections(b, s, c, coefs=e if protos is not None else None,
                               protos=protos[i] if protos is not None else None,
                               keypoints=e.view(len(e), *lay.kpt_shape) if lay.task == "pose" else None)
                    for i, (b, s, c, e) in enumerate(kept)]
        if lay.kind == "end_to_end":  # sorted top-k rows: keep those above the score threshold
            rows = outs[lay.names["pred"]].float()
            protos = outs[lay.names["protos"]] if lay.task == "segment" else None
            per_image = []
            for i, r in enumerate(rows):
                keep = (r[:, 4] > self.conf).nonzero().flatten()[:self.max_det]
                det = Detections(r[keep, :4], r[keep, 4], r[keep, 5].int())
                if protos is not None:  # the rows may have been copied to the host (CUDA graphs)
                    det.coefs, det.protos = r[keep, 6:].to(protos.device), protos[i]
                elif lay.task == "pose":
                    det.keypoints = r[keep, 6:].reshape(len(keep), *lay.kpt_shape)
                per_image.append(det)
            return per_image
        import torch

        n = lay.names  # sliced in numpy: a few microseconds per image where torch's CPU operations take tens
        num, boxes, scores, classes = (outs[n[r]].cpu().numpy() for r in PLUGIN_OUTPUTS)
        kpts = outs[n["keypoints"]].cpu().numpy() if lay.task == "pose" else None
        per_image = []
        for b, k in enumerate(num.reshape(num.shape[0], -1)[:, 0].tolist()):
            s = scores[b, :k].astype(np.float32)
            keep = np.flatnonzero(s > self.conf)[:self.max_det]
            det = Detections(*(torch.from_numpy(v) for v in (boxes[b, keep].astype(np.float32), s[keep],
                                                              classes[b, keep].astype(np.int32))))
            if kpts is not None:
                det.keypoints = torch.from_numpy(kpts[b, keep].astype(np.float32))
            if lay.task == "segment":
                coefs = outs[n["mask_coefs"]]
                det.coefs = coefs[b, torch.from_numpy(keep).to(coefs.device)].float()
                det.protos = outs[n["protos"]][b]
            per_image.append(det)
        return per_image

    def _record(self, label: str, shape: tuple[int, ...], det: Detections) -> dict[str, Any]:
        cls = [int(c) for c in det.classes.cpu().tolist()]
        rec = {"image": label, "height": int(shape[0]), "width": int(shape[1]),
               "boxes": [[round(float(v), 2) for v in b] for b in det.boxes.cpu().tolist()],
               "scores": [round(float(s), 5) for s in det.scores.cpu().tolist()],
               "classes": cls, "names": [self.class_name(c) for c in cls]}
        if det.masks is not None:
            rec["masks"] = rle_encode(det.masks)
        if det.keypoints is not None:
            rec["keypoints"] = [[[round(float(v), 2) for v in p[:2]] + [round(float(v), 4) for v in p[2:]]
                                 for p in kp] for kp in det.keypoints.cpu().tolist()]
        return rec


def _select(det: Detections, keep: Any) -> Detections:
    """The detections where `keep` (a bool tensor) is set."""
    def pick(t: Any) -> Any:
        return None if t is None else t[keep.to(t.device)]

    return Detections(pick(det.boxes), pick(det.scores), pick(det.classes), keypoints=pick(det.keypoints),
                      coefs=pick(det.coefs), protos=det.protos)


def input_problem(inputs: Sequence[tuple[str, tuple[int, ...], str]]) -> str | None:
    """Why an engine of these inputs (name, shape, dtype) is no image model netdef detect can feed; None where it
    is: one (B, 3, H, W) floating input (netdef detect letterboxes and scales the images on the GPU)."""
    if len(inputs) != 1:
        return f"it has {len(inputs)} inputs; detection needs one image input"
    name, shape, dtype = inputs[0]
    if len(shape) != 4 or shape[1] != 3 or (shape[2] < 1) != (shape[3] < 1):
        return f"input {name} {list(shape)} is not a (B, 3, H, W) image"
    if dtype == "uint8":
        return (f"input {name} is uint8; netdef detect letterboxes and scales the images on the GPU and feeds "
                "floats: build the engine without --input-dtype uint8")
    return None


def engine_detector(engine: Any, conf: float | None = None, iou: float | None = None,
                    max_det: int | None = None, names: list[str] | None = None, *,
                    device: int | None = None, kpt_shape: Sequence[int] | None = None,
                    input_hw: tuple[int, int] | None = None, rect: bool = False,
                    names_from: str | os.PathLike | None = None,
                    letterbox_kernel: bool = False) -> Detector | Classifier:
    """A Detector over a netdef engine (a path, loaded on CUDA device `device`, default the current one; or a
    `netdef.runtime.Engine`), on the engine's GPU; for a classification engine a `Classifier` (called the same
    way; conf, iou, kpt_shape and max_det do not apply to it: it keeps the top 5).

    Plugin engines have their NMS thresholds built in: `conf` may only raise the score threshold and `iou`
    must equal the built one (rebuild with --set conf_thres=/iou_thres= otherwise); None keeps them. `max_det`:
    boxes per image at most, default DEFAULT_MAX_DET; engines with NMS or top-k built in keep at most (and by
    default) the count they were built with.
    `kpt_shape` (keypoints, dims): a plain pose engine's; default the `kpt_shape` its header's model record holds
    (the weights'; one given must equal it), for older engines that of the architecture YAML its header records.
    An engine built with a dynamic input size letterboxes to `input_hw` (default: its first profile's OPT size);
    `rect` (such engines only) to the smallest multiple of the model's largest stride that holds each batch at
    that size, as Ultralytics' rectangular inference.
    `names` (read from the file `names_from`, named in errors) label the classes, default the names the engine
    header records (`class_names.engine_names`; neither: class indices); one per class of the recorded model.
    `letterbox_kernel`: letterbox with netdef's fused CUDA kernel (written to give the same pixels; compiled with
    nvcc when the detector is made) instead of torch operations; detection engines only.
    """
    from ..runtime import Engine

    if not isinstance(engine, Engine) and (described := Engine.described(engine)) is not None:
        # what the header tells (task, input size, stride) checked before loading: no GPU needed for a mistake
        engine_detector(described, conf, iou, max_det, names, kpt_shape=kpt_shape, input_hw=input_hw, rect=rect,
                        names_from=names_from)
    eng = engine if isinstance(engine, Engine) else Engine(engine, device=device)
    problem = input_problem([(t.name, tuple(t.shape), t.dtype) for t in eng.inputs])
    if problem:
        raise NetdefError(f"{eng.path}: {problem}")
    arch = str(eng.meta.get("arch", {}).get("name", ""))
    model = eng.meta.get("model")  # engine_file checked it (optional: older engines lack it)
    names = engine_names(names, eng.meta, eng.path, names_from)
    if (model["task"] if model else "classify" if arch.endswith("-cls") else None) == "classify":
        given = [n for n, v in (("conf", conf), ("iou", iou), ("kpt_shape", kpt_shape), ("max_det", max_det))
                 if v is not None]
        if given:
            raise NetdefError(f"{eng.path} is a classification engine: {', '.join(given)} "
                              f"appl{'ies' if len(given) == 1 else 'y'} to detection engines only")
        for flag, value in (("--rect", rect), ("--letterbox-kernel", letterbox_kernel)):
            if value:
                raise NetdefError(f"{eng.path} is a classification engine: {flag} applies to detection engines only")
        return engine_classifier(eng, model, names, _target_size(eng, model, input_hw, False)[0])
    hw, stride = _target_size(eng, model, input_hw, rect)
    outputs = [(o.name, tuple(o.shape)) for o in eng.outputs]
    if model:
        kpt_shape = _recorded_kpt_shape(model, kpt_shape, str(eng.path))
        end_to_end = model["task"] == "end2end"
    else:
        head = eng.meta.get("options", {}).get("params", {}).get("head", "decode")
        end_to_end = arch.startswith("yolo26") and head != "one2many"
        if kpt_shape is None and arch.endswith("-pose") and "keypoints" not in _roles(outputs, PLUGIN_POSE):
            kpt_shape = _arch_kpt_shape(eng.meta, str(eng.path))
    layout = OutputLayout.of(outputs, str(eng.path), end_to_end=end_to_end, kpt_shape=kpt_shape)
    recorded = model and (model["task"] if not end_to_end else "segment" if "nm" in model else
                          "pose" if "kpt_shape" in model else "detect")
    if model and layout.task != recorded:
        raise NetdefError(f"{eng.path}: its header records a {model['task']} model, but its outputs are a "
                          f"{layout.task} engine's: " + ", ".join(f"{n} {list(s)}" for n, s in outputs))
    if layout.kind == "plugin":
        conf, iou = _plugin_thresholds(eng.meta, str(eng.path), conf, iou)
    max_det = _max_det(layout, dict(outputs), str(eng.path), max_det)
    infer, batch_range, device = engine_io(eng)
    if letterbox_kernel:  # compiled now: a missing toolchain is heard of before any image is read
        from .letterbox_cuda import kernel_library

        kernel_library(device)
    ranges = eng.hw_ranges or [((1, 1),)]  # (min, opt, max) (H, W) per profile; static engines: no ranges
    min_hw = (min(r[0][0] for r in ranges), min(r[0][1] for r in ranges))
    graphs = None
    if eng.cuda_graph:  # the whole pipeline in one graph; fixed-size outputs copied to the host inside it
        from .detect_graphs import DetectGraphs

        to_host = [layout.names[r] for r in (*PLUGIN_OUTPUTS, "keypoints") if r in layout.names] \
            if layout.kind == "plugin" else [layout.names["pred"]] if layout.kind == "end_to_end" else []
        graphs = DetectGraphs(eng, device, hw, stride=stride, rect=rect, min_hw=min_hw, min_batch=batch_range[0],
                              to_host=to_host)
    if iou is None:  # YOLOv8/YOLO11 as Ultralytics' predictor, YOLOv5 as its detect.py (plugins: built in)
        iou = defaults.IOU_THRES_ANCHOR_FREE if layout.kind == "anchor_free" else DEFAULT_IOU
    return Detector(infer, hw, layout, DEFAULT_CONF if conf is None else conf, iou,
                    max_det, batch_range, device, names, rect, stride, min_hw, graphs, letterbox_kernel)


def _target_size(eng: Any, model: dict[str, Any] | None, input_hw: tuple[int, int] | None,
                 rect: bool) -> tuple[tuple[int, int], int]:
    """The letterbox size and stride: a static engine's own size (`input_hw`, if given, must equal it; no rect);
    a dynamic one's `input_hw` or its first profile's OPT, and the model's recorded largest stride."""
    if not eng.dynamic_hw:
        shape = eng.inputs[0].shape
        static = (int(shape[2]), int(shape[3]))
        if rect:
            raise OptionError(f"--rect needs an engine built with a dynamic input size (--input-shape MIN:OPT:MAX); "
                              f"{eng.path} takes {static[0]}x{static[1]} only")
        if input_hw is not None and tuple(input_hw) != static:
            raise OptionError(f"--input-shape {input_hw[0]}x{input_hw[1]}: {eng.path} takes {static[0]}x{static[1]} "
                              f"only")
        return static, 32
    hw = tuple(input_hw) if input_hw is not None else tuple(eng.hw_ranges[0][1])
    stride = (model or {}).get("stride")
    if stride and any(int(d) % int(stride) for d in hw):
        raise OptionError(f"--input-shape {hw[0]}x{hw[1]}: {eng.path} takes heights and widths that are multiples of "
                          f"its model's stride {stride}")
    if rect and stride is None:
        raise NetdefError(f"{eng.path}: --rect needs the model's stride, which its header does not record (built "
                          f"before netdef recorded it): rebuild the engine")
    return (int(hw[0]), int(hw[1])), int(stride or 32)


def _recorded_kpt_shape(model: dict[str, Any], given: Sequence[int] | None, where: str) -> tuple[int, int] | None:
    """The kpt_shape to read a recorded model's outputs with: a pose model's own, YOLO26's pose rows' (one given
    must equal it)."""
    if "kpt_shape" not in model:
        if given is not None:
            raise NetdefError(f"{where}: kpt_shape {list(given)} given, but it is a {model['task']} engine (its "
                              f"header's record), not a pose engine")
        return None
    recorded = (int(model["kpt_shape"][0]), int(model["kpt_shape"][1]))
    if given is not None and tuple(given) != recorded:
        raise NetdefError(f"{where}: kpt_shape {list(given)} given, but the engine's header records {list(recorded)}")
    return recorded


def _arch_kpt_shape(meta: dict[str, Any], where: str) -> tuple[int, int]:
    """A plain pose engine's kpt_shape: that of the architecture its header records (`netdef.refit.spec_of`: by
    name or path, relative to the build's folder, and only if unchanged since the build: the same sha256)."""
    from ..refit import spec_of

    arch = meta.get("arch", {})
    hint = "give it (--kpt-shape 17,3, or kpt_shape= in Python)"
    try:
        spec = spec_of({"arch": arch})
    except NetdefError:
        raise NetdefError(f"{where} is a plain pose engine, and the architecture it was built from "
                          f"({arch.get('name') or '?'}, {arch.get('path') or 'no path recorded'}) is not here "
                          f"unchanged to give its kpt_shape: {hint}") from None
    value = spec.params.get("kpt_shape")
    if (not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(v, int) for v in value)
            or value[0] < 1 or value[1] not in (2, 3)):
        raise NetdefError(f"{where}: its architecture {spec.source} has kpt_shape {value!r}, expected [keypoints, "
                          f"2 or 3]: {hint}")
    return int(value[0]), int(value[1])


def _max_det(layout: OutputLayout, shapes: Mapping[str, tuple[int, ...]], where: str, max_det: int | None) -> int:
    """The boxes per image a detector keeps: `max_det` (default DEFAULT_MAX_DET), or for an engine whose NMS or
    top-k is built in (a plugin's, YOLO26's end-to-end head) the count it was built to keep (default); more than
    that is refused (the engine returns no more: rebuild with --set max_det=)."""
    role = "boxes" if layout.kind == "plugin" else "pred" if layout.kind == "end_to_end" else None
    built = shapes[layout.names[role]][1] if role in layout.names else None
    if built is None or built < 1:
        return DEFAULT_MAX_DET if max_det is None else max_det
    if max_det is not None and max_det > built:
        raise NetdefError(f"{where} keeps at most {built} boxes per image (built in: its max_det); for --max-det "
                          f"{max_det} rebuild with --set max_det={max_det}")
    return built if max_det is None else max_det


def _plugin_thresholds(meta: dict[str, Any], where: str, conf: float | None,
                       iou: float | None) -> tuple[float, float]:
    layers = [lay for p in meta.get("plugins", []) for lay in p.get("layers", []) if "conf_thres" in lay]
    built_conf = layers[0]["conf_thres"] if layers else None
    built_iou = layers[0]["iou_thres"] if layers else None
    if conf is not None and (built_conf is None or conf < built_conf):
        raise NetdefError(f"{where} filters scores at conf {built_conf if built_conf is not None else '(unknown)'} "
                          f"inside its NMS plugin; --conf {conf} cannot lower it: rebuild with --set conf_thres={conf}")
    if iou is not None and (built_iou is None or abs(iou - built_iou) > 1e-6):
        raise NetdefError(f"{where} runs NMS at IoU {built_iou if built_iou is not None else '(unknown)'} inside "
                          f"its plugin; for --iou {iou} rebuild with --set iou_thres={iou}")
    return (conf if conf is not None else built_conf or 0.0), (built_iou if built_iou is not None else DEFAULT_IOU)


def detect(engine: Any, images: Sequence[str | Path | np.ndarray], conf: float | None = None,
           iou: float | None = None, max_det: int | None = None,
           names: list[str] | None = None, *, device: int | None = None,
           kpt_shape: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Detect objects: `images` are files, folders or HxWx3 uint8 RGB arrays; one dict per image:
    {"image", "height", "width", "boxes" [[x1,y1,x2,y2]...] (original pixels), "scores", "classes", "names"}
    (+ "masks" or "keypoints": module docstring; classification engines: the top-5 "classes", "scores", "names",
    no "boxes": netdef.tools.classify). conf defaults to 0.25, iou to 0.7 for YOLOv8/YOLO11 and 0.45 for YOLOv5
    (plugin engines: their built-in values);
    `device` and `kpt_shape` as in `engine_detector`."""
    arrays, labels = _load_all(images)  # the images first: without a GPU the engine would report that instead
    return engine_detector(engine, conf, iou, max_det, names, device=device, kpt_shape=kpt_shape)(arrays, labels)


def _load_all(images: Sequence[str | Path | np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    arrays: list[np.ndarray] = []
    labels: list[str] = []
    for i, im in enumerate(images):
        if isinstance(im, np.ndarray):
            arrays.append(im)
            labels.append(str(i))
            continue
        for f in collect_images([im]):
            arrays.append(read_image(f))
            labels.append(str(f))
    return arrays, labels


# ---------------------------------------------------------------- output

def draw_detections(image: np.ndarray, det: dict[str, Any], mask_alpha: float = 0.5, *,
                    check_masks: bool = True) -> Any:
    """A PIL image with the detections' boxes and labels drawn on the RGB `image`; segmentation: translucent
    masks (`mask_alpha`) under them (`rle_decode`; `check_masks=False`: masks a Detector just encoded, not
    checked for damage), pose: keypoints (visibility >= 0.5) and, for COCO's 17, the skeleton; classification
    (no "boxes"): the top-1 class."""
    from PIL import Image, ImageDraw

    if "boxes" not in det:
        return draw_top1(image, det)
    canvas = image
    if det.get("masks"):
        canvas = image.astype(np.float32)
        for rle, cls in zip(det["masks"], det["classes"]):
            m = rle_decode(rle, check=check_masks)
            if m.shape != image.shape[:2]:
                raise NetdefError(f"{det['image']}: a mask of {m.shape[0]}x{m.shape[1]} on a "
                                  f"{image.shape[0]}x{image.shape[1]} image")
            canvas[m] = canvas[m] * (1 - mask_alpha) + np.float32(_PALETTE[cls % len(_PALETTE)]) * mask_alpha
        canvas = canvas.round().astype(np.uint8)
    im = Image.fromarray(canvas)
    draw = ImageDraw.Draw(im)
    radius = max(2, round(sum(im.size) / 400))
    for kpts in det.get("keypoints", []):
        _draw_keypoints(draw, kpts, radius)
    for box, score, cls, name in zip(det["boxes"], det["scores"], det["classes"], det["names"]):
        color = _PALETTE[cls % len(_PALETTE)]
        draw.rectangle(box, outline=color, width=max(2, round(sum(im.size) / 600)))
        label = f"{name} {score:.2f}"
        x0, y0 = box[0], max(0.0, box[1] - 12)
        draw.rectangle(draw.textbbox((x0, y0), label), fill=color)
        draw.text((x0, y0), label, fill=(255, 255, 255))
    return im


def _draw_keypoints(draw: Any, kpts: list[list[float]], radius: int) -> None:
    """One pose: the limbs of COCO's skeleton (17 keypoints), then the keypoints, those with visibility < 0.5
    (when given) left out."""
    shown = [len(p) < 3 or p[2] >= 0.5 for p in kpts]
    if len(kpts) == len(COCO_KEYPOINT_COLORS):
        for (a, b), color in zip(COCO_SKELETON, COCO_LIMB_COLORS):
            if shown[a] and shown[b]:
                draw.line([tuple(kpts[a][:2]), tuple(kpts[b][:2])], fill=_POSE_PALETTE[color], width=radius)
    colors = COCO_KEYPOINT_COLORS if len(kpts) == len(COCO_KEYPOINT_COLORS) else [0] * len(kpts)
    for p, ok, color in zip(kpts, shown, colors):
        if ok:
            x, y = p[:2]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=_POSE_PALETTE[color])


# COCO's person keypoints (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles): the limbs of its
# annotation's skeleton (0-based), and a colour per limb and keypoint (head, arms, legs) from _POSE_PALETTE.
COCO_SKELETON = [(15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                 (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]
COCO_LIMB_COLORS = [2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3]
COCO_KEYPOINT_COLORS = [3, 3, 3, 3, 3, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2]
_POSE_PALETTE = [(255, 128, 0), (255, 51, 255), (51, 153, 255), (0, 255, 0)]  # arms, torso, legs, head


def annotated_names(labels: Sequence[str]) -> list[str]:
    """The annotated image's file name for each image label (a path, or an index for arrays): the image's own
    name (.jpg/.jpeg/.png kept, other formats as .png), made unique with _2, _3, ... regardless of case (Dog.jpg
    and dog.jpg are one file on macOS and Windows)."""
    names, used = [], {DETECTIONS_JSON}
    for label in labels:
        src = Path(label)
        stem, suffix = src.stem, src.suffix.lower() if src.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
        name, n = f"{stem}{suffix}", 1
        while name.casefold() in used:
            n += 1
            name = f"{stem}_{n}{suffix}"
        used.add(name.casefold())
        names.append(name)
    return names


def check_outputs(labels: Sequence[str], out_dir: str | Path, inputs: Sequence[Any] = ()) -> None:
    """Before any work: none of the files `write_results` writes into `out_dir` for these image labels may be
    one of the command's inputs (the images themselves and `inputs`, e.g. the engine), nor an existing file that
    no earlier `netdef detect` wrote (`_annotated_before`: a photo of the user's named as an annotated image will
    be); an OptionError names it."""
    sources: dict[Any, Path] = {}  # each input by its resolved path and its file identity: one lookup per output
    for src in (Path(p) for p in [*labels, *inputs] if p is not None):
        for key in _file_keys(src):
            sources.setdefault(key, src)
    names = annotated_names(labels)
    for name in [*names, DETECTIONS_JSON]:
        path = Path(out_dir) / name
        same = [sources[k] for k in _file_keys(path) if k in sources]
        check_output(path, inputs=same[:1], what="--out",  # its error for an input, its checks for all
                     kind=DETECTIONS_FILE if name == DETECTIONS_JSON else None)
    existing = [(label, Path(out_dir) / name) for label, name in zip(labels, names) if (Path(out_dir) / name).exists()]
    listed = _listed_annotated(Path(out_dir)) if existing else set()
    for label, path in existing:
        if path.name not in listed and not _annotated_before(path):
            raise OptionError(f"--out {path} exists and no earlier `netdef detect` wrote it: the annotated image of "
                              f"{label} would replace it; move that file away or give another --out folder")


def _annotated_before(path: Path) -> bool:
    """Whether the image at `path` carries the ANNOTATED_BY mark `write_annotated` gives its images."""
    try:
        with open_image(path) as im:
            marks = (im.info.get("comment"), im.info.get("Software"))
    except NetdefError:
        return False
    return ANNOTATED_BY in marks or ANNOTATED_BY.encode() in marks


def _listed_annotated(out_dir: Path) -> set[str]:
    """The annotated images the detections.json in `out_dir` lists (those of an earlier netdef without the mark)."""
    path = out_dir / DETECTIONS_JSON
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return set()
    return {r["annotated"] for r in doc if isinstance(r, dict) and isinstance(r.get("annotated"), str)} \
        if isinstance(doc, list) else set()


def _file_keys(path: Path) -> list[Any]:
    """The resolved path, and (device, inode) for an existing file (the same file under another name)."""
    try:
        st = path.stat()
        return [path.resolve(), (st.st_dev, st.st_ino)]
    except OSError:
        return [path.resolve()]


def write_results(results: list[dict[str, Any]], arrays: list[np.ndarray], out_dir: str | Path, *,
                  check_masks: bool = True) -> list[Path]:
    """detections.json and one annotated image per input (`annotated_names`) in `out_dir`; returns the images.
    Refuses (before writing anything) where an annotated image would replace its own or another input image.
    `check_masks` as in `draw_detections` (False: results straight from a Detector)."""
    labels = [det["image"] for det in results]
    check_outputs(labels, out_dir)
    written = write_annotated(results, arrays, out_dir, annotated_names(labels), check_masks=check_masks)
    write_detections_json(results, out_dir)
    return written


def write_annotated(results: Sequence[dict[str, Any]], arrays: Sequence[np.ndarray], out_dir: str | Path,
                    names: Sequence[str], *, check_masks: bool = True) -> list[Path]:
    """One annotated image per result, named `names` (`annotated_names` of all the run's labels, checked with
    `check_outputs`); records each name in its result as "annotated". Returns the images written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for det, im, name in zip(results, arrays, names):
        det["annotated"] = name
        atomic_write(out / name, _encode(draw_detections(im, det, check_masks=check_masks), Path(name).suffix))
        written.append(out / name)
    return written


def write_detections_json(results: Sequence[dict[str, Any]], out_dir: str | Path) -> Path:
    """detections.json of all the results in `out_dir` (atomically)."""
    path = Path(out_dir) / DETECTIONS_JSON
    atomic_write(path, json.dumps(list(results), indent=1).encode())
    return path


def _encode(im: Any, suffix: str) -> bytes:
    """The image encoded for `suffix`, marked ANNOTATED_BY (a JPEG comment, a PNG Software text)."""
    import io

    from PIL.PngImagePlugin import PngInfo

    buf = io.BytesIO()
    if suffix in (".jpg", ".jpeg"):
        im.save(buf, format="JPEG", quality=90, comment=ANNOTATED_BY.encode())
    else:
        info = PngInfo()
        info.add_text("Software", ANNOTATED_BY)
        im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()
