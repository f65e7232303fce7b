"""The YOLO decode + NMS plugin (`yolo_decode_nms/`): YOLO post-processing on the GPU, one plugin for two heads.

`add_yolo_decode_nms` puts it after YOLOv5's raw Detect convolutions (layout 0: it decodes the anchor maps);
`add_anchor_free_nms` after the anchor-free YOLOv8/YOLO11 heads' decoded (B, 4 + nc + extra, N) prediction
(layout 1: boxes x, y, w, h in pixels, class probabilities, no objectness; NMS as Ultralytics'
non_max_suppression). The engine then outputs fixed-size detections (num_dets, boxes, scores, classes) and, with
`extra` channels per candidate (mask coefficients, keypoints), those of the kept boxes (B, max_det, extra).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import defaults, trt_api
from ..errors import NetdefError, TensorRTError, TensorRTUnavailable
from .compile import PluginLibrary, ensure_plugin, last_error

PLUGIN = "yolo_decode_nms"  # the source folder
CREATOR = "NetdefYoloDecodeNms"  # the TensorRT plugin type
VERSION = "1"
OUTPUTS = ("num_dets", "boxes", "scores", "classes")  # then "extras" when extra > 0
LAYOUT_ANCHORS, LAYOUT_DECODED = 0, 1  # the plugin's `layout` field
MAX_LEVELS, MAX_ANCHORS, MAX_TOPK = 8, 16, 32768  # as in yolo_decode_nms.h


def _i32(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.int32).reshape(-1)


def _f32(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float32).reshape(-1)


def _nms_fields(layout: int, nc: int, extra: int, conf_thres: float, iou_thres: float, max_det: int, topk: int,
                bad: list[str]) -> dict[str, np.ndarray]:
    """The fields both layouts have; raises a NetdefError naming every bad value (with `bad`, the caller's)."""
    checks = [
        (int(nc) >= 1, f"nc={nc}"),
        (int(extra) >= 0, f"extra={extra} (>= 0)"),
        (0.0 <= conf_thres < 1.0, f"conf_thres={conf_thres} (0 <= conf < 1)"),
        (0.0 < iou_thres <= 1.0, f"iou_thres={iou_thres} (0 < iou <= 1)"),
        (int(max_det) >= 1, f"max_det={max_det} (>= 1)"),
        (1 <= int(topk) <= MAX_TOPK, f"topk={topk} (1..{MAX_TOPK})"),
    ]
    bad = bad + [what for ok, what in checks if not ok]
    if bad:
        raise NetdefError("YOLO decode/NMS plugin: bad " + "; ".join(bad))
    return {"layout": _i32(layout), "nc": _i32(nc), "extra": _i32(extra), "conf_thres": _f32(conf_thres),
            "iou_thres": _f32(iou_thres), "max_det": _i32(max_det), "topk": _i32(topk)}


def plugin_fields(anchors_px: np.ndarray, strides: Sequence[int], nc: int, conf_thres: float, iou_thres: float,
                  max_det: int, topk: int, extra: int = 0) -> dict[str, np.ndarray]:
    """Layout 0 (YOLOv5 anchor maps): the plugin's fields, checked (a NetdefError names the bad values)."""
    anchors = np.asarray(anchors_px, dtype=np.float32)
    if anchors.ndim != 3 or anchors.shape[2] != 2:
        raise NetdefError(f"anchors_px must have shape (nl, na, 2), got {anchors.shape}")
    nl, na = anchors.shape[:2]
    checks = [
        (1 <= nl <= MAX_LEVELS, f"{nl} detection levels (1..{MAX_LEVELS} supported)"),
        (1 <= na <= MAX_ANCHORS, f"{na} anchors per level (1..{MAX_ANCHORS} supported)"),
        (len(strides) == nl, f"{len(strides)} strides for {nl} levels"),
        (all(int(s) == s and s > 0 for s in strides), f"strides {list(strides)} (positive integers)"),
        (bool(np.all(np.isfinite(anchors)) and np.all(anchors > 0)), "anchors (must be positive pixels)"),
    ]
    fields = _nms_fields(LAYOUT_ANCHORS, nc, extra, conf_thres, iou_thres, max_det, topk,
                         [what for ok, what in checks if not ok])
    return fields | {"na": _i32(na), "nl": _i32(nl), "strides": _i32(strides), "anchors": _f32(anchors)}


def decoded_fields(nc: int, extra: int, conf_thres: float, iou_thres: float, max_det: int,
                   topk: int) -> dict[str, np.ndarray]:
    """Layout 1 (one decoded anchor-free prediction): the plugin's fields, checked."""
    return _nms_fields(LAYOUT_DECODED, nc, extra, conf_thres, iou_thres, max_det, topk, [])


def add_yolo_decode_nms(net: Any, feats: Sequence[Any], anchors_px: np.ndarray, strides: Sequence[int], nc: int,
                        prefix: str, conf_thres: float = defaults.CONF_THRES, iou_thres: float = defaults.IOU_THRES,
                        max_det: int = defaults.MAX_DET, topk: int = defaults.MAX_NMS,
                        extra: int = 0) -> dict[str, Any]:
    """Decode + class-aware NMS of YOLOv5's raw Detect maps `feats` ((B, na*(5+nc+extra), H, W) each) in one
    plugin layer `{prefix}/decode_nms`.

    `anchors_px` (nl, na, 2) in input pixels; `topk` caps the candidates entering NMS (YOLOv5's max_nms); `extra`
    channels per anchor follow the class scores (YOLOv5-seg's mask coefficients, taken as they are).
    Returns {"num_dets": (B,1) int32, "boxes": (B,K,4) float32 x1y1x2y2, "scores": (B,K) float32,
    "classes": (B,K) int32[, "extras": (B,K,extra) float32]}, K = max_det. Records the plugin in `net.plugins`.
    """
    fields = plugin_fields(anchors_px, strides, nc, conf_thres, iou_thres, max_det, topk, extra)
    na, no = int(fields["na"][0]), int(nc) + 5 + int(extra)
    if len(feats) != len(strides):
        raise NetdefError(f"{prefix}: {len(feats)} feature maps for {len(strides)} strides")
    for i, f in enumerate(feats):
        shape = tuple(f.shape)
        if len(shape) != 4 or shape[1] != na * no:
            raise NetdefError(f"{prefix}: feature map {i} has shape {shape}; the plugin needs (B, {na * no}, H, W) "
                              f"= (B, na*(5+nc+extra), H, W) with na={na}, nc={nc}, extra={extra}")
    return _add(net, list(feats), fields, prefix)


def add_anchor_free_nms(net: Any, pred: Any, nc: int, prefix: str, extra: int = 0,
                        conf_thres: float = defaults.CONF_THRES, iou_thres: float = defaults.IOU_THRES,
                        max_det: int = defaults.MAX_DET, topk: int = defaults.MAX_NMS) -> dict[str, Any]:
    """Ultralytics' non_max_suppression (best class per box, class-aware, max_nms = `topk`) of an anchor-free head's
    prediction `pred` (B, 4 + nc + extra, N) (x, y, w, h pixels, class probabilities, `extra` channels such as mask
    coefficients or keypoints) in one plugin layer `{prefix}/decode_nms`. Returns the outputs as
    add_yolo_decode_nms does; "extras" holds the kept candidates' extra channels as they are."""
    fields = decoded_fields(nc, extra, conf_thres, iou_thres, max_det, topk)
    shape = tuple(pred.shape)
    channels = 4 + int(nc) + int(extra)
    if len(shape) != 3 or shape[1] != channels or shape[2] == 0 or shape[2] < -1:  # N -1: chosen at run time
        raise NetdefError(f"{prefix}: the prediction has shape {shape}; the plugin needs (B, {channels}, N) = "
                          f"(B, 4+nc+extra, N) with nc={nc}, extra={extra}")
    return _add(net, [pred], fields, prefix)


def add_plugin_layer(net: Any, inputs: list[Any], fields: dict[str, np.ndarray],
                     name: str) -> tuple[list[Any], PluginLibrary]:
    """The plugin layer `name` on `inputs` with `fields` (the library compiled on first use): its outputs and the
    library. TensorRT-RTX, which has no plugin layers, stops here with one clear error."""
    trt_api.plugin_registry()  # TensorRT-RTX: the clear "no plugin layers" error
    lib = ensure_plugin(PLUGIN)
    try:
        creator = trt_api.find_plugin_creator(CREATOR, VERSION)
    except TensorRTUnavailable as e:
        raise NetdefError(f"{e}: {lib.path} loaded but did not register it (was it built for another "
                          "TensorRT?); delete it to force a rebuild") from None
    try:
        layer = trt_api.add_plugin(net.definition, inputs, creator, name, fields)
    except TensorRTError as e:
        raise TensorRTError(f"{name}: {e}: {last_error(lib.path) or 'no reason given'}") from None
    if layer is None:
        raise TensorRTError(f"{name}: TensorRT refused the plugin layer: {last_error(lib.path) or 'see its messages'}")
    net.name(layer, name)
    return [layer.get_output(i) for i in range(layer.num_outputs)], lib


def _add(net: Any, inputs: list[Any], fields: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
    """Add the layer `{prefix}/decode_nms`, name its outputs `{prefix}/<output>`, record its settings."""
    name = f"{prefix}/decode_nms"
    try:
        tensors, lib = add_plugin_layer(net, inputs, fields, name)
    except TensorRTUnavailable as e:  # TensorRT-RTX: what builds here instead
        raise TensorRTUnavailable(f"{name}: {e}; it is the head `--set head=plugin` asks for: without that setting "
                                  "the head is plain layers (head=decode), which build here") from None
    keys = OUTPUTS + (("extras",) if int(fields["extra"][0]) > 0 else ())
    if len(tensors) != len(keys):
        raise TensorRTError(f"{name}: the plugin gave {len(tensors)} outputs, expected {len(keys)} ({', '.join(keys)})")
    outs = {}
    for key, t in zip(keys, tensors):
        t.name = f"{prefix}/{key}"
        outs[key] = t
    # float32 fields as their shortest decimal (0.45, not 0.449999988): the thresholds `netdef detect` compares
    settings = {k: (float(str(v[0])) if v.dtype == np.float32 else int(v[0])) for k, v in fields.items()
                if k in ("layout", "conf_thres", "iou_thres", "max_det", "topk", "nc", "extra")}
    if "strides" in fields:  # layout 0: its levels' strides and anchors (pixels)
        settings |= {"strides": [int(v) for v in fields["strides"]], "anchors": [float(v) for v in fields["anchors"]]}
    record_plugin(net, lib, {"layer": name, **settings})
    return outs


def record_plugin(net: Any, lib: PluginLibrary, layer: dict[str, Any]) -> None:
    """Record the library in `net.plugins` (once) with this layer's settings (read by `netdef detect`)."""
    net.add_plugin_record(lib.entry() | {"creator": CREATOR, "version": VERSION}, layer)
