"""The heads of Ultralytics' YOLOv8, YOLO11 and YOLO26 (8.x names, arguments and weight keys): the anchor-free
Detect (DFL + dist2bbox), which `Detect` (netdef.blocks.yolo) builds when its row gives no anchors, YOLO26's
end-to-end head (one-to-one branches, top-k selection with TensorRT TopK and Gather layers, no NMS), Pose, and
Segment with Proto (also YOLOv5 v7.0's anchor-based Segment).

`--set head=plugin` ends Detect, Segment and Pose in netdef's decode + NMS plugin (netdef.plugins.yolo) instead:
outputs num_dets (B, 1), boxes (B, K, 4) x1y1x2y2, scores (B, K), classes (B, K), K = max_det, and for Segment
mask_coefs (B, K, nm) and protos (B, nm, H/4, W/4), for Pose keypoints (B, K, nkpt, ndim) (pixels, visibility
sigmoided), all of the kept boxes.

Each head records what it computes (`Network.record_model`: task detect, segment, pose or end2end, nc, head, and
nm or kpt_shape): the engine header's "model", from which `netdef detect` knows the task.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import SpecError, WeightKeyError
from ..network import Network, needs_static_size
from ..registry import Param, block, not_built
from .yolo import (HEAD_PARAMS, _anchor_plugin, _anchor_setup, _decode_level, _spatial, _strides, anchor_rows,
                   class_count, conv, dynamic, nms_params)
from .yolov8 import dwconv

REG_MAX = 16  # DFL bins per box side in YOLOv8/YOLO11
def _pair(value: Any) -> tuple[int, int]:
    """(keypoints, dims) from "5,3", "5x3", "[5, 3]" or a two-item sequence of integers; ValueError otherwise."""
    if isinstance(value, str):
        value = re.split(r"\s*[,x]\s*", value.strip().strip("[]()").strip())
    items = list(value)
    if len(items) != 2 or any(isinstance(v, (bool, float)) for v in items):
        raise ValueError(value)
    return int(items[0]), int(items[1])


KPT_SHAPE = Param(None, help="pose: keypoints,dims such as 5,3 (default: the weights' count where it tells the "
                             "shape, else the YAML's kpt_shape); given, the weights must agree",
                  parse=_pair, valid=(lambda v: v[0] >= 1 and v[1] in (2, 3), "keypoints,dims such as 5,3 (dims 2 or 3)"))
TOPK_MAX = 3840  # the largest k of TensorRT's TopK layer (8.6 to 10 and RTX)


# ---------------------------------------------------------------- anchor-free Detect

def detect_anchor_free(net: Network, feats: list, prefix: str, nc: int, reg_max: int | None = None,
                       strides: list[int] | None = None, end2end: bool = False) -> Any:
    """YOLOv8/YOLO11 head in eval mode: per level a box branch `cv2.i` (Conv, Conv, Conv2d to 4*reg_max) and a
    class branch `cv3.i` (YOLOv8: Conv, Conv, Conv2d; YOLO11: (DWConv, Conv) twice, Conv2d: read from the
    weights), then DFL (softmax over the bins, expectation with `dfl.conv`'s bin values) and dist2bbox, as
    Ultralytics' `Detect._inference`: (B, 4 + nc, N) = x, y, w, h in input pixels, class scores (head=plugin: its
    NMS detections). `end2end` (YOLO26): the one-to-one branches' top-k detections (see detect_end2end)."""
    if end2end:
        return detect_end2end(net, feats, prefix, nc, reg_max, strides)
    _check_head(net, prefix)
    box, cls, _, stride_list = _detect_parts(net, feats, prefix, nc, reg_max, strides)
    net.record_model(task="detect", nc=int(cls.shape[1]), head=net.param("head"), stride=int(max(stride_list)))
    return _prediction(net, prefix, box, cls)


def _prediction(net: Network, prefix: str, box: Any, cls: Any, extra: Any = None, extra_part: str = "") -> Any:
    """The anchor-free head's output: Ultralytics' eval (B, 4 + nc [+ E], N) (`extra` (B, E, N): mask coefficients,
    keypoints, the part `extra_part`), or with head=plugin that prediction through netdef's NMS plugin (layer
    `{prefix}/decode_nms`): {num_dets, boxes, scores, classes[, extras (B, K, E)]}."""
    pred = net.concat([box, cls] + ([] if extra is None else [extra]), f"{prefix}/concat", axis=1)
    if net.param("head") != "plugin":
        nc = int(cls.shape[1])
        net.output_parts[pred.name] = [("boxes", 0, 4), ("scores", 4, 4 + nc)] + (
            [] if extra is None else [(extra_part, 4 + nc, 4 + nc + int(extra.shape[1]))])
        return pred
    from ..plugins.yolo import add_anchor_free_nms  # only plugin builds need it

    return add_anchor_free_nms(net, pred, int(cls.shape[1]), prefix, 0 if extra is None else int(extra.shape[1]),
                               **nms_params(net, anchor_free=True))


