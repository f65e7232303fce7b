"""YOLOv5 blocks under Ultralytics' names, arguments and weight keys (`model.2.cv1.conv.weight`, ...).

Rows read like Ultralytics' model YAMLs: `[-1, 3, C3, [128]]`, `[[17, 20, 23], 1, Detect, [nc, anchors]]`.
`width_args`/`repeat_arg` make `depth_multiple`/`width_multiple` act as in Ultralytics' `parse_model`
(C3 receives the scaled `number` as `n`; channels become `ceil(c2 * gw / 8) * 8`).
"""
from __future__ import annotations

import math

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import defaults, trt_api
from ..errors import SpecError, WeightKeyError
from ..network import ACTIVATIONS, Network, parse_activation
from ..registry import Param, block, width_exemption
from .common import NC, class_count, upsample  # noqa: F401  (class_count re-exported)

BN_EPS = Param(1e-3, float, help="BatchNorm eps of Ultralytics' Conv: 1e-3 as their initialize_weights() sets it "
                                  "for detection models; classification models keep PyTorch's 1e-5",
               valid=(lambda v: 0 < v < math.inf, "a positive finite number"))


def _activation_text(text: str) -> bool:
    """Whether `text` names an activation `Network.activation` builds: a name, leaky:SLOPE or gelu:none|tanh (not
    an empty value: `--set default_act=` is a slip, `none` says no activation)."""
    if not text.strip():
        return False
    try:
        parse_activation(text, "default_act")
    except SpecError:
        return False
    return True


DEFAULT_ACT = Param("silu", str, help="the activation of Ultralytics' Conv where its act is True (SiLU; an "
                                      "Ultralytics YAML's `activation: nn.ReLU()` sets it): relu, leaky:0.1, ...",
                    valid=(_activation_text, f"one of {', '.join(ACTIVATIONS)}; leaky:SLOPE (a number), gelu:tanh"))


HEAD_PARAMS = {
    "head": Param("decode", str, ("decode", "plugin", "one2many"),
                  "decode: plain TensorRT layers, (B, N, 5 + nc) (YOLOv5), (B, 4 + nc, N) (YOLOv8/YOLO11), top-k "
                  "(B, max_det, 6) (end-to-end YOLO26); plugin: netdef's decode + NMS plugin (YOLOv5, YOLOv5-seg, "
                  "YOLOv8/YOLO11 detect, seg, pose): num_dets, boxes, scores, classes [+ mask_coefs, protos | "
                  "keypoints]; one2many: an "
                  "end-to-end head's one-to-many branch, (B, 4 + nc, N) for NMS"),
    "conf_thres": Param(defaults.CONF_THRES, float, help="plugin head: score threshold",
                        valid=(lambda v: 0 <= v < 1, "a score threshold in [0, 1)"), needs={"head": ("plugin",)}),
    "iou_thres": Param(None, float, help=f"plugin head: NMS IoU threshold (default {defaults.IOU_THRES} for YOLOv5 "
                                         f"as its detect.py, {defaults.IOU_THRES_ANCHOR_FREE} for YOLOv8/YOLO11 as "
                                         f"Ultralytics' predictor)",
                       valid=(lambda v: 0 < v <= 1, "an IoU threshold in (0, 1]"), needs={"head": ("plugin",)}),
    "max_det": Param(defaults.MAX_DET, int, help="plugin and end-to-end heads: boxes kept per image (a plain "
                                                  "decode head keeps every box: `netdef detect --max-det` limits them)",
                     valid=(lambda v: v >= 1, "at least 1")),
    "nc": NC,
}

STRIDE_PROBE = (1024, 1024)  # the input size at which a dynamic build's heads ask TensorRT for the feature sizes

block("nn.Upsample")(upsample)  # Ultralytics rows name torch's class: same block as `Upsample`


@width_exemption
def head_channels(params: dict) -> int | None:
    """YOLOv5's `no = na * (nc + 5)`: the one channel count width_multiple leaves alone (as parse_model)."""
    nc, anchors = params.get("nc"), params.get("anchors")
    if not isinstance(nc, int):
        return None
    if isinstance(anchors, list) and anchors and isinstance(anchors[0], list):
        return len(anchors[0]) // 2 * (nc + 5)
    if isinstance(anchors, int):
        return anchors * (nc + 5)
    return None


