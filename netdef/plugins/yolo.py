"""The YOLO decode + NMS plugin (`yolo_decode_nms/`): YOLOv5's Detect decode and non_max_suppression on the GPU.

`add_yolo_decode_nms` puts it after the raw Detect convolutions; the engine then outputs fixed-size
detections (num_dets, boxes, scores, classes) instead of the (B, N, 5+nc) prediction tensor.
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
OUTPUTS = ("num_dets", "boxes", "scores", "classes")
MAX_LEVELS, MAX_ANCHORS, MAX_TOPK = 8, 16, 32768  # as in yolo_decode_nms.h


def plugin_fields(anchors_px: np.ndarray, strides: Sequence[int], nc: int, conf_thres: float, iou_thres: float,
                  max_det: int, topk: int) -> dict[str, np.ndarray]:
    """The plugin's fields, checked (a NetdefError names the bad value)."""
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
        (int(nc) >= 1, f"nc={nc}"),
        (0.0 <= conf_thres < 1.0, f"conf_thres={conf_thres} (0 <= conf < 1)"),
        (0.0 < iou_thres <= 1.0, f"iou_thres={iou_thres} (0 < iou <= 1)"),
        (int(max_det) >= 1, f"max_det={max_det} (>= 1)"),
        (1 <= int(topk) <= MAX_TOPK, f"topk={topk} (1..{MAX_TOPK})"),
    ]
    bad = [what for ok, what in checks if not ok]
    if bad:
        raise NetdefError("YOLO decode/NMS plugin: bad " + "; ".join(bad))
    i32 = lambda v: np.asarray(v, dtype=np.int32).reshape(-1)  # noqa: E731
    f32 = lambda v: np.asarray(v, dtype=np.float32).reshape(-1)  # noqa: E731
    return {"nc": i32(nc), "na": i32(na), "nl": i32(nl), "strides": i32(strides), "anchors": f32(anchors),
            "conf_thres": f32(conf_thres), "iou_thres": f32(iou_thres), "max_det": i32(max_det), "topk": i32(topk)}


def add_yolo_decode_nms(net: Any, feats: Sequence[Any], anchors_px: np.ndarray, strides: Sequence[int], nc: int,
                        prefix: str, conf_thres: float = defaults.CONF_THRES, iou_thres: float = defaults.IOU_THRES,
                        max_det: int = defaults.MAX_DET, topk: int = defaults.MAX_NMS) -> dict[str, Any]:
    """Decode + class-aware NMS of the raw Detect maps `feats` ((B, na*(5+nc), H, W) each) in one plugin layer.

    `anchors_px` (nl, na, 2) in input pixels; `topk` caps the candidates entering NMS (YOLOv5's max_nms).
    Returns {"num_dets": (B,1) int32, "boxes": (B,K,4) float32 x1y1x2y2, "scores": (B,K) float32,
    "classes": (B,K) int32}, K = max_det. Records the plugin library in `net.plugins`.
    """
    trt_api.plugin_registry()  # TensorRT-RTX: the clear "no plugin layers" error
    fields = plugin_fields(anchors_px, strides, nc, conf_thres, iou_thres, max_det, topk)
    na, no = int(fields["na"][0]), int(nc) + 5
    if len(feats) != len(strides):
        raise NetdefError(f"{prefix}: {len(feats)} feature maps for {len(strides)} strides")
    for i, f in enumerate(feats):
        shape = tuple(f.shape)
        if len(shape) != 4 or shape[1] != na * no:
            raise NetdefError(f"{prefix}: feature map {i} has shape {shape}; the plugin needs (B, {na * no}, H, W) "
                              f"= (B, na*(5+nc), H, W) with na={na}, nc={nc}")
    lib = ensure_plugin(PLUGIN)
    try:
        creator = trt_api.find_plugin_creator(CREATOR, VERSION)
    except TensorRTUnavailable as e:
        raise NetdefError(f"{e}: {lib.path} loaded but did not register it (was it built for another "
                          "TensorRT?); delete it to force a rebuild") from None
    name = f"{prefix}/decode_nms"
    try:
        layer = trt_api.add_plugin(net.definition, list(feats), creator, name, fields)
    except TensorRTError as e:
        raise TensorRTError(f"{name}: {e}: {last_error(lib.path) or 'no reason given'}") from None
    if layer is None:
        raise TensorRTError(f"{name}: TensorRT refused the plugin layer: {last_error(lib.path) or 'see its messages'}")
    net.name(layer, name)
    outs = {}
    for i, key in enumerate(OUTPUTS):
        t = layer.get_output(i)
        t.name = f"{prefix}/{key}"
        outs[key] = t
    record_plugin(net, lib, {"layer": name, "conf_thres": float(conf_thres), "iou_thres": float(iou_thres),
                             "max_det": int(max_det), "topk": int(topk), "nc": int(nc),
                             "strides": [int(v) for v in fields["strides"]],
                             "anchors": [float(v) for v in fields["anchors"]]})
    return outs


def record_plugin(net: Any, lib: PluginLibrary, layer: dict[str, Any]) -> None:
    """Record the library in `net.plugins` (once) with this layer's settings (read by `netdef detect`)."""
    net.add_plugin_record(lib.entry() | {"creator": CREATOR, "version": VERSION}, layer)
