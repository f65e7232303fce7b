#!/usr/bin/env python3
"""YOLO end to end on one GPU, in one run: images in memory -> boxes on the original images, in host memory.

YOLOv5s (`--model yolov5s`, the default):
  netdef        netdef's GPU letterbox -> netdef engine ending in the decode + NMS plugin -> boxes
  onnx+cv2      cv2 letterbox on the CPU, HWC->CHW, upload, /255 (Ultralytics' detect.py pipeline) ->
                ONNX-route engine -> YOLOv5's non_max_suppression in torch (torchvision NMS) -> boxes
  onnx+gpu-pre  netdef's GPU letterbox -> ONNX-route engine -> the same torch NMS (isolates post-processing)
YOLOv8 and YOLO11 detection (`--model yolov8n..x`, `yolo11n..x`):
  netdef        as above, the anchor-free head built with `--set head=plugin`
  ultralytics   Ultralytics' own predictor as a user calls it, `YOLO(engine, task="detect").predict(images, ...)`
                with a list of BGR arrays (cv2 letterbox, upload, the engine through its AutoBackend, its NMS,
                boxes scaled to the originals), then each Results' `boxes.data.cpu()`. The engine is the ONNX
                route's, written in Ultralytics' .engine format as `yolo export format=engine` writes it (4-byte
                little-endian metadata length, metadata JSON, plan), with the metadata of a dynamic-batch export.
                The engine takes 640x640 only (the batch is its one dynamic axis, as in netdef's), so predict gets
                `rect=False`: Ultralytics' letterbox then pads to 640x640 as netdef's does.
  onnx+gpu-pre  netdef's GPU letterbox -> the ONNX-route engine -> netdef's torch NMS

Both engines come from the same random-weight model (netdef/testing/yolov5_reference.py, ultralytics_reference.py)
at the same precision, batch profile and builder optimization level; the ONNX engine is built as in
scripts/compare_routes.py. Inputs are scikit-image's photos (astronaut 512x512, coffee 400x600, chelsea
300x451, rocket 427x640) as BGR uint8 arrays, cycled to fill each batch. Every call ends with the boxes
in host memory; it is timed wall-clock (perf_counter) after warm-up. Detection counts of the pipelines
are printed next to each other. Random weights would put nearly every box above the threshold; the
objectness (YOLOv5) or class (YOLOv8/YOLO11) biases are set so that about --candidates boxes per photo pass it,
as with a trained model.

    python scripts/compare_end_to_end.py --precision fp16 --batches 1,8,32 --opt-level 0 --json e2e.json
    python scripts/compare_end_to_end.py --model yolo11n --precision fp16 --batches 1,8 --cuda-graph
    python scripts/compare_end_to_end.py --model yolo11n --batches 1 --opt-level 3 --netdef-only --cuda-graph
    python scripts/compare_end_to_end.py --model yolo11n --batches 1 --opt-level 3 --netdef-only --cuda-graph \
        --letterbox-kernel --input-dtype float16      # the fused letterbox, into an engine of float16 input

`--netdef-only` builds and times netdef's pipeline alone (its own time, e.g. at a level whose ONNX-route build
takes longer than one wants to wait; no ratios).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import compare_routes as routes  # this script's neighbour: the models, ONNX export and ONNX engine build
from netdef.build import BuildOptions, build_engine, parse_batch
from netdef.cli.guard import run_guarded
from netdef.engine_file import read_plan
from netdef.errors import NetdefError, OptionError
from netdef.fileio import atomic_write, file_sha256
from netdef.tools.bench import parse_batches
from netdef.tools.environment import environment
from netdef.tools.report import write_json
from netdef.tools.timing import parse_budget, run_budget, summarize
from netdef.tools.preprocess import letterbox_plan, pad_offsets, scale_boxes

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
MODELS = ("yolov5s", *routes.ULTRALYTICS_DETECT)
HW = (640, 640)  # the engines' input size
LOGIT_SPREAD = 5.0  # standard deviation of the score logits (bias aside) set_detection_load gives YOLOv8/YOLO11
ONNX_NAMES = ("images", "output0")  # Ultralytics' exporter's names; its TensorRT backend binds "images"
Boxes = list[tuple[Any, Any, Any]]
Pipeline = Callable[[Sequence[np.ndarray]], Boxes]


def anchor_free(model_name: str) -> bool:
    """Whether `model_name` is a YOLOv8/YOLO11 detector (compared with Ultralytics' predictor)."""
    return model_name in routes.ULTRALYTICS_DETECT


def pipelines(model_name: str) -> tuple[str, str, str]:
    """The pipelines compared for `model_name`: netdef's, the reference it must beat, the ONNX engine with netdef's
    GPU letterbox."""
    return ("netdef", "ultralytics" if anchor_free(model_name) else "onnx+cv2", "onnx+gpu-pre")


def require_packages(model_name: str) -> None:
    """Fail before any model or GPU work when a package the comparison imports later is missing."""
    needs = [("cv2", "opencv-python"), ("skimage", "scikit-image")]
    if anchor_free(model_name):
        needs.append(("ultralytics", "ultralytics==8.4.190"))
    missing = [f"{module} (pip install {pkg})" for module, pkg in needs if importlib.util.find_spec(module) is None]
    if missing:
        raise NetdefError(f"the {model_name} end-to-end comparison needs {', '.join(missing)}")


def require_gpu_and_trt(what: str) -> None:
    """Stop before any work, naming what is here, unless PyTorch sees a CUDA GPU and TensorRT can run engines."""
    import torch

    from netdef import trt_api

    if not torch.cuda.is_available() or not trt_api.can_run_engines():
        raise NetdefError(f"{what} needs a CUDA GPU and full TensorRT "
                          f"(have {trt_api.version_string()}, GPU: {trt_api.gpu_identity() or 'none'})")


def photos_bgr() -> list[np.ndarray]:
    """scikit-image's colour photos as cv2.imread would give them (BGR uint8)."""
    try:
        from skimage import data
    except ImportError:
        raise NetdefError("the end-to-end comparison uses scikit-image's photos: pip install scikit-image") from None
    return [np.ascontiguousarray(getattr(data, name)()[..., ::-1]) for name in PHOTOS]


# ---------------------------------------------------------------- a trained model's detection load

def set_detection_load(model: Any, images: list[np.ndarray], conf: float, per_image: int) -> tuple[float, float]:
    """Give the random-weight model a trained model's score distribution: random weights put nearly all boxes
    above any threshold, which would time NMS on a load no real image gives. The weights of the head's last score
    convolutions (YOLOv5: Detect.m; YOLOv8/YOLO11: each cv3 branch's Conv2d) are scaled: YOLOv5's by 0.1 (its
    objectness logits then spread with a standard deviation of about 5 on these photos), YOLOv8/YOLO11's so that
    their class logits (bias aside) spread the same (random class branches give logits ten times wider). Then one
    offset is added to every objectness (YOLOv5) or class (YOLOv8/YOLO11) bias so that on average `per_image` boxes
    per photo pass the `conf` filter of the NMS (YOLOv5: objectness and objectness x best class score;
    YOLOv8/YOLO11: best class score). Returns (weight scale, bias offset)."""
    import torch

    from netdef.tools.preprocess import letterbox

    detect = model.model[-1]
    free = hasattr(detect, "cv3")
    convs = [branch[-1] for branch in detect.cv3] if free else list(detect.m)
    outs: list[Any] = []
    hooks = [c.register_forward_hook(lambda _m, _x, y: outs.append(y)) for c in convs]
    x, _ = letterbox(images, HW, bgr=True, device=next(model.parameters()).device)
    with torch.no_grad():
        try:
            model(x)
        finally:
            for h in hooks:
                h.remove()
        parts = [o - c.bias.view(1, -1, 1, 1) for o, c in zip(outs, convs)]  # the weights' share of the logits
        scale = LOGIT_SPREAD / float(torch.cat([t.flatten() for t in parts]).std()) if free else 0.1
        outs = [t * scale + c.bias.view(1, -1, 1, 1) for t, c in zip(parts, convs)]  # the logits once scaled
        if free:  # (B, N) best class logit (one offset for all classes: the best class stays the best)
            best = torch.cat([o.flatten(2) for o in outs], 2).amax(1)

            def passing(offset: float) -> float:
                return float(((best + offset).sigmoid() > conf).sum()) / len(images)
        else:  # (B, N, 5 + nc) per anchor
            logits = torch.cat([o.view(o.shape[0], detect.na, detect.no, -1).permute(0, 1, 3, 2)
                                .reshape(o.shape[0], -1, detect.no) for o in outs], 1)
            obj, best = logits[..., 4], logits[..., 5:].sigmoid().amax(-1)

            def passing(offset: float) -> float:
                p = (obj + offset).sigmoid()
                return float(((p > conf) & (p * best > conf)).sum()) / len(images)

        offset = bisect_offset(passing, per_image)
        for c in convs:
            c.weight.mul_(scale)
            if free:
                c.bias.add_(offset)
            else:
                c.bias.view(detect.na, detect.no)[:, 4] += offset
    return scale, offset


def bisect_offset(passing: Callable[[float], float], target: float, lo: float = -50.0, hi: float = 50.0) -> float:
    """The smallest offset in lo..hi (60 halvings) at which `passing`, rising with the offset, reaches `target`."""
    if passing(hi) < target:
        raise NetdefError(f"no bias offset up to {hi:+g} gives {target:g} boxes per photo above the threshold: "
                          f"lower --candidates or --conf")
    if passing(lo) >= target:
        raise NetdefError(f"a bias offset of {lo:+g} still leaves {passing(lo):g} boxes per photo above the "
                          f"threshold, at least {target:g}: raise --candidates or --conf")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if passing(mid) < target else (lo, mid)
    return hi


# ---------------------------------------------------------------- Ultralytics' engine file and predictor

def write_ultralytics_engine(path: str | Path, plan: bytes, metadata: dict[str, Any]) -> None:
    """An engine file as Ultralytics' exporter writes it (ultralytics/utils/export/engine.py onnx2engine): the
    metadata JSON's length (4 bytes, little-endian), the JSON (ASCII), the plan; written atomically. Ultralytics
    takes a file for a TensorRT engine by its `.engine` suffix."""
    path = Path(path)
    if path.suffix != ".engine":
        raise NetdefError(f"{path}: Ultralytics recognises TensorRT engines by the suffix .engine")
    text = json.dumps(metadata).encode("ascii")  # json.dumps escapes non-ASCII: one byte per character
    if not plan:
        raise NetdefError(f"{path}: no plan to write")
    atomic_write(path, [len(text).to_bytes(4, "little", signed=True), text, bytes(plan)])


def ultralytics_metadata(model: Any, name: str, batch: int, precision: str) -> dict[str, Any]:
    """The metadata Ultralytics' exporter embeds (engine/exporter.py: `self.metadata`, `args` of the TensorRT
    format) for a dynamic-batch detection export of `model` at 640x640 with at most `batch` images: AutoBackend
    then neither pads a smaller batch to `batch` nor splits one."""
    import ultralytics

    return {"description": f"ONNX-route TensorRT engine of a random-weight Ultralytics {name}, written by netdef's "
                           f"scripts/compare_end_to_end.py in Ultralytics' format",
            "author": "netdef scripts/compare_end_to_end.py", "version": ultralytics.__version__,
            "stride": int(max(model.stride)), "task": "detect", "head": type(model.model[-1]).__name__,
            "batch": batch, "imgsz": list(HW), "names": {int(k): str(v) for k, v in model.names.items()},
            "args": {"batch": batch, "data": None, "dynamic": True, "quantize": 16 if precision == "fp16" else None,
                     "opset": 17, "simplify": False, "workspace": None, "nms": False, "fraction": 1.0},
            "channels": 3, "end2end": False}


def import_yolo() -> Any:
    """Ultralytics' YOLO class (its settings file kept out of the user's home), or a NetdefError naming what is
    missing for its predictor."""
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.gettempdir())
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        from ultralytics import YOLO
        import ultralytics.models.yolo.detect.predict  # noqa: F401  (what predict() loads: fail here, not mid-run)
    except ImportError as e:
        raise NetdefError(f"Ultralytics' predictor cannot be imported ({e}): pip install ultralytics==8.4.190 "
                          f"with its dependencies") from None
    return YOLO