def _act(act: bool | str | None, net: Network | None = None) -> str:
    """Ultralytics' `act=True` is SiLU (`net`'s build parameter default_act, where given), `False` none; a string
    names a netdef activation."""
    if act is True:
        return "silu" if net is None else str(net.param("default_act"))
    if act is False or act is None:
        return "none"
    return str(act)


@block("Conv", width_args=("c2",), params={"bn_eps": BN_EPS, "default_act": DEFAULT_ACT})
def conv(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, p: int | None = None,
         g: int = 1, d: int = 1, act: bool | str = True) -> Any:
    """Conv2d (no bias) `prefix.conv` + BatchNorm `prefix.bn` (eps: build parameter bn_eps, folded) + SiLU;
    `p=None` pads 'same'."""
    return net.conv(x, f"{prefix}.conv", c2, k, s, p, g, d, bias=False, bn=f"{prefix}.bn", eps=net.param("bn_eps"),
                    act=_act(act, net))


@block("Bottleneck", width_args=("c2",))
def bottleneck(net: Network, x: Any, prefix: str, c2: int, shortcut: bool = True, g: int = 1,
               e: float = 0.5, k: Sequence[int] = (1, 3)) -> Any:
    """cv1 (k[0] x k[0], c2*e) -> cv2 (k[1] x k[1], c2), plus x when `shortcut` and the channel counts agree.
    YOLOv5's kernels are 1, 3 (the default); YOLOv8's 3, 3."""
    y = conv(net, x, f"{prefix}.cv1", int(c2 * e), int(k[0]), 1)
    y = conv(net, y, f"{prefix}.cv2", c2, int(k[1]), 1, g=g)
    return net.add(x, y, f"{prefix}/add", residual=True) if shortcut and net.channels(x) == c2 else y


@block("C3", width_args=("c2",), repeat_arg="n")
def c3(net: Network, x: Any, prefix: str, c2: int, n: int = 1, shortcut: bool = True, g: int = 1,
       e: float = 0.5) -> Any:
    """CSP bottleneck with 3 convolutions: cv3(cat(m(cv1(x)), cv2(x))), `n` Bottlenecks `m.0 ... m.{n-1}`."""
    return csp3(net, x, prefix, c2, n, e, lambda y, p, c: bottleneck(net, y, p, c, shortcut, g, e=1.0))


def csp3(net: Network, x: Any, prefix: str, c2: int, n: int, e: float,
         inner: Callable[[Any, str, int], Any]) -> Any:
    """C3's frame, shared by its variants (C3k, C3Ghost): cv3(cat(m(cv1(x)), cv2(x))) with hidden channels
    c2 * e and `m` the `n` blocks `inner(tensor, prefix.m.i, hidden channels)` in sequence."""
    c_ = int(c2 * e)
    a = conv(net, x, f"{prefix}.cv1", c_, 1, 1)
    for i in range(n):
        a = inner(a, f"{prefix}.m.{i}", c_)
    b = conv(net, x, f"{prefix}.cv2", c_, 1, 1)
    return conv(net, net.concat([a, b], f"{prefix}/concat"), f"{prefix}.cv3", c2, 1)


