#!/usr/bin/env python3
"""YOLOv5s end to end on one GPU, in one run: images in memory -> boxes on the original images.

  netdef        netdef's GPU letterbox -> netdef engine ending in the decode + NMS plugin -> boxes
  onnx+cv2      cv2 letterbox on the CPU, HWC->CHW, upload, /255 (Ultralytics' detect.py pipeline) ->
                ONNX-route engine -> YOLOv5's non_max_suppression in torch (torchvision NMS) -> boxes
  onnx+gpu-pre  netdef's GPU letterbox -> ONNX-route engine -> the same torch NMS (isolates post-processing)

Both engines come from the same random-weight Ultralytics YOLOv5s (netdef/testing/yolov5_reference.py) at the same
precision, batch profile and builder optimization level (the ONNX engine is built as in
scripts/compare_routes.py). Inputs are scikit-image's photos (astronaut 512x512, coffee 400x600, chelsea
300x451, rocket 427x640) as BGR uint8 arrays, cycled to fill each batch. Every call ends with the boxes
in host memory; it is timed wall-clock (perf_counter) after warm-up. Detection counts of the pipelines
are printed next to each other. Random weights would put nearly every box above the threshold; the
objectness biases are set so that about --candidates boxes per photo pass it, as with a trained model.

    python scripts/compare_end_to_end.py --precision fp16 --batches 1,8,32 --opt-level 0 --json e2e.json
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import compare_routes as routes  # this script's neighbour: the model, ONNX export and ONNX engine build
from netdef.build import BuildOptions, build_engine, parse_batch
from netdef.cli.guard import run_guarded
from netdef.errors import NetdefError
from netdef.tools.bench import parse_batches
from netdef.tools.environment import environment
from netdef.tools.report import write_json
from netdef.tools.timing import parse_budget, run_budget, summarize
from netdef.tools.preprocess import letterbox_plan, pad_offsets, scale_boxes

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
PIPELINES = ("netdef", "onnx+cv2", "onnx+gpu-pre")
Boxes = list[tuple[Any, Any, Any]]


def photos_bgr() -> list[np.ndarray]:
    """scikit-image's colour photos as cv2.imread would give them (BGR uint8)."""
    try:
        from skimage import data
    except ImportError:
        raise NetdefError("the end-to-end comparison uses scikit-image's photos: pip install scikit-image") from None
    return [np.ascontiguousarray(getattr(data, name)()[..., ::-1]) for name in PHOTOS]


def set_detection_load(model: Any, images: list[np.ndarray], conf: float, per_image: int) -> float:
    """Give the random-weight model a trained model's score distribution: random weights put nearly all 25,200
    boxes above any threshold, which would time NMS on a load no real image gives. The Detect convolutions'
    weights are scaled by 0.1 and one offset is added to every objectness bias so that on average `per_image`
    boxes per photo pass the `conf` filter (objectness and best class score). Returns the offset."""
    import torch

    from netdef.tools.preprocess import letterbox

    detect = model.model[-1]
    feats: list[Any] = []
    hooks = [m.register_forward_pre_hook(lambda _, x: feats.append(x[0])) for m in detect.m]
    x, _ = letterbox(images, (640, 640), bgr=True, device=next(model.parameters()).device)
    with torch.no_grad():
        for m in detect.m:
            m.weight.mul_(0.1)
        model(x)
        for h in hooks:
            h.remove()
        logits = [m(f).view(f.shape[0], detect.na, detect.no, -1) for m, f in zip(detect.m, feats)]
        logits = torch.cat([t.permute(0, 1, 3, 2).reshape(f.shape[0], -1, detect.no) for t, f in zip(logits, feats)], 1)
        obj, cls = logits[..., 4], logits[..., 5:].sigmoid().max(-1).values

        def passing(offset: float) -> float:
            p = (obj + offset).sigmoid()
            return float(((p > conf) & (p * cls > conf)).sum()) / len(images)

        lo, hi = -50.0, 50.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if passing(mid) < per_image else (lo, mid)
        for m in detect.m:
            m.bias.view(detect.na, detect.no)[:, 4] += hi
    return hi


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
                 max_det: int) -> Callable[[Sequence[np.ndarray]], Boxes]:
    """The ONNX route as Ultralytics' detect.py runs it; `infer(x)` returns the (B, N, 5+nc) prediction."""
    from netdef.tools.detect import non_max_suppression

    def run(images: Sequence[np.ndarray]) -> Boxes:
        x, boxed = cv2_batch(images, hw, device)
        dets = non_max_suppression(infer(x), conf, iou, max_det)
        return [tuple(t.cpu() for t in (scale_boxes(bx, rp, im.shape), s, c))
                for (bx, s, c), (_, rp), im in zip(dets, boxed, images)]

    return run