def ultralytics_pipeline(engine: str | Path, a: argparse.Namespace) -> tuple[Pipeline, Any]:
    """Ultralytics' predictor over an Ultralytics-format `engine`, as a user calls it: (run(images) -> per image
    (boxes, scores, classes) on the host, the YOLO object)."""
    model = import_yolo()(str(engine), task="detect")
    kwargs = predict_kwargs(a)

    def run(images: Sequence[np.ndarray]) -> Boxes:
        return [(d[:, :4], d[:, 4], d[:, 5]) for d in (r.boxes.data.cpu() for r in model.predict(list(images),
                                                                                               **kwargs))]

    return run, model


def predict_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    """The predict() arguments: the comparison's thresholds and input size (module docstring: rect=False)."""
    return {"conf": a.conf, "iou": a.iou, "max_det": a.max_det, "imgsz": HW[0], "rect": False, "verbose": False}


def ultralytics_stages(model: Any, images: list[np.ndarray], a: argparse.Namespace) -> dict[str, Pipeline]:
    """The predictor's own three stages (those its `speed` reports), inputs of later stages prepared once:
    preprocess (cv2 LetterBox, stack, upload, BGR->RGB, /255), inference (AutoBackend: the engine), postprocess
    (NMS, boxes scaled to the originals, Results; boxes copied to the host)."""
    import torch

    model.predict(images, **predict_kwargs(a))  # the predictor set up for these images (batch, paths, source)
    p = model.predictor
    with torch.inference_mode():
        im = p.preprocess(images)
        preds = p.inference(im)

    def stage(fn: Callable[[Sequence[np.ndarray]], Any]) -> Pipeline:
        def run(ims: Sequence[np.ndarray]) -> Any:
            with torch.inference_mode():
                return fn(ims)

        return run

    return {"letterbox": stage(lambda ims: p.preprocess(list(ims))),
            "engine": stage(lambda ims: p.inference(im)),
            "postprocess": stage(lambda ims: [r.boxes.data.cpu() for r in p.postprocess(preds, im, list(ims))])}