def detect_end2end(net: Network, feats: list, prefix: str, nc: int, reg_max: int | None = None,
                   strides: list[int] | None = None, extra: Any = None, task: dict | None = None) -> Any:
    """YOLO26's end-to-end head as Ultralytics runs it with `model.end2end = True` (predictor, exporter): the
    one-to-one branches `one2one_cv2`/`one2one_cv3` decoded to x1, y1, x2, y2 boxes and class scores, then
    `Detect.postprocess` without NMS: the k = min(max_det, N) anchors of highest best-class score, the k highest
    (anchor, class) scores among them: (B, k, 6) = x1, y1, x2, y2 (input pixels), score, class index.

    The one-to-many branches `cv2`/`cv3` (training only) are accounted for as knowingly unused (`net.skip`);
    `--set head=one2many` builds them instead: Ultralytics' `model.end2end = False` output (B, 4 + nc, N) of
    x, y, w, h and class scores, for NMS (the one-to-one keys are then the skipped ones).

    Segment26 and Pose26 give `extra(branch, sizes, strides) -> (B, E, N)` (the branch's mask coefficients or
    decoded keypoints; branch "one2one_" or "") and `task` (recorded model fields: task, nm or kpt_shape): the
    top-k rows then carry the picked anchors' E values, (B, k, 6 + E), and one2many's output is (B, 4 + nc + E, N)."""
    head = net.param("head")
    if head == "plugin":
        raise SpecError(f"{prefix}: head=plugin is not available for the end-to-end head (end2end: True), which needs "
                        f"no NMS: leave head out (or --set head=one2many for the raw one-to-many output)")
    if net.has(f"{prefix}.cv2.0.2.bias") and not net.has(f"{prefix}.one2one_cv2.0.2.bias"):
        raise WeightKeyError(f"{prefix}: the architecture's end-to-end head (end2end: True) needs the weights' "
                             f"one-to-one branch '{prefix}.one2one_cv2.*', which they lack: they belong to a head "
                             f"without one (end2end: False)")
    one2many = head == "one2many"
    built, left = ("", "one2one_") if one2many else ("one2one_", "")
    why = ("the one-to-one branch of the end-to-end head (the default head builds it)" if one2many else
           "the one-to-many branch, used in training only (--set head=one2many builds it)")
    branches = tuple(f"{prefix}.{left}{b}." for b in ("cv2", "cv3", "cv4", "cv4_kpts"))
    net.skip([k for k in net.weights if k.startswith(branches)], why)
    box, cls, sizes, stride_list = _detect_parts(net, feats, prefix, nc, reg_max, strides, branch=built,
                                                 xyxy=not one2many)
    fields = task or {"task": "detect"}
    net.record_model(**{**fields, "task": fields["task"] if one2many else "end2end"}, nc=int(cls.shape[1]),
                     head=head, stride=int(max(stride_list)))
    more = None if extra is None else extra(built, sizes, stride_list)
    if one2many:
        return net.concat([box, cls] + ([] if more is None else [more]), f"{prefix}/concat", axis=1)
    return _topk_detections(net, box, cls, prefix, net.param("max_det"), more)


def _topk_detections(net: Network, box: Any, cls: Any, prefix: str, max_det: int, extra: Any = None) -> Any:
    """Ultralytics' `Detect.get_topk_index` + `postprocess` on boxes (B, 4, N) and scores (B, nc, N): TopK over
    each anchor's best score, gather those anchors' scores (B, nc, k), TopK over them flattened; the class and
    anchor of each pick come from constant tables of the flattened positions. Returns (B, k, 6), with `extra`
    (B, E, N) the picked anchors' values after them: (B, k, 6 + E)."""
    nc, n = int(cls.shape[1]), int(cls.shape[2])
    if n < 0:  # k = min(max_det, N) and the tables of flattened positions are sized at build time
        raise SpecError(needs_static_size(f"{prefix}: the end-to-end head's top-k selection") + "; or build the "
                        "one-to-many branch, which takes any size, with --set head=one2many (NMS afterwards)")
    if not isinstance(max_det, int) or not 1 <= max_det <= TOPK_MAX:
        raise SpecError(f"{prefix}: max_det must be an integer from 1 to {TOPK_MAX} (TensorRT's TopK limit), "
                        f"got {max_det!r}")
    if net.dtype == np.float16 and nc > 2048:
        raise SpecError(f"{prefix}: {nc} classes: float16 cannot hold class indices above 2048 exactly; build with "
                        f"--precision fp32")
    k = min(max_det, n)
    top = net.trt.TopKOperation.MAX
    best = net.reduce(cls, f"{prefix}/best_score", "max", dims=1)  # (B, N)
    anchors = net.layer("topk", f"{prefix}/topk_anchors", best, top, k, 1 << 1).get_output(1)  # (B, k)
    candidates = _gather(net, cls, anchors, 2, f"{prefix}/candidate_scores", batched=True)  # (B, nc, k)
    flat = net.shuffle(candidates, f"{prefix}/candidate_scores/flatten", reshape=(0, nc * k))  # c * k + slot
    picked = net.layer("topk", f"{prefix}/topk_scores", flat, top, k, 1 << 1)
    scores, index = picked.get_output(0), picked.get_output(1)  # (B, k)
    labels = _gather(net, net.constant(np.repeat(np.arange(nc), k), f"{prefix}/class_of"), index, 0,
                     f"{prefix}/labels")
    slots = _gather(net, net.constant(np.tile(np.arange(k), nc), f"{prefix}/slot_of", np.int32), index, 0,
                    f"{prefix}/slots")
    chosen = _gather(net, anchors, slots, 1, f"{prefix}/anchors", batched=True)  # (B, k) anchor indices
    boxes = _gather(net, box, chosen, 2, f"{prefix}/boxes", batched=True)  # (B, 4, k)
    columns = [boxes, *(net.shuffle(t, f"{prefix}/{name}/column", reshape=(0, 1, k))
                        for t, name in ((scores, "scores"), (labels, "labels")))]
    if extra is not None:
        columns.append(_gather(net, extra, chosen, 2, f"{prefix}/extras", batched=True))  # (B, E, k)
    return net.shuffle(net.concat(columns, f"{prefix}/detections", axis=1), f"{prefix}/detections/transpose",
                       first=(0, 2, 1))