def detector_pipeline(detector: Any) -> Callable[[Sequence[np.ndarray]], Boxes]:
    """netdef's Detector (GPU letterbox, then the engine's own outputs) with the boxes copied to the host."""
    def run(images: Sequence[np.ndarray]) -> Boxes:
        return [tuple(t.cpu() for t in det) for det in detector.detect_tensors(images, bgr=True)]

    return run


def time_pipeline(fn: Callable[[Sequence[np.ndarray]], Boxes], images: list[np.ndarray], warmup: Any,
                  measure: Any) -> dict[str, Any]:
    """Wall-clock per call (every pipeline returns host tensors, so a call ends when its work is done)."""
    import torch

    def step() -> float:
        t = time.perf_counter()
        fn(images)
        torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1e3

    run_budget(step, warmup)
    return summarize(run_budget(step, measure), len(images))


def breakdown(det: Any, onnx_infer: Callable[[Any], Any], images: list[np.ndarray],
              a: argparse.Namespace) -> dict[str, dict[str, Callable[[Sequence[np.ndarray]], Any]]]:
    """Each pipeline's stages as separately timed calls (inputs of later stages prepared once)."""
    from netdef.tools.detect import non_max_suppression
    from netdef.tools.preprocess import letterbox

    batch, _ = letterbox(images, det.input_hw, bgr=True, device=det.device)
    outs = det.infer(batch)
    x, _ = cv2_batch(images, det.input_hw, det.device)
    pred = onnx_infer(x)
    return {"netdef": {"letterbox": lambda ims: letterbox(ims, det.input_hw, bgr=True, device=det.device),
                       "engine": lambda ims: det.infer(batch),
                       "postprocess": lambda ims: det.postprocess(outs)},
            "onnx+cv2": {"letterbox": lambda ims: cv2_batch(ims, det.input_hw, det.device),
                         "engine": lambda ims: onnx_infer(x),
                         "nms": lambda ims: [tuple(t.cpu() for t in d)
                                             for d in non_max_suppression(pred, a.conf, a.iou, a.max_det)]}}


def count(dets: Boxes) -> list[int]:
    return [int(d[0].shape[0]) for d in dets]