@block("SPP", width_args=("c2",))
def spp(net: Network, x: Any, prefix: str, c2: int, k: list[int] | tuple[int, ...] = (5, 9, 13)) -> Any:
    """Spatial pyramid pooling: cv2(cat(y, maxpool_k1(y), maxpool_k2(y), ...)) with y = cv1(x) (c1/2 channels)."""
    y = conv(net, x, f"{prefix}.cv1", net.channels(x) // 2, 1, 1)
    pools = [net.pool(y, "max", int(kk), 1, int(kk) // 2, name=f"{prefix}/maxpool{kk}") for kk in k]
    return conv(net, net.concat([y, *pools], f"{prefix}/concat"), f"{prefix}.cv2", c2, 1, 1)


@block("SPPF", width_args=("c2",))
def sppf(net: Network, x: Any, prefix: str, c2: int, k: int = 5, n: int | None = None,
         shortcut: bool | None = None) -> Any:
    """SPP-Fast: n (default 3) chained k x k max pools (3 equal SPP(k, 2k-1, 3k-2)); keys cv1, cv2.

    As Ultralytics' parse_model: a row giving only [c2, k] is the classic SPPF (SiLU after cv1); a row that also
    gives `n` or `shortcut` (YOLO26: [c2, k, n, shortcut]) has cv1 without activation, and with `shortcut` adds
    the input to the output when the channel counts agree."""
    modern = n is not None or shortcut is not None
    n = 3 if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SpecError(f"{prefix}: SPPF's n (max pools) must be a positive integer, got {n!r}")
    y = conv(net, x, f"{prefix}.cv1", net.channels(x) // 2, 1, 1, act=not modern)
    feats = [y]
    for i in range(n):
        feats.append(net.pool(feats[-1], "max", k, 1, k // 2, name=f"{prefix}/maxpool{i + 1}"))
    out = conv(net, net.concat(feats, f"{prefix}/concat"), f"{prefix}.cv2", c2, 1, 1)
    return net.add(x, out, f"{prefix}/add", residual=True) if shortcut and net.channels(x) == c2 else out


@block("Focus", width_args=("c2",))
def focus(net: Network, x: Any, prefix: str, c2: int, k: int = 1, s: int = 1, p: int | None = None,
          g: int = 1, act: bool | str = True) -> Any:
    """Space-to-depth (the four pixel phases stacked as channels, Ultralytics' order) then Conv `prefix.conv`; with
    H, W chosen at run time four strided slices (_phases), for the even sizes Focus takes."""
    c, shape = net.channels(x), tuple(x.shape)
    if min(shape[2:]) < 0:
        return conv(net, _phases(net, x, f"{prefix}/space_to_depth"), f"{prefix}.conv", c2, k, s, p, g, act=act)
    h, w = shape[2:]
    if h % 2 or w % 2:
        raise SpecError(f"{prefix}: Focus needs an even input height and width, got {h}x{w}")
    # (B, C, H/2, dy, W/2, dx) -> (B, dx, dy, C, H/2, W/2): channel block dx*2+dy matches x[..., dy::2, dx::2]
    split = net.shuffle(x, f"{prefix}/space_to_depth", reshape=(0, c, h // 2, 2, w // 2, 2), second=(0, 5, 3, 1, 2, 4))
    merge = net.shuffle(split, f"{prefix}/space_to_depth/reshape", reshape=(0, 4 * c, h // 2, w // 2))
    return conv(net, merge, f"{prefix}.conv", c2, k, s, p, g, act=act)


def _phases(net: Network, x: Any, name: str) -> Any:
    """x[..., dy::2, dx::2] (each H // 2 x W // 2 from the runtime shape) concatenated along the channels in
    Ultralytics' order (block dx * 2 + dy): Focus's space-to-depth where H, W are chosen at run time."""
    dims = net.layer("shape", f"{name}/shape", x).get_output(0)
    dt = trt_api.np_dtype(dims.dtype)
    size = net.layer("elementwise", f"{name}/size", dims, net.constant(np.array([1, 1, 2, 2], dt), f"{name}/two", dt),
                     net.trt.ElementWiseOperation.FLOOR_DIV).get_output(0)
    parts = []
    for dx in (0, 1):
        for dy in (0, 1):
            layer = net.layer("slice", f"{name}/phase{dx * 2 + dy}", x, (0, 0, dy, dx), (1, 1, 1, 1), (1, 1, 2, 2))
            layer.set_input(2, size)
            parts.append(layer.get_output(0))
    return net.concat(parts, name)


@block("Detect", params=HEAD_PARAMS)
def detect(net: Network, x: Any, prefix: str, nc: int, anchors: list | int | None = None,
           strides: list[int] | None = None, reg_max: int | None = None, end2end: bool = False) -> Any:
    """YOLOv5 head: 1x1 conv `prefix.m.{i}` per level, decoded as YOLOv5 v6/v7 inference to (B, N, 5 + nc)
    = (x, y, w, h in input pixels, objectness, class scores). Without `anchors`, the anchor-free YOLOv8/YOLO11
    head (netdef.blocks.yolo_heads.detect_anchor_free; `reg_max` DFL bins, by default the weights'): (B, 4 + nc,
    N), or with `end2end` YOLO26's top-k detections (B, max_det, 6).

    Anchors come from the weights (`prefix.anchors`, grid units; `prefix.anchor_grid`, pixels, in older
    checkpoints) or else from `anchors` (pixels per level, as in the YAML). Strides follow from the input
    and feature sizes unless given. With `--set head=plugin` the head ends in netdef's decode+NMS plugin
    (outputs num_dets, boxes, scores, classes; `conf_thres`, `iou_thres`, `max_det` via --set).
    """
    feats = list(x) if isinstance(x, (list, tuple)) else [x]
    if anchors is None:
        from .yolo_heads import detect_anchor_free  # imports this module

        return detect_anchor_free(net, feats, prefix, nc, reg_max, strides, end2end)
    if end2end or net.param("head") == "one2many":
        raise SpecError(f"{prefix}: the anchor-based YOLOv5 head has no end-to-end branch (end2end, head=one2many)")
    head = _anchor_setup(net, feats, prefix, nc, anchors, strides)
    if net.param("head") == "plugin":
        return _anchor_plugin(net, feats, prefix, head)
    raw = _level_convs(net, feats, prefix, head.na * head.no)
    levels = [_decode_level(net, r, f"{prefix}/level{i}", head.na, head.no, head.sizes[i], head.strides[i],
                            head.anchors_px[i]) for i, r in enumerate(raw)]
    return levels[0] if len(levels) == 1 else net.concat(levels, f"{prefix}/concat", axis=1)


# ---------------------------------------------------------------- Detect helpers

class AnchorHead(NamedTuple):
    """What an anchor-based head (YOLOv5's Detect, Segment) decodes with: anchors per level, classes, mask
    coefficients (0 for Detect), the levels' sizes (from `_spatial`), strides and anchors in pixels (nl, na, 2)."""

    na: int
    nc: int
    nm: int
    sizes: list[tuple[int, int]]
    strides: list[int]
    anchors_px: np.ndarray

    @property
    def no(self) -> int:
        """Outputs per anchor: x, y, w, h, objectness, classes, mask coefficients."""
        return 5 + self.nc + self.nm


def _anchor_setup(net: Network, feats: Sequence[Any], prefix: str, nc: Any, anchors: Any,
                  strides: list[int] | None, nm: int = 0) -> AnchorHead:
    """An anchor-based head's anchors, class count (checked against `prefix.m.0.bias`: na x (5 + nc + nm)), level
    sizes, strides and anchors in pixels; records the model (task detect, or segment with `nm` > 0)."""
    if not nm and net.has(f"{prefix}.proto.cv1.conv.weight"):  # its m.* outputs hold 32 mask coefficients too
        raise SpecError(f"{prefix}: the weights have a Segment head ({prefix}.proto.*), this architecture a Detect "
                        "head: build the -seg architecture (yolov5s-seg, ...)")
    na, yaml_px = _yaml_anchors(net, prefix, anchors, len(feats))
    key = f"{prefix}.m.0.bias"
    trained = net.weight_size(key) if net.has(key) else None
    fits = trained is not None and trained % na == 0 and trained // na > 5 + nm
    nc = class_count(net, prefix, nc, trained // na - 5 - nm if fits else None,
                     f"'{key}' has {trained} outputs = {na} anchors x (5 + nc{f' + nm={nm}' if nm else ''})")
    _check_outputs(net, prefix, na, nc, nm)
    sizes = [_spatial(net, t, prefix) for t in feats]
    stride_list = _strides(net, prefix, feats, strides, sizes)
    anchors_px = _anchors_px(net, prefix, len(feats), na, stride_list, yaml_px)
    net.built_values["anchors"] = [[int(v) if float(v).is_integer() else round(float(v), 2) for v in level.reshape(-1)]
                                   for level in anchors_px]  # the weights' (autoanchor), as the YAML writes them
    model = {"task": "segment" if nm else "detect", "nc": nc, "head": net.param("head")} | ({"nm": nm} if nm else {})
    net.record_model(**model, stride=int(max(stride_list)))
    return AnchorHead(na, nc, nm, sizes, stride_list, anchors_px)


def _level_convs(net: Network, feats: Sequence[Any], prefix: str, channels: int) -> list[Any]:
    """The anchor-based head's raw maps: per level the 1x1 Conv2d with bias `prefix.m.{i}` to `channels`."""
    return [net.conv(t, f"{prefix}.m.{i}", channels, 1, bias=True) for i, t in enumerate(feats)]


def _anchor_plugin(net: Network, feats: Sequence[Any], prefix: str, head: AnchorHead) -> dict[str, Any]:
    """head=plugin of an anchor-based head: the raw maps `prefix.m.{i}` through netdef's decode + NMS plugin
    (the mask coefficients, if any, as its extra channels)."""
    from ..plugins.yolo import add_yolo_decode_nms  # only plugin builds need it

    raw = _level_convs(net, feats, prefix, head.na * head.no)
    extra = {"extra": head.nm} if head.nm else {}  # Detect: the plugin's default (no extra channels)
    return add_yolo_decode_nms(net, raw, head.anchors_px, head.strides, head.nc, prefix, **nms_params(net), **extra)


def nms_params(net: Network, anchor_free: bool = False) -> dict[str, Any]:
    """The plugin head's NMS settings (build parameters conf_thres, iou_thres, max_det) as keyword arguments; an
    IoU threshold left out is the family's default (YOLOv5's detect.py, or Ultralytics' predictor for the
    anchor-free heads)."""
    params = {k: net.param(k) for k in ("conf_thres", "iou_thres", "max_det")}
    if params["iou_thres"] is None:
        params["iou_thres"] = defaults.IOU_THRES_ANCHOR_FREE if anchor_free else defaults.IOU_THRES
    return params


def _yaml_anchors(net: Network, prefix: str, anchors: Any, nl: int) -> tuple[int, np.ndarray | None]:
    """(anchors per level, YAML anchors in pixels (nl, na, 2) or None when only a count is given)."""
    if isinstance(anchors, int) and not isinstance(anchors, bool) and anchors > 0:
        return anchors, None
    ok = isinstance(anchors, (list, tuple)) and len(anchors) == nl and all(
        isinstance(a, (list, tuple)) and len(a) >= 2 and len(a) % 2 == 0 and len(a) == len(anchors[0])
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a) for a in anchors)
    if not ok:
        raise SpecError(f"{prefix}: anchors must be {nl} lists (one per input level) of w,h pixel pairs, the "
                          f"same count each, or a number of anchors per level; got {anchors!r}")
    arr = np.asarray(anchors, np.float64).reshape(nl, -1, 2)
    return arr.shape[1], arr


def _spatial(net: Network, t: Any, prefix: str) -> tuple[int, int]:
    """A level's (H, W), or (-1, -1) where the build's input size is dynamic: the head then builds its grids from
    the feature map's runtime shape."""
    shape = tuple(t.shape)
    if len(shape) != 4:
        raise SpecError(f"{prefix}: the head takes (B, C, H, W) feature maps, got {shape}")
    return (-1, -1) if min(shape[2:]) < 0 else (int(shape[2]), int(shape[3]))


def dynamic(sizes: Sequence[tuple[int, int]]) -> bool:
    """Whether levels of these sizes (from `_spatial`) get their H, W at run time."""
    return any(min(hw) < 0 for hw in sizes)


def _input_hw(net: Network, prefix: str) -> tuple[int, int]:
    if net.definition.num_inputs != 1:
        raise SpecError(f"{prefix}: cannot derive strides with {net.definition.num_inputs} network inputs; "
                          f"give Detect's 'strides'")
    shape = tuple(net.definition.get_input(0).shape)
    if len(shape) == 4:
        net.static_hw(net.definition.get_input(0), f"{prefix}: Detect")
    if len(shape) != 4 or shape[2] <= 0 or shape[3] <= 0:
        raise SpecError(f"{prefix}: cannot derive strides from input shape {shape}; give Detect's 'strides'")
    return int(shape[2]), int(shape[3])


def _strides(net: Network, prefix: str, feats: Sequence[Any], given: list[int] | None,
             sizes: Sequence[tuple[int, int]]) -> list[int]:
    """Each level's stride: input size / feature size (`sizes`, the levels' `_spatial`; must agree for H and W), or
    the `strides` argument. A dynamic build asks TensorRT for the feature sizes at a STRIDE_PROBE input (as
    Ultralytics probes with an image)."""
    if given is not None:
        if not isinstance(given, (list, tuple)) or len(given) != len(sizes) or not all(
                isinstance(s, int) and s > 0 for s in given):
            raise SpecError(f"{prefix}: strides must be {len(sizes)} positive integers, got {given!r}")
        return [int(s) for s in given]
    if dynamic(sizes):
        (in_h, in_w), probe = STRIDE_PROBE, " (the size a dynamic build probes the strides at)"
        sizes = net.hw_at(feats, STRIDE_PROBE, f"{prefix}: Detect")
    else:
        (in_h, in_w), probe = _input_hw(net, prefix), ""
    out = []
    for h, w in sizes:
        if in_h % h or in_w % w or in_h // h != in_w // w:
            raise SpecError(f"{prefix}: input {in_h}x{in_w}{probe} is not a multiple of the feature size {h}x{w}; "
                            f"use an input size divisible by the largest stride, or give Detect's 'strides'")
        out.append(in_h // h)
    return out


def _anchors_px(net: Network, prefix: str, nl: int, na: int, strides: list[int],
                yaml_px: np.ndarray | None) -> np.ndarray:
    """Anchors in pixels (nl, na, 2) float32: weights' `anchors` x stride, else the YAML's; `anchor_grid`
    (pixels, YOLOv5 <= v5.0 buffers) is consumed and must agree."""
    key, grid_key = f"{prefix}.anchors", f"{prefix}.anchor_grid"
    if net.has(key):
        px = net.weight(key, (nl, na, 2)).astype(np.float64) * np.asarray(strides, np.float64)[:, None, None]
    elif yaml_px is not None:
        px = yaml_px
    elif net.has(grid_key):
        px = None
    else:
        raise SpecError(f"{prefix}: the YAML gives only a number of anchors ({na}) and the weights have no "
                          f"'{key}': list the anchors in pixels")
    if net.has(grid_key):
        grid = net.weight(grid_key, (nl, na, 2)).astype(np.float64)
        if px is not None and not np.allclose(grid, px, rtol=1e-4, atol=1e-3):
            raise WeightKeyError(f"{prefix}: '{grid_key}' (pixels) disagrees with '{key}' x strides {strides}: "
                                 f"{grid.reshape(nl, -1).tolist()} vs {px.reshape(nl, -1).tolist()}", key=grid_key)
        px = grid
        net.derived.add(grid_key)
    strides_key = f"{prefix}.strides"  # tensorrtx's gen_wts.py for YOLOv5 v7.0 writes the strides too
    if net.has(strides_key):
        recorded = net.weight(strides_key, (nl,))
        if not np.array_equal(recorded, np.asarray(strides, np.float32)):
            raise WeightKeyError(f"{prefix}: '{strides_key}' {recorded.tolist()} disagrees with the network's "
                                 f"strides {strides}", key=strides_key)
        net.derived.add(strides_key)
    return np.ascontiguousarray(px, np.float32)


def _check_outputs(net: Network, prefix: str, na: int, nc: int, nm: int = 0) -> None:
    """The weights' head outputs must be na x (5 + nc + nm) (a count that no nc gives is another head)."""
    key = f"{prefix}.m.0.bias"
    if not net.has(key) or (outputs := net.weight_size(key)) == na * (5 + nc + nm):
        return
    if nm:
        raise WeightKeyError(f"{prefix}: the weights' '{key}' has {outputs} outputs; {na} anchors x (5 + nc + "
                             f"nm={nm}) needs {na * (5 + nc + nm)}: check nm, or these weights belong to a different "
                             f"head")
    raise WeightKeyError(f"{prefix}: the weights' '{key}' has {outputs} outputs; {na} anchors x (5 + nc) needs "
                         f"a multiple of {na} above {5 * na}: these weights belong to a different head")


def _decode_level(net: Network, raw: Any, name: str, na: int, no: int, hw: tuple[int, int], stride: int,
                  anchors_px: np.ndarray) -> Any:
    """(B, na*no, H, W) -> sigmoid -> xy = (2s - 0.5 + grid) * stride, wh = (2s)^2 * anchor -> (B, na*H*W, no).

    Computed as y * (y * Q + P) + GX + GY with small broadcast constants (rank 5, size-1 dims); levels whose H, W
    are chosen at run time by _decode_level_dynamic."""
    if min(hw) < 0:
        return _decode_level_dynamic(net, raw, name, na, no, stride, anchors_px)
    h, w = hw
    perm = net.shuffle(raw, f"{name}/permute", reshape=(0, na, no, h, w), second=(0, 1, 3, 4, 2))  # (B, na, H, W, no)
    y = net.activation(perm, "sigmoid", name)

    q = np.zeros((1, na, 1, 1, no), np.float32)
    q[0, :, 0, 0, 2:4] = 4.0 * anchors_px  # wh = 4 y^2 anchor
    p = np.ones((1, 1, 1, 1, no), np.float32)
    p[..., 0:2] = 2.0 * stride  # xy: 2 y stride
    p[..., 2:4] = 0.0
    gx = np.zeros((1, 1, 1, w, no), np.float32)
    gx[0, 0, 0, :, 0] = (np.arange(w) - 0.5) * stride
    gy = np.zeros((1, 1, h, 1, no), np.float32)
    gy[0, 0, :, 0, 1] = (np.arange(h) - 0.5) * stride

    t = net.add(net.mul(y, net.constant(q, f"{name}/wh_gain"), f"{name}/mul_q"),
                net.constant(p, f"{name}/gain"), f"{name}/add_p")
    t = net.mul(y, t, f"{name}/mul_y")
    t = net.add(t, net.constant(gx, f"{name}/grid_x"), f"{name}/add_grid_x")
    t = net.add(t, net.constant(gy, f"{name}/grid_y"), f"{name}/add_grid_y")
    return net.shuffle(t, f"{name}/reshape", reshape=(0, na * h * w, no))


def _decode_level_dynamic(net: Network, raw: Any, name: str, na: int, no: int, stride: int,
                          anchors_px: np.ndarray) -> Any:
    """_decode_level of a map whose H, W are chosen at run time: the same y * (y * Q + P) + grid in the
    (B, na*no, H, W) layout, the grid offsets ramps over the map's runtime shape (`Network.linspace`) put into
    each anchor's x and y channels, then the rows in _decode_level's order."""
    c = na * no
    q = np.zeros((na, no), np.float32)
    q[:, 2:4] = 4.0 * anchors_px
    p = np.ones((na, no), np.float32)
    p[:, 0:2], p[:, 2:4] = 2.0 * stride, 0.0
    y = net.activation(raw, "sigmoid", name)
    t = net.add(net.mul(y, net.constant(q.reshape(1, c, 1, 1), f"{name}/wh_gain"), f"{name}/mul_q"),
                net.constant(p.reshape(1, c, 1, 1), f"{name}/gain"), f"{name}/add_p")
    t = net.mul(y, t, f"{name}/mul_y")
    size = net.dims(raw, f"{name}/grid", [0, 0, 1, 1], [1, 1, 0, 0])  # (1, 1, H, W)
    for axis, delta in (("x", (0, 0, 0, stride)), ("y", (0, 0, stride, 0))):
        ramp = net.linspace(size, f"{name}/grid_{axis}", -0.5 * stride, delta)  # (cell - 0.5) * stride
        pick = np.zeros((na, no), np.float32)
        pick[:, 0 if axis == "x" else 1] = 1.0
        grid = net.mul(ramp, net.constant(pick.reshape(1, c, 1, 1), f"{name}/grid_{axis}/channel"),
                       f"{name}/grid_{axis}/mul")
        t = net.add(t, grid, f"{name}/add_grid_{axis}")
    return anchor_rows(net, t, name, na, no)


def anchor_rows(net: Network, t: Any, name: str, na: int, c: int) -> Any:
    """(B, na*c, H, W) with H, W chosen at run time -> (B, na*H*W, c), rows anchor-major then row-major cells as
    the static decode orders them: shuffles `{name}/permute` and `{name}/reshape`."""
    rows = net.shuffle(t, f"{name}/permute", reshape=(0, na, c, -1), second=(0, 1, 3, 2))  # (B, na, H*W, c)
    return net.shuffle(rows, f"{name}/reshape", reshape=(0, -1, c))