def _gather(net: Network, data: Any, index: Any, axis: int, name: str, batched: bool = False) -> Any:
    """torch.gather-like selection along `axis`: data.take(index, axis); `batched`: dimension 0 of data and
    index is the batch, each batch entry with its own indices (TensorRT's one element-wise dimension)."""
    layer = net.layer("gather", name, data, index, axis)
    layer.num_elementwise_dims = 1 if batched else 0
    return layer.get_output(0)


def _check_head(net: Network, prefix: str) -> None:
    """The anchor-free heads without a one-to-one branch build the default head or the plugin head."""
    if net.param("head") == "one2many":
        raise SpecError(f"{prefix}: head=one2many selects the one-to-many branch of an end-to-end head (YOLO26, "
                        f"end2end: True); this head has only that branch: leave head out")
    if net.has(f"{prefix}.one2one_cv2.0.2.bias"):
        raise WeightKeyError(f"{prefix}: the weights have an end-to-end head ('{prefix}.one2one_cv2.*'): use an "
                             f"architecture with end2end: True (yolo26)")


@block("Pose", params={**HEAD_PARAMS, "kpt_shape": KPT_SHAPE})
def pose(net: Network, x: Any, prefix: str, nc: int, kpt_shape: Sequence[int] = (17, 3), reg_max: int | None = None,
         strides: list[int] | None = None) -> Any:
    """YOLOv8/YOLO11 pose head in eval mode: Detect's (B, 4 + nc, N) followed by the keypoints of branch `cv4.i`
    (Conv, Conv, Conv2d to nk = kpts x dims), decoded as Ultralytics' `Pose.kpts_decode`: x, y in input pixels
    ((2 v + cell centre - 0.5) x stride), visibility through a sigmoid: (B, 4 + nc + nk, N). head=plugin: the NMS
    detections with the kept boxes' keypoints (B, K, kpts, dims)."""
    _check_kpt_shape(prefix, kpt_shape)
    feats = list(x) if isinstance(x, (list, tuple)) else [x]
    _check_head(net, prefix)
    box, cls, sizes, stride_list = _detect_parts(net, feats, prefix, nc, reg_max, strides)
    nkpt, ndim = _kpt_shape(net, prefix, (int(kpt_shape[0]), int(kpt_shape[1])))
    net.record_model(task="pose", nc=int(cls.shape[1]), head=net.param("head"), kpt_shape=[nkpt, ndim],
                     stride=int(max(stride_list)))
    c4 = max(net.channels(feats[0]) // 4, nkpt * ndim)
    raw = _branch(net, feats, f"{prefix}.cv4", c4, nkpt * ndim, sizes)
    kpts = _decode_kpts(net, raw, prefix, feats, sizes, stride_list, nkpt, ndim, gain=2.0, centre=0.0)
    out = _prediction(net, prefix, box, cls, kpts, "keypoints")
    if isinstance(out, dict):
        flat = out.pop("extras")
        out["keypoints"] = net.shuffle(flat, f"{prefix}/keypoints", reshape=(0, int(flat.shape[1]), nkpt, ndim))
    return out


def _check_kpt_shape(prefix: str, kpt_shape: Any) -> None:
    if (not isinstance(kpt_shape, (list, tuple)) or len(kpt_shape) != 2 or kpt_shape[1] not in (2, 3)
            or not isinstance(kpt_shape[0], int) or kpt_shape[0] < 1):
        raise SpecError(f"{prefix}: kpt_shape must be [keypoints, 2 or 3], got {kpt_shape!r}")


def _decode_kpts(net: Network, raw: Any, prefix: str, feats: list, sizes: list[tuple[int, int]],
                 stride_list: list[int], nkpt: int, ndim: int, gain: float, centre: float) -> Any:
    """Raw keypoint outputs (B, nkpt * ndim, N) decoded as Ultralytics' `kpts_decode`: x, y = (gain * v + cell +
    centre) * stride in input pixels (Pose: gain 2, centre 0, i.e. 2v + anchor - 0.5; Pose26: gain 1, centre 0.5,
    v + anchor), visibility through a sigmoid: (B, nkpt * ndim, N)."""
    n = raw.shape[-1]
    kpts = net.shuffle(raw, f"{prefix}/kpts", reshape=(0, nkpt, ndim, n))
    if dynamic(sizes):
        gain_t, offset_t = _kpt_grid(net, feats, stride_list, prefix, ndim, gain, centre)
    else:
        stride, cells = _anchor_grid(sizes, stride_list)
        g = np.zeros((1, 1, ndim, n))
        offset = np.zeros((1, 1, ndim, n))
        g[0, 0, :2] = gain * stride
        offset[0, 0, :2] = (cells + centre) * stride
        gain_t, offset_t = net.constant(g, f"{prefix}/kpts/gain"), net.constant(offset, f"{prefix}/kpts/offset")
    xy = net.add(net.mul(kpts, gain_t, f"{prefix}/kpts/mul_gain"), offset_t, f"{prefix}/kpts/add_offset")
    if ndim == 3:  # visibility: sigmoid(v) in the third slot, the linear decode (zero gain there) in the others
        keep = np.zeros((1, 1, ndim, 1))
        keep[0, 0, 2] = 1.0
        vis = net.activation(kpts, "sigmoid", f"{prefix}/kpts")
        xy = net.add(xy, net.mul(vis, net.constant(keep, f"{prefix}/kpts/visibility"), f"{prefix}/kpts/mul_vis"),
                     f"{prefix}/kpts/add_vis")
    return net.shuffle(xy, f"{prefix}/kpts/flatten", reshape=(0, nkpt * ndim, n))


@block("Pose26", params={**HEAD_PARAMS, "kpt_shape": KPT_SHAPE})
def pose26(net: Network, x: Any, prefix: str, nc: int, kpt_shape: Sequence[int] = (17, 3), reg_max: int | None = None,
           end2end: bool = False, strides: list[int] | None = None) -> Any:
    """YOLO26's pose head (Pose26) in eval mode: per level `{branch}cv4.i` (Conv 3x3, Conv 3x3) and
    `{branch}cv4_kpts.i` (Conv2d 1x1 to nkpt * ndim), keypoints decoded as Pose26's `kpts_decode` (v + anchor,
    times the stride; visibility sigmoided). With `end2end` (YOLO26): the one-to-one branches' top-k rows with
    the keypoints after them, (B, k, 6 + nkpt * ndim) (detect_end2end; head=one2many: (B, 4 + nc + nk, N)).
    The keypoint-uncertainty branches `cv4_sigma` and the normalizing flow `flow_model` are training-only."""
    _check_kpt_shape(prefix, kpt_shape)
    if not end2end:
        raise SpecError(f"{prefix}: Pose26 is YOLO26's head: its YAML has end2end: True")
    feats = list(x) if isinstance(x, (list, tuple)) else [x]
    net.skip([k for k in net.weights if k.startswith((f"{prefix}.cv4_sigma.", f"{prefix}.one2one_cv4_sigma.",
                                                      f"{prefix}.flow_model."))],
             "training only: keypoint uncertainty (cv4_sigma) and the normalizing flow of the pose loss")
    branch = "one2one_" if end2end and net.param("head") != "one2many" else ""
    nkpt, ndim = _kpt_shape(net, prefix, (int(kpt_shape[0]), int(kpt_shape[1])), f"{prefix}.{branch}cv4_kpts.0.bias")
    c4 = max(net.channels(feats[0]) // 4, nkpt * (ndim + 2))

    def keypoints(branch: str, sizes: list[tuple[int, int]], stride_list: list[int]) -> Any:
        raw = _branch(net, feats, f"{prefix}.{branch}cv4", c4, nkpt * ndim, sizes, last=f"{prefix}.{branch}cv4_kpts")
        return _decode_kpts(net, raw, prefix, feats, sizes, stride_list, nkpt, ndim, gain=1.0, centre=0.5)

    return detect_end2end(net, feats, prefix, nc, reg_max, strides, keypoints,
                          {"task": "pose", "kpt_shape": [nkpt, ndim]})


def _kpt_shape(net: Network, prefix: str, yaml_shape: tuple[int, int], key: str | None = None) -> tuple[int, int]:
    """(keypoints, dims): `--set kpt_shape` (checked against the weights), else the YAML's where the weights'
    keypoint outputs (`key`, default `prefix.cv4.0.2.bias`) fit it, else the one shape they fit (n x 2 or n x 3),
    else an error asking for --set kpt_shape."""
    key = key or f"{prefix}.cv4.0.2.bias"
    outputs = net.weight_size(key) if net.has(key) else None
    given = net.param("kpt_shape")  # (keypoints, dims) or None
    if given is not None:
        nkpt, ndim = given
        if outputs is not None and outputs != nkpt * ndim:
            raise WeightKeyError(f"{prefix}: --set kpt_shape={nkpt},{ndim} needs {nkpt * ndim} keypoint outputs, "
                                 f"the weights' '{key}' has {outputs}")
        return nkpt, ndim
    if outputs is None or outputs == yaml_shape[0] * yaml_shape[1]:
        return yaml_shape
    fits = [(outputs // d, d) for d in (3, 2) if outputs % d == 0]
    if len(fits) == 1:
        return fits[0]
    shapes = " or ".join(f"{n},{d}" for n, d in fits) or "no keypoints,dims shape with dims 2 or 3"
    raise SpecError(f"{prefix}: the weights' '{key}' has {outputs} keypoint outputs ({shapes}), the YAML's "
                    f"kpt_shape {list(yaml_shape)} needs {yaml_shape[0] * yaml_shape[1]}: give the model's with "
                    f"--set kpt_shape=KEYPOINTS,DIMS")


@block("Segment", params=HEAD_PARAMS, width_args=("npr",))
def segment(net: Network, x: Any, prefix: str, nc: int, nm: int = 32, npr: int = 256, reg_max: int | None = None,
            strides: list[int] | None = None, anchors: list | int | None = None) -> list:
    """YOLOv8/YOLO11 instance-segmentation head in eval mode: Detect's (B, 4 + nc, N) followed by the `nm` mask
    coefficients of branch `cv4.i` (Conv, Conv, Conv2d), and the mask prototypes `proto` (Proto, `npr` hidden
    channels) of the first level: [(B, 4 + nc + nm, N), (B, nm, 2H, 2W)] as Ultralytics' (output, proto).
    With `anchors`, YOLOv5 v7.0's head (segment_anchor_based): [(B, N, 5 + nc + nm), (B, nm, 2H, 2W)].
    head=plugin: the NMS detections, the kept boxes' mask coefficients and the prototypes (_plugin_segment)."""
    feats = list(x) if isinstance(x, (list, tuple)) else [x]
    if anchors is not None:
        return segment_anchor_based(net, feats, prefix, nc, anchors, nm, npr, strides)
    _check_head(net, prefix)
    box, cls, sizes, stride_list = _detect_parts(net, feats, prefix, nc, reg_max, strides)
    _check_nm(net, prefix, f"{prefix}.cv4.0.2.bias", nm, "Segment")
    net.record_model(task="segment", nc=int(cls.shape[1]), head=net.param("head"), nm=nm, stride=int(max(stride_list)))
    coef = _branch(net, feats, f"{prefix}.cv4", max(net.channels(feats[0]) // 4, nm), nm, sizes)
    out = _prediction(net, prefix, box, cls, coef, "mask coefficients")
    masks = proto(net, feats[0], f"{prefix}.proto", npr, nm)
    return _plugin_segment(out, masks) if isinstance(out, dict) else [out, masks]


@block("Segment26", params=HEAD_PARAMS, width_args=("npr",))
def segment26(net: Network, x: Any, prefix: str, nc: int, nm: int = 32, npr: int = 256, reg_max: int | None = None,
              end2end: bool = False, strides: list[int] | None = None) -> list:
    """YOLO26's instance-segmentation head (Segment26) in eval mode: the end-to-end detections with the mask
    coefficients of branch `{branch}cv4.i` (Conv, Conv, Conv2d) after them, (B, k, 6 + nm) (detect_end2end;
    head=one2many: (B, 4 + nc + nm, N)), and the prototypes of Proto26 `proto`: [rows, (B, nm, H/4, W/4)]."""
    feats = list(x) if isinstance(x, (list, tuple)) else [x]
    if not end2end:
        raise SpecError(f"{prefix}: Segment26 is YOLO26's head: its YAML has end2end: True")
    branch = "one2one_" if net.param("head") != "one2many" else ""
    _check_nm(net, prefix, f"{prefix}.{branch}cv4.0.2.bias", nm, "Segment26")
    c4 = max(net.channels(feats[0]) // 4, nm)

    def coefficients(branch: str, sizes: list[tuple[int, int]], stride_list: list[int]) -> Any:
        return _branch(net, feats, f"{prefix}.{branch}cv4", c4, nm, sizes)

    rows = detect_end2end(net, feats, prefix, nc, reg_max, strides, coefficients, {"task": "segment", "nm": nm})
    return [rows, proto26(net, feats, f"{prefix}.proto", npr, nm)]


@block("Proto26", width_args=("c_",))
def proto26(net: Network, x: Any, prefix: str, c_: int = 256, c2: int = 32) -> Any:
    """YOLO26's mask prototypes: each coarser level through `feat_refine.i` (Conv 1x1 to the first level's
    channels), nearest-upsampled to the first level's size and added to it, `feat_fuse` (Conv 3x3 to c_), then
    Proto's cv1, ConvTranspose2d, cv2, cv3: (B, c2, 2H, 2W). The semantic-segmentation branch `semseg` is
    training only."""
    feats = list(x) if isinstance(x, (list, tuple)) else [x]
    net.skip([k for k in net.weights if k.startswith(f"{prefix}.semseg.")], "training only: the semantic "
             "segmentation branch of Proto26")
    feat, ch0 = feats[0], net.channels(feats[0])
    for i, t in enumerate(feats[1:]):
        up = net.upsample(conv(net, t, f"{prefix}.feat_refine.{i}", ch0, 1), 2 ** (i + 1),
                          f"{prefix}.feat_refine.{i}/upsample")
        feat = net.add(feat, up, f"{prefix}.feat_refine.{i}/add")
    return proto(net, conv(net, feat, f"{prefix}.feat_fuse", c_, 3), prefix, c_, c2)


def _check_nm(net: Network, prefix: str, key: str, nm: int, row: str) -> None:
    """The row's mask-coefficient count `nm` must be the weights' (`key` has one value per coefficient)."""
    if net.has(key) and net.weight_size(key) != nm:
        raise SpecError(f"{prefix}: nm={nm} mask coefficients, but the weights' '{key}' has {net.weight_size(key)}: "
                        f"set the {row} row's nm to the model's")


def _plugin_segment(detections: dict, protos: Any) -> dict:
    """The plugin head's Segment outputs: the detections, mask_coefs (the plugin's extras) and protos."""
    out = {k: v for k, v in detections.items() if k != "extras"}
    return out | {"mask_coefs": detections["extras"], "protos": protos}


@block("Proto", width_args=("c_",))
def proto(net: Network, x: Any, prefix: str, c_: int = 256, c2: int = 32, upsample: str = "deconv") -> Any:
    """Mask prototypes: Conv 3x3 `cv1`, 2x upsampling `upsample` (Ultralytics 8: ConvTranspose2d 2x2 stride 2
    with bias, `deconv`; YOLOv5: `nearest`), Conv 3x3 `cv2`, Conv 1x1 `cv3` to c2: (B, c2, 2H, 2W)."""
    if upsample not in ("deconv", "nearest"):
        raise SpecError(f"{prefix}: Proto upsample '{upsample}': use deconv or nearest")
    y = conv(net, x, f"{prefix}.cv1", c_, 3)
    if upsample == "deconv":
        y = net.deconv(y, f"{prefix}.upsample", c_, 2, 2, bias=True)
    else:
        y = net.upsample(y, 2, f"{prefix}.upsample")
    return conv(net, conv(net, y, f"{prefix}.cv2", c_, 3), f"{prefix}.cv3", c2, 1)


def segment_anchor_based(net: Network, feats: list, prefix: str, nc: int, anchors: list | int, nm: int, npr: int,
                         strides: list[int] | None) -> list:
    """YOLOv5 v7.0's Segment in eval mode: per level the 1x1 Conv2d `m.i` to na x (5 + nc + nm), its box,
    objectness and class rows decoded as YOLOv5's Detect, its mask-coefficient rows as they are (no sigmoid),
    and Proto (nearest upsampling): [(B, N, 5 + nc + nm), (B, nm, 2H, 2W)] as YOLOv5's model(x)[:2].
    head=plugin: the raw `m.i` maps through netdef's decode + NMS plugin (mask coefficients as its extra channels)."""
    if net.param("head") == "one2many":
        raise SpecError(f"{prefix}: head=one2many is not available for the YOLOv5 Segment head, which has no "
                        f"end-to-end branch: leave head out")
    _check_nm(net, prefix, f"{prefix}.proto.cv3.bn.weight", nm, "Segment")
    head = _anchor_setup(net, feats, prefix, nc, anchors, strides, nm)
    if net.param("head") == "plugin":
        out = _anchor_plugin(net, feats, prefix, head)
        return _plugin_segment(out, proto(net, feats[0], f"{prefix}.proto", npr, nm, upsample="nearest"))
    na, nc, no, sizes = head.na, head.nc, head.no, head.sizes
    det_rows = [a * no + j for a in range(na) for j in range(5 + nc)]
    mask_rows = [a * no + j for a in range(na) for j in range(5 + nc, no)]
    levels = []
    for i, t in enumerate(feats):
        p, (h, w) = f"{prefix}.m.{i}", sizes[i]
        weight = net.weight(f"{p}.weight", (na * no, net.channels(t), 1, 1))
        bias = net.weight(f"{p}.bias", (na * no,))
        det = net.conv_layer(t, f"{p}/det", weight[det_rows], bias[det_rows]).get_output(0)
        masks = net.conv_layer(t, f"{p}/masks", weight[mask_rows], bias[mask_rows]).get_output(0)
        det = _decode_level(net, det, f"{prefix}/level{i}", na, 5 + nc, sizes[i], head.strides[i], head.anchors_px[i])
        if dynamic(sizes):
            masks = anchor_rows(net, masks, f"{prefix}/level{i}/masks", na, nm)
        else:
            masks = net.shuffle(masks, f"{prefix}/level{i}/masks", reshape=(0, na, nm, h, w), second=(0, 1, 3, 4, 2))
            masks = net.shuffle(masks, f"{prefix}/level{i}/masks/reshape", reshape=(0, na * h * w, nm))
        levels.append(net.concat([det, masks], f"{prefix}/level{i}/concat", axis=2))
    out = levels[0] if len(levels) == 1 else net.concat(levels, f"{prefix}/concat", axis=1)
    return [out, proto(net, feats[0], f"{prefix}.proto", npr, nm, upsample="nearest")]


def _detect_parts(net: Network, feats: list, prefix: str, nc: int, reg_max: int | None, strides: list[int] | None,
                  branch: str = "", xyxy: bool = False) -> tuple[Any, Any, list[tuple[int, int]], list[int]]:
    """Detect's decoded boxes (B, 4, N) (x, y, w, h, or `xyxy`), class scores (B, nc, N), the levels' sizes and
    strides, from the branches `{branch}cv2` and `{branch}cv3` (branch "" or "one2one_"). `reg_max` None: the
    weights' DFL bins (their box outputs / 4, as Ultralytics' `reg_max:` YAML key made them), else REG_MAX."""
    key = f"{prefix}.{branch}cv3.0.2.bias"
    nc = class_count(net, prefix, nc, net.weight_size(key) if net.has(key) else None, f"'{key}'")
    key = f"{prefix}.{branch}cv2.0.2.bias"
    if reg_max is None:
        size = net.weight_size(key) if net.has(key) else 0
        reg_max = size // 4 if size and size % 4 == 0 else REG_MAX
    if not isinstance(reg_max, int) or isinstance(reg_max, bool) or reg_max < 1:
        raise SpecError(f"{prefix}: reg_max must be a positive integer, got {reg_max!r}")
    if net.has(key) and net.weight_size(key) != 4 * reg_max:
        raise SpecError(f"{prefix}: reg_max={reg_max} needs {4 * reg_max} box outputs, the weights' '{key}' has "
                        f"{net.weight_size(key)}: set `reg_max:` in the YAML to the model's")
    sizes = [_spatial(net, t, prefix) for t in feats]
    stride_list = _strides(net, prefix, feats, strides, sizes)
    ch0 = net.channels(feats[0])
    box = _branch(net, feats, f"{prefix}.{branch}cv2", max(16, ch0 // 4, reg_max * 4), 4 * reg_max, sizes)
    box = net.shuffle(box, f"{prefix}/box", reshape=(0, 4, reg_max, box.shape[-1]))
    # the weights tell YOLOv8's plain class branch from YOLO11's depth-wise one; without weights (`netdef show`),
    # the backbone does, as in Ultralytics' parse_model (C3k2, A2C2f or C2fCIB rows: not legacy)
    legacy = (not net.has(f"{prefix}.{branch}cv3.0.0.0.conv.weight") if net.weights else
              not {"C3k2", "A2C2f", "C2fCIB"} & set(net.blocks_built))
    cls = _branch(net, feats, f"{prefix}.{branch}cv3", max(ch0, min(nc, 100)), nc, sizes, depthwise=not legacy)
    boxes = _decode_boxes(net, box, prefix, reg_max, feats, sizes, stride_list, xyxy)
    return boxes, net.activation(cls, "sigmoid", f"{prefix}/cls"), sizes, stride_list


def _branch(net: Network, feats: list, prefix: str, c_mid: int, c_out: int, sizes: list[tuple[int, int]],
            depthwise: bool = False, last: str | None = None) -> Any:
    """A head branch per level `prefix.i` — Conv 3x3, Conv 3x3 (or, `depthwise`, YOLO11's (DWConv 3x3, Conv 1x1)
    twice), then Conv2d 1x1 with bias to `c_out` (`prefix.i.2`, or `last.i`: Pose26's separate cv4_kpts) —
    flattened and joined over the levels: (B, c_out, N)."""
    outs = []
    for i, t in enumerate(feats):
        p = f"{prefix}.{i}"
        if depthwise:
            for j in range(2):
                t = conv(net, dwconv(net, t, f"{p}.{j}.0", net.channels(t), 3), f"{p}.{j}.1", c_mid, 1)
        else:
            t = conv(net, conv(net, t, f"{p}.0", c_mid, 3), f"{p}.1", c_mid, 3)
        t = net.conv(t, f"{p}.2" if last is None else f"{last}.{i}", c_out, 1, bias=True)
        n = -1 if dynamic(sizes) else sizes[i][0] * sizes[i][1]
        outs.append(net.shuffle(t, f"{p}/flatten" if last is None else f"{last}.{i}/flatten", reshape=(0, c_out, n)))
    return outs[0] if len(outs) == 1 else net.concat(outs, f"{prefix}/concat", axis=2)


def _anchor_grid(sizes: list[tuple[int, int]], strides: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Each position's stride (N,) and cell index (2, N) (x, y), levels in order, row-major within a level."""
    stride = np.concatenate([np.full(h * w, s, np.float64) for (h, w), s in zip(sizes, strides)])
    cx = np.concatenate([np.tile(np.arange(w), h) for h, w in sizes])
    cy = np.concatenate([np.repeat(np.arange(h), w) for h, w in sizes])
    return stride, np.stack([cx, cy]).astype(np.float64)


def _decode_boxes(net: Network, box: Any, prefix: str, reg_max: int, feats: list, sizes: list[tuple[int, int]],
                  strides: list[int], xyxy: bool = False) -> Any:
    """(B, 4, reg_max, N) bin logits -> (B, 4, N) boxes x, y, w, h (or x1, y1, x2, y2 with `xyxy`) in pixels.

    DFL's expectation and dist2bbox are both linear in the softmax, so they are one matrix (4, 4*reg_max):
    x = ax + (r - l)/2, w = l + r (x1 = ax - l, x2 = ax + r; distances l, t, r, b in grid units) with the bin
    values from `dfl.conv`, then times the level's stride, plus the anchor point (cell centre) in pixels (from the
    levels' feature maps `feats` of sizes `sizes` (their `_spatial`): ramps over their runtime shapes where H, W are
    chosen at run time)."""
    n = -1 if dynamic(sizes) else sum(h * w for h, w in sizes)
    if reg_max > 1:
        fixed = np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1)  # Ultralytics' DFL: never trained
        bins = net.fixed_weight(f"{prefix}.dfl.conv.weight", fixed,
                                f"DFL's fixed bin values 0..{reg_max - 1}: Ultralytics sets this 1x1 conv to "
                                "arange(reg_max) and never trains it; some exporters leave it out"
                                ).reshape(reg_max).astype(np.float64)
        soft = net.softmax(box, f"{prefix}.dfl/softmax", 2, fp32=False)  # module dfl's output (the expectation)
        # has no tensor of its own here: it is folded into the dist2bbox matrix multiply
        dist = net.shuffle(soft, f"{prefix}.dfl/flatten", reshape=(0, 4 * reg_max, n))
    else:  # reg_max 1: the distances themselves
        bins = np.ones(1)
        dist = net.shuffle(box, f"{prefix}/dist", reshape=(0, 4, n))
    if xyxy:  # (x1, y1, x2, y2) from l, t, r, b
        mix = np.diag([-1.0, -1.0, 1.0, 1.0])
    else:  # (x, y, w, h)
        mix = np.array([[-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5], [1, 0, 1, 0], [0, 1, 0, 1]])
    matrix = (mix[:, :, None] * bins[None, None, :]).reshape(1, 4, 4 * reg_max)
    xywh = net.matmul(net.constant(matrix, f"{prefix}/dist2bbox/matrix"), dist, f"{prefix}/dist2bbox")
    if dynamic(sizes):  # rows x, y, (x, y or 0, 0), stride: (cell + 0.5) * stride and the stride
        centre = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]
        rows = _cell_rows(net, feats, strides, f"{prefix}/grid",
                          np.array(centre + (centre if xyxy else [[0.0] * 3] * 2) + [[0.0, 0.0, 1.0]]))
        stride_t = net.slice(rows, f"{prefix}/strides", [0, 4, 0], [1, 1, -1])
        anchors_t = net.slice(rows, f"{prefix}/anchor_points", [0, 0, 0], [1, 4, -1])
    else:
        stride, cells = _anchor_grid(sizes, strides)
        anchors = np.zeros((1, 4, n))
        anchors[0, :2] = (cells + 0.5) * stride
        if xyxy:
            anchors[0, 2:] = anchors[0, :2]
        stride_t = net.constant(stride.reshape(1, 1, n), f"{prefix}/strides")
        anchors_t = net.constant(anchors, f"{prefix}/anchor_points")
    scaled = net.mul(xywh, stride_t, f"{prefix}/mul_strides")
    return net.add(scaled, anchors_t, f"{prefix}/add_anchors")


def _cell_rows(net: Network, feats: list, strides: list[int], name: str, rows: np.ndarray) -> Any:
    """Per-position values of levels whose H, W are chosen at run time: row r = (rows[r, 0] * cell x + rows[r, 1]
    * cell y + rows[r, 2]) * stride, (1, R, N), positions ordered as _anchor_grid orders them; built from ramps
    over each feature map's runtime shape (`Network.linspace`)."""
    r = rows.shape[0]
    levels = []
    for i, (t, s) in enumerate(zip(feats, strides)):
        lv = f"{name}/level{i}"
        size = net.dims(t, lv, [0, 0, 1, 1], [1, 1, 0, 0])  # (1, 1, H, W)
        y = net.constant((rows[:, 2] * s).reshape(1, r, 1, 1), f"{lv}/offset")
        for axis, col, delta in (("x", 0, (0, 0, 0, s)), ("y", 1, (0, 0, s, 0))):
            ramp = net.linspace(size, f"{lv}/{axis}", 0.0, delta)  # cell * stride
            gain = net.constant(rows[:, col].reshape(1, r, 1, 1), f"{lv}/{axis}/gain")
            y = net.add(y, net.mul(ramp, gain, f"{lv}/{axis}/mul"), f"{lv}/{axis}/add")
        levels.append(net.shuffle(y, f"{lv}/flatten", reshape=(1, r, -1)))
    return levels[0] if len(levels) == 1 else net.concat(levels, f"{name}/concat", axis=2)


def _kpt_grid(net: Network, feats: list, strides: list[int], prefix: str, ndim: int, gain: float = 2.0,
              centre: float = 0.0) -> tuple[Any, Any]:
    """The keypoint gain (gain * stride on x, y) and offset ((cell + centre) * stride) (1, 1, ndim, N) for levels
    whose H, W are chosen at run time (the static path's constants `{prefix}/kpts/gain` and `/offset`)."""
    rows = np.zeros((2 * ndim, 3))
    rows[0, 2] = rows[1, 2] = gain
    rows[ndim, 0] = rows[ndim + 1, 1] = 1.0
    rows[ndim, 2] = rows[ndim + 1, 2] = centre
    grid = _cell_rows(net, feats, strides, f"{prefix}/kpts/grid", rows)
    return tuple(net.shuffle(net.slice(grid, f"{prefix}/kpts/{part}/rows", [0, k * ndim, 0], [1, ndim, -1]),
                             f"{prefix}/kpts/{part}", reshape=(1, 1, ndim, -1))
                 for k, part in enumerate(("gain", "offset")))


# ---------------------------------------------------------------- Ultralytics' heads and blocks netdef does not build

not_built("Ultralytics' oriented-box head (-obb models): it would need its angle branch cv4 decoded into rotated "
          "boxes (x, y, w, h, angle) and rotated NMS in `netdef detect`; netdef has neither",
          "OBB", "OBB26")
not_built("RT-DETR (yolov8-rtdetr, rtdetr-l/x): its transformer decoder (query selection, multi-scale deformable "
          "attention, denoising parts) and backbone blocks (HGStem, HGBlock, AIFI, RepC3, ResNetLayer) have no netdef "
          "blocks; export it with Ultralytics' own ONNX export instead",
          "RTDETRDecoder", "HGStem", "HGBlock", "AIFI", "RepC3", "ResNetLayer")
not_built("an open-vocabulary head (YOLO-World, YOLOE) with text or visual prompt embeddings: netdef has none",
          "WorldDetect", "YOLOEDetect", "YOLOESegment", "YOLOESegment26", "C2fAttn", "ImagePoolingAttn")
not_built("YOLOv10's one-to-one head: netdef builds YOLO26's end-to-end head, not v10Detect", "v10Detect")