def build_engines(a: argparse.Namespace, photos: list[np.ndarray], say: Callable[[str], None]) -> tuple[Path, Path]:
    """The netdef plugin engine and the ONNX-route engine from one random-weight YOLOv5s."""
    from netdef.export import export_wts

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model = routes.first_output(routes.load_model("yolov5s"))
    offset = set_detection_load(model.m.cuda(), photos, a.conf, a.candidates)
    model.m.cpu()
    say(f"objectness offset {offset:+.2f}: about {a.candidates} boxes per photo above conf {a.conf}")
    wts = work / "yolov5s.wts"
    export_wts(model.m, wts)
    tag = f"{a.precision}_b{'-'.join(map(str, a.profile_t))}_o{a.opt_level}"
    opts = BuildOptions(precision=a.precision, batch=a.profile_t, opt_level=a.opt_level,
                        extra={"head": "plugin", "conf_thres": a.conf, "iou_thres": a.iou, "max_det": a.max_det})
    plugin_engine = work / f"netdef_yolov5s_plugin_{tag}.engine"
    res = build_engine("yolov5s", wts, plugin_engine, opts, force=not a.reuse, log=say)
    say(f"netdef plugin engine: {plugin_engine} ({res.meta['build_seconds']} s build)")
    onnx_engine = work / f"onnx_yolov5s_{tag}.engine"
    if not (a.reuse and onnx_engine.is_file()):
        onnx = work / "yolov5s_fp32.onnx"
        routes.export_onnx(model, (3, 640, 640), onnx, False, "legacy", say)
        meta = routes.build_onnx_engine(onnx, onnx_engine, BuildOptions(precision=a.precision, batch=a.profile_t,
                                                                        opt_level=a.opt_level), "yolov5s (ONNX)", say)
        say(f"ONNX-route engine: {onnx_engine} ({meta['build_seconds']} s build)")
    return plugin_engine, onnx_engine


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--profile", help="MIN:OPT:MAX of both engines (default smallest:largest:largest batch)")
    p.add_argument("--opt-level", type=int, default=0, help="builder optimization level of both engines (default 0)")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=100)
    p.add_argument("--candidates", type=int, default=200,
                   help="boxes per photo above --conf before NMS, set through the objectness biases (default 200)")
    p.add_argument("--warmup", default="20,1s")
    p.add_argument("--measure", default="100,3s")
    p.add_argument("--workdir", default="out/e2e")
    p.add_argument("--reuse", action="store_true", help="keep engines from an earlier run")
    p.add_argument("--cuda-graph", action="store_true", help="both engines run as CUDA graph replays")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the stages (pre-processing, engine, post-processing) of netdef and onnx+cv2")
    p.add_argument("--json", help="results file (default WORKDIR/e2e_yolov5s.json)")
    a = p.parse_args(argv)
    import torch

    from netdef import trt_api
    from netdef.tools.detect import engine_detector
    from netdef.runtime import Engine

    batches = parse_batches(a.batches)
    a.profile_t = parse_batch(a.profile) if a.profile else (batches[0], batches[-1], batches[-1])
    warmup, measure = parse_budget(a.warmup, "--warmup"), parse_budget(a.measure, "--measure")
    if not torch.cuda.is_available() or not trt_api.can_run_engines():
        raise NetdefError("this comparison needs a CUDA GPU and full TensorRT "
                          f"(have {trt_api.version_string()}, GPU: {trt_api.gpu_identity() or 'none'})")
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[e2e +{time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    doc: dict[str, Any] = {"environment": environment(), "command": " ".join([sys.executable, *sys.argv]),
                           "precision": a.precision, "profile": a.profile_t, "opt_level": a.opt_level,
                           "thresholds": {"conf": a.conf, "iou": a.iou, "max_det": a.max_det},
                           "candidates_per_photo": a.candidates, "cuda_graph": a.cuda_graph,
                           "images": list(PHOTOS), "results": [], "detections": {}}
    out = Path(a.json or Path(a.workdir) / "e2e_yolov5s.json")
    photos = photos_bgr()
    plugin_engine, onnx_engine = build_engines(a, photos, say)
    netdef_det = engine_detector(Engine(plugin_engine, cuda_graph=a.cuda_graph), max_det=a.max_det)
    onnx_eng = Engine(onnx_engine, cuda_graph=a.cuda_graph)
    onnx_det = engine_detector(onnx_eng, conf=a.conf, iou=a.iou, max_det=a.max_det)
    out_name = onnx_eng.outputs[0].name

    def onnx_infer(x: Any) -> Any:
        return onnx_eng.infer({onnx_eng.inputs[0].name: x}, as_numpy=False)[out_name]

    pipes = {"netdef": detector_pipeline(netdef_det),
             "onnx+cv2": cv2_pipeline(onnx_infer, (640, 640), torch.device("cuda"), a.conf, a.iou, a.max_det),
             "onnx+gpu-pre": detector_pipeline(onnx_det)}
    doc["detections"] = {name: count(fn(photos)) for name, fn in pipes.items()}
    say(f"detections per photo {list(PHOTOS)}: {doc['detections']}")
    for b in batches:
        images = [photos[i % len(photos)] for i in range(b)]
        row = {}
        for name, fn in pipes.items():
            stats = time_pipeline(fn, images, warmup, measure)
            doc["results"].append({"pipeline": name, **stats})
            write_json(out, doc)
            row[name] = stats
            say(f"{name:13s} batch {b:3d}: median {stats['median_ms']:8.3f} ms, p90 {stats['p90_ms']:8.3f}, "
                f"{stats['throughput']:8.1f} img/s ({stats['iters']} iters)")
        if a.breakdown:
            for name, stages in breakdown(netdef_det, onnx_infer, images, a).items():
                for stage, fn in stages.items():
                    stats = time_pipeline(fn, images, warmup, measure)
                    doc["results"].append({"pipeline": name, "stage": stage, **stats})
                    say(f"  {name:13s} batch {b:3d} {stage:11s}: median {stats['median_ms']:8.3f} ms")
            write_json(out, doc)
        speed = row["netdef"]["throughput"] / row["onnx+cv2"]["throughput"]
        say(f"batch {b}: netdef / (onnx+cv2) throughput = {speed:.2f}x, "
            f"netdef / (onnx+gpu-pre) = {row['netdef']['throughput'] / row['onnx+gpu-pre']['throughput']:.2f}x")
        gc.collect()
    write_json(out, doc)
    say(f"figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, prog="compare_end_to_end"))