# ---------------------------------------------------------------- the YOLOv5 reference: cv2 + torch NMS

def cv2_letterbox(im: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, tuple[float, tuple[float, float]]]:
    """Ultralytics' letterbox (auto=False) with cv2: resize INTER_LINEAR, pad with 114; BGR HxWx3 uint8."""
    import cv2

    r, (nh, nw), (ph, pw) = letterbox_plan(im.shape[0], im.shape[1], hw)
    if (nh, nw) != im.shape[:2]:
        im = cv2.resize(im, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = pad_offsets((nh, nw), (ph, pw))
    im = cv2.copyMakeBorder(im, top, ph - nh - top, left, pw - nw - left, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return im, (r, (float(left), float(top)))


def cv2_batch(images: Sequence[np.ndarray], hw: tuple[int, int], device: Any) -> tuple[Any, list]:
    """cv2 letterbox each image, BGR HWC -> RGB CHW, stack, upload, /255: ((B, 3, H, W) float32, per-image
    (letterboxed image, ratio_pad))."""
    import torch

    boxed = [cv2_letterbox(im, hw) for im in images]
    x = np.ascontiguousarray(np.stack([b[0] for b in boxed]).transpose(0, 3, 1, 2)[:, ::-1])
    return torch.from_numpy(x).to(device).float() / 255.0, boxed


def cv2_pipeline(infer: Callable[[Any], Any], hw: tuple[int, int], device: Any, conf: float, iou: float,
                 max_det: int) -> Pipeline:
    """The ONNX route as Ultralytics' detect.py runs it; `infer(x)` returns the (B, N, 5+nc) prediction."""
    from netdef.tools.detect import non_max_suppression

    def run(images: Sequence[np.ndarray]) -> Boxes:
        x, boxed = cv2_batch(images, hw, device)
        dets = non_max_suppression(infer(x), conf, iou, max_det)
        return [tuple(t.cpu() for t in (scale_boxes(bx, rp, im.shape), s, c))
                for (bx, s, c), (_, rp), im in zip(dets, boxed, images)]

    return run


def cv2_stages(det: Any, onnx_infer: Callable[[Any], Any], images: list[np.ndarray],
               a: argparse.Namespace) -> dict[str, Pipeline]:
    """onnx+cv2's stages as separately timed calls (inputs of later stages prepared once)."""
    from netdef.tools.detect import non_max_suppression

    x, _ = cv2_batch(images, det.input_hw, det.device)
    pred = onnx_infer(x)
    return {"letterbox": lambda ims: cv2_batch(ims, det.input_hw, det.device),
            "engine": lambda ims: onnx_infer(x),
            "nms": lambda ims: [tuple(t.cpu() for t in d) for d in non_max_suppression(pred, a.conf, a.iou, a.max_det)]}


# ---------------------------------------------------------------- netdef's Detector

def detector_pipeline(detector: Any) -> Pipeline:
    """netdef's Detector (GPU letterbox, then the engine's own outputs) with the boxes copied to the host."""
    def run(images: Sequence[np.ndarray]) -> Boxes:
        return [tuple(t.cpu() for t in det) for det in detector.detect_tensors(images, bgr=True)]

    return run


def netdef_stages(det: Any, images: list[np.ndarray], input_dtype: str = "float32") -> dict[str, Pipeline]:
    """netdef's stages as separately timed calls (inputs of later stages prepared once; the engine's in its input
    type `input_dtype`, so that its stage holds no conversion)."""
    import torch

    from netdef.tools.preprocess import letterbox

    def boxed(ims: Sequence[np.ndarray]) -> Any:
        return letterbox(ims, det.input_hw, bgr=True, device=det.device, kernel=det.letterbox_kernel)[0]

    batch = boxed(images).to(getattr(torch, input_dtype))
    outs = det.infer(batch)
    return {"letterbox": boxed,
            "engine": lambda ims: det.infer(batch),
            "postprocess": lambda ims: det.postprocess(outs)}


# ---------------------------------------------------------------- timing

def time_pipeline(fn: Pipeline, images: list[np.ndarray], warmup: Any, measure: Any) -> dict[str, Any]:
    """Wall-clock per call (every pipeline returns host tensors, so a call ends when its work is done)."""
    import torch

    def step() -> float:
        t = time.perf_counter()
        fn(images)
        torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1e3

    run_budget(step, warmup)
    return summarize(run_budget(step, measure), len(images))


def count(dets: Boxes) -> list[int]:
    return [int(d[0].shape[0]) for d in dets]


# ---------------------------------------------------------------- engines

def detection_wts(a: argparse.Namespace, photos: list[np.ndarray], say: Callable[[str], None]) -> tuple[Any, Path]:
    """The random-weight model of --model with the detection load of --candidates and --conf on `photos` (said),
    back on the CPU, and its weights written to WORKDIR/MODEL_random.wts: (model, .wts path)."""
    from netdef.export import export_wts

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model = routes.first_output(routes.load_model(a.model))
    scale, offset = set_detection_load(model.m.cuda(), photos, a.conf, a.candidates)
    model.m.cpu()
    say(f"score weights x{scale:.4g}, {'class' if anchor_free(a.model) else 'objectness'} bias offset {offset:+.2f}: "
        f"about {a.candidates} boxes per photo above conf {a.conf}")
    wts = routes.weights_file(work, a.model)
    export_wts(model.m, wts)
    return model, wts


def plugin_params(a: argparse.Namespace) -> dict[str, Any]:
    """The build parameters of the decode + NMS plugin head at --conf, --iou and --max-det."""
    return {"head": "plugin", "conf_thres": a.conf, "iou_thres": a.iou, "max_det": a.max_det}


def timing_cache_files(a: argparse.Namespace, tag: str) -> dict[str, str | None]:
    """Each route's timing cache in --timing-cache DIR (made), named as compare_routes.py names them
    (ROUTE_MODEL_TAG.cache, or shared_MODEL_TAG.cache for both with --shared-timing-cache); None without it."""
    return {route: timing_cache_file(a, routes.cache_name(route, f"{a.model}_{tag}", a.shared_timing_cache))
            for route in ("netdef", "onnx")}


def timing_cache_file(a: argparse.Namespace, name: str) -> str | None:
    """DIR/NAME with --timing-cache DIR (DIR made), None without it."""
    if not a.timing_cache:
        return None
    Path(a.timing_cache).mkdir(parents=True, exist_ok=True)
    return str(Path(a.timing_cache) / name)


def build_engines(a: argparse.Namespace, photos: list[np.ndarray], say: Callable[[str], None]) -> dict[str, Path]:
    """From one random-weight model: the netdef engine with the plugin head ("netdef"), the ONNX-route engine
    ("onnx") and, for YOLOv8/YOLO11, the same plan in Ultralytics' format ("ultralytics"); with --netdef-only
    netdef's alone."""
    model, wts = detection_wts(a, photos, say)
    work = wts.parent
    tag = f"{a.precision}_b{'-'.join(map(str, a.profile_t))}_o{a.opt_level}"
    # named as compare_routes.py names them, so both scripts share one folder of caches
    caches = timing_cache_files(a, tag)
    opts = dataclasses.replace(a.build_options, timing_cache=caches["netdef"], params=plugin_params(a),
                               input_dtype=a.input_dtype)
    key = file_sha256(wts)[:10]  # --reuse keeps an ONNX-route engine of these weights only (netdef's: build_engine)
    typed = "" if a.input_dtype == "float32" else f"_{a.input_dtype}_input"
    engines = {"netdef": work / f"netdef_{a.model}_plugin_{tag}{typed}.engine",
               "onnx": work / f"onnx_{a.model}_{tag}_{key}.engine"}
    res = build_engine(a.model, wts, engines["netdef"], opts, force=not a.reuse, log=say)
    say(f"netdef plugin engine: {engines['netdef']} ({res.meta['build_seconds']} s build)")
    if a.netdef_only:
        return {"netdef": engines["netdef"]}
    fresh = not (a.reuse and engines["onnx"].is_file())
    if fresh:
        half = routes.half_onnx(a.precision)
        onnx = work / f"{a.model}_{'fp16' if half else 'fp32'}.onnx"
        routes.export_onnx(model, (3, *HW), onnx, half, "legacy", say, names=ONNX_NAMES)
        meta = routes.build_onnx_engine(onnx, engines["onnx"], dataclasses.replace(a.build_options,
                                                                                   timing_cache=caches["onnx"]),
                                        f"{a.model} (ONNX)", say)
        say(f"ONNX-route engine: {engines['onnx']} ({meta['build_seconds']} s build)")
    if anchor_free(a.model):
        engines["ultralytics"] = work / f"ultralytics_{a.model}_{tag}_{key}.engine"
        if fresh or not engines["ultralytics"].is_file():
            write_ultralytics_engine(engines["ultralytics"], read_plan(engines["onnx"])[1],
                                     ultralytics_metadata(model.m, a.model, a.profile_t[2], a.precision))
            say(f"the ONNX-route plan in Ultralytics' format: {engines['ultralytics']}")
    return engines


# ---------------------------------------------------------------- arguments and the run

def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="yolov5s",
                   help="yolov5s (against cv2 + torch NMS) or a YOLOv8/YOLO11 detector (against Ultralytics' "
                        "predictor); default yolov5s")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--profile", help="MIN:OPT:MAX of both engines (default smallest:largest:largest batch)")
    p.add_argument("--opt-level", type=int, default=0, help="builder optimization level of both engines (default 0)")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=100)
    p.add_argument("--candidates", type=int, default=200,
                   help="boxes per photo above --conf before NMS, set through the objectness (YOLOv5) or class "
                        "(YOLOv8/YOLO11) biases (default 200)")
    p.add_argument("--warmup", default="20,1s")
    p.add_argument("--measure", default="100,3s")
    p.add_argument("--workdir", default="out/e2e")
    p.add_argument("--reuse", action="store_true", help="keep engines from an earlier run")
    p.add_argument("--timing-cache", metavar="DIR",
                   help="each route's builds read and extend its timing cache in DIR, named as compare_routes.py "
                        "names them (ROUTE_MODEL_PRECISION_bMIN-OPT-MAX_oLEVEL.cache; default: no cache)")
    p.add_argument("--shared-timing-cache", action="store_true",
                   help="with --timing-cache: both routes read and extend one cache (shared_MODEL_....cache), so "
                        "the second build reuses the first's kernel timings and both choose from the same ones")
    p.add_argument("--cuda-graph", action="store_true",
                   help="netdef's pipeline (upload, letterbox, engine, outputs to the host) and the ONNX-route "
                        "engine with netdef's pre-processing run as CUDA graph replays (Ultralytics' predictor "
                        "decides for itself; --breakdown times the stages without graphs)")
    p.add_argument("--letterbox-kernel", action="store_true",
                   help="netdef's letterbox (its pipeline's and the ONNX-route engine's with it) as netdef's fused "
                        "CUDA kernel (compiled with nvcc on first use) instead of torch operations")
    p.add_argument("--input-dtype", choices=("float32", "float16"), default="float32",
                   help="netdef's engine input type (float16: with --cuda-graph the letterbox writes half precision "
                        "into the engine's input; without graphs the engine converts the float32 batch; the "
                        "ONNX-route engine keeps float32 input)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the stages (pre-processing, engine, post-processing) of netdef and the reference")
    p.add_argument("--netdef-only", action="store_true",
                   help="build and time netdef's pipeline alone (no ONNX-route engine, no reference: no ratios), "
                        "e.g. netdef's own time at a level whose ONNX-route build takes too long")
    p.add_argument("--json", help="results file (default WORKDIR/e2e_MODEL.json)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments (a NetdefError names a bad value); adds batches_l, profile_t, build_options
    (both engines' BuildOptions, validated here: a bad --profile or --opt-level fails before any work) and
    budgets."""
    a = make_parser().parse_args(argv)
    a.batches_l = parse_batches(a.batches)
    a.profile_t = parse_batch(a.profile, "--profile") if a.profile else (a.batches_l[0], a.batches_l[-1],
                                                                         a.batches_l[-1])
    profile = a.profile or ":".join(map(str, a.profile_t))
    a.build_options = BuildOptions(precision=a.precision, batch=a.profile_t, opt_level=a.opt_level)
    try:
        a.build_options.validate()
    except OptionError as e:
        raise OptionError(f"--profile {profile} / --opt-level {a.opt_level}: {e}") from None
    routes.check_covered(a.batches_l, a.profile_t, profile)
    if not 0 < a.conf < 1 or not 0 < a.iou <= 1:
        raise NetdefError(f"--conf {a.conf} / --iou {a.iou}: need 0 < conf < 1 and 0 < iou <= 1")
    if a.max_det < 1 or a.candidates < 1:
        raise NetdefError(f"--max-det {a.max_det} / --candidates {a.candidates}: must be at least 1")
    if a.shared_timing_cache and not a.timing_cache:
        raise OptionError("--shared-timing-cache needs --timing-cache DIR (the folder of the one cache)")
    a.warmup_budget, a.measure_budget = parse_budget(a.warmup, "--warmup"), parse_budget(a.measure, "--measure")
    a.pipelines = pipelines(a.model)[:1] if a.netdef_only else pipelines(a.model)
    a.json_path = routes.results_file(a.json, a.workdir, f"e2e_{a.model}.json")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    require_packages(a.model)
    import torch

    from netdef.tools.detect import engine_detector
    from netdef.runtime import Engine

    require_gpu_and_trt("this comparison")
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[e2e +{time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    ours = a.pipelines[0]
    doc: dict[str, Any] = {"environment": environment(), "command": " ".join([sys.executable, *sys.argv]),
                           "model": a.model, "pipelines": list(a.pipelines),
                           "precision": a.precision, "profile": a.profile_t, "opt_level": a.opt_level,
                           "thresholds": {"conf": a.conf, "iou": a.iou, "max_det": a.max_det},
                           "candidates_per_photo": a.candidates, "cuda_graph": a.cuda_graph,
                           "letterbox_kernel": a.letterbox_kernel, "netdef_input_dtype": a.input_dtype,
                           "images": list(PHOTOS), "results": [], "detections": {}}
    out = a.json_path
    photos = photos_bgr()
    engines = build_engines(a, photos, say)
    netdef_det = engine_detector(Engine(engines["netdef"], cuda_graph=a.cuda_graph), max_det=a.max_det,
                                 letterbox_kernel=a.letterbox_kernel)
    pipes = {ours: detector_pipeline(netdef_det)}
    stages: dict[str, Callable[[list[np.ndarray]], dict[str, Pipeline]]] = {
        ours: lambda images: netdef_stages(netdef_det, images, a.input_dtype)}
    if not a.netdef_only:
        ref, gpu_pre = a.pipelines[1:]
        onnx_eng = Engine(engines["onnx"], cuda_graph=a.cuda_graph)
        onnx_det = engine_detector(onnx_eng, conf=a.conf, iou=a.iou, max_det=a.max_det,
                                   letterbox_kernel=a.letterbox_kernel)
        out_name = onnx_eng.outputs[0].name

        def onnx_infer(x: Any) -> Any:
            return onnx_eng.infer({onnx_eng.inputs[0].name: x}, as_numpy=False)[out_name]

        if anchor_free(a.model):
            pipes[ref], yolo = ultralytics_pipeline(engines["ultralytics"], a)
            stages[ref] = lambda images: ultralytics_stages(yolo, images, a)
        else:
            pipes[ref] = cv2_pipeline(onnx_infer, HW, torch.device("cuda"), a.conf, a.iou, a.max_det)
            stages[ref] = lambda images: cv2_stages(netdef_det, onnx_infer, images, a)
        pipes[gpu_pre] = detector_pipeline(onnx_det)
    most = a.profile_t[2]  # the photos in batches the engines take
    doc["detections"] = {name: [n for i in range(0, len(photos), most) for n in count(fn(photos[i:i + most]))]
                         for name, fn in pipes.items()}
    if anchor_free(a.model) and not a.netdef_only:
        import ultralytics

        backend = yolo.predictor.model.backend
        doc["ultralytics"] = {"version": ultralytics.__version__, "engine": str(engines["ultralytics"]),
                              "call": f"YOLO(engine, task='detect').predict(images, **{predict_kwargs(a)})",
                              "cuda_graph": getattr(backend, "graph", None) is not None}
        say(f"Ultralytics {ultralytics.__version__} predictor, its CUDA graph: {doc['ultralytics']['cuda_graph']}")
    say(f"detections per photo {list(PHOTOS)}: {doc['detections']}")
    for b in a.batches_l:
        images = [photos[i % len(photos)] for i in range(b)]
        row = {}
        for name, fn in pipes.items():
            stats = time_pipeline(fn, images, a.warmup_budget, a.measure_budget)
            doc["results"].append({"pipeline": name, **stats})
            write_json(out, doc)
            row[name] = stats
            say(f"{name:13s} batch {b:3d}: median {stats['median_ms']:8.3f} ms, p90 {stats['p90_ms']:8.3f}, "
                f"{stats['throughput']:8.1f} img/s ({stats['iters']} iters)")
        if a.breakdown:
            for name, make_stages in stages.items():
                for stage, fn in make_stages(images).items():
                    stats = time_pipeline(fn, images, a.warmup_budget, a.measure_budget)
                    doc["results"].append({"pipeline": name, "stage": stage, **stats})
                    say(f"  {name:13s} batch {b:3d} {stage:11s}: median {stats['median_ms']:8.3f} ms")
            write_json(out, doc)
        if not a.netdef_only:
            say(f"batch {b}: {ours} / {ref} throughput = {row[ours]['throughput'] / row[ref]['throughput']:.2f}x, "
                f"{ours} / {gpu_pre} = {row[ours]['throughput'] / row[gpu_pre]['throughput']:.2f}x")
        gc.collect()
    write_json(out, doc)
    say(f"figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, prog="compare_end_to_end"))
