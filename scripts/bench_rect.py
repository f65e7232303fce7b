#!/usr/bin/env python3
"""Rectangular against square letterboxing, one image at a time, images in memory -> boxes in host memory.

From one random-weight model (as compare_end_to_end.py: the score biases set so that about --candidates boxes per
photo pass --conf), two engines with the NMS plugin head at batch 1:
  static  built for 640x640 only (what a YOLO engine was before dynamic sizes)
  dynamic built with --input-shape MIN:OPT:MAX (default 320x320:640x640:1280x1280)
and three pipelines, each netdef's Detector (GPU letterbox, engine, boxes mapped to the original image):
  static square   the static engine, every photo letterboxed to 640x640
  dynamic square  the dynamic engine at the same 640x640
  dynamic rect    the dynamic engine, each photo letterboxed to the smallest multiple of the model's stride that
                  holds it at 640 (`netdef detect --rect`, Ultralytics' rectangular inference)
Inputs are scikit-image's photos (astronaut 512x512, coffee 400x600, chelsea 300x451, rocket 427x640), each call one
photo (batch 1). Reported per pipeline: images/s (wall clock, after warm-up) and the pixels the engine processed per
image; then each engine alone (`bench_engine`, the same CUDA graph setting) at every size the pipelines ran. The two
engines can also be timed in turn with `netdef bench DYNAMIC --against STATIC` (its OPT is 640x640).

    python scripts/bench_rect.py --precision fp16 --opt-level 3 --cuda-graph --json rect.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import compare_end_to_end as e2e  # this script's neighbour: photos, detection load, plugin params, timing
from netdef.build import build_engine
from netdef.cli.guard import run_guarded
from netdef.errors import NetdefError
from netdef.options import BuildOptions, parse_input_shape
from netdef.tools.bench import BenchSettings, bench_engine
from netdef.tools.environment import environment
from netdef.tools.report import write_json
from netdef.tools.timing import parse_budget

SQUARE = (640, 640)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=e2e.MODELS, default="yolov5s")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    p.add_argument("--input-shape", default="320x320:640x640:1280x1280",
                   help="the dynamic engine's MIN:OPT:MAX HxW (must hold 640x640)")
    p.add_argument("--opt-level", type=int, default=0, help="builder optimization level of both engines (default 0)")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--iou", type=float, default=0.45)
    p.add_argument("--max-det", type=int, default=100)
    p.add_argument("--candidates", type=int, default=200, help="boxes per photo above --conf before NMS")
    p.add_argument("--warmup", default="20,1s")
    p.add_argument("--measure", default="100,3s")
    p.add_argument("--cuda-graph", action="store_true", help="engines run as CUDA graph replays (one per shape)")
    p.add_argument("--timing-cache", metavar="DIR",
                   help="each engine's build reads and extends its timing cache in DIR")
    p.add_argument("--workdir", default="out/rect")
    p.add_argument("--json", help="results file (default WORKDIR/rect_MODEL.json)")
    return p


def build(a: argparse.Namespace, photos: list[np.ndarray], say: Callable[[str], None]) -> dict[str, Path]:
    """The static and the dynamic engine of one random-weight model, its detection load set on `photos`."""
    _, wts = e2e.detection_wts(a, photos, say)
    work = wts.parent
    tag = f"{a.precision}_o{a.opt_level}"
    engines = {"static": work / f"{a.model}_static640_{tag}.engine",
               "dynamic": work / f"{a.model}_dynamic_{tag}.engine"}
    for name, shape in (("static", {"input_hw": SQUARE}), ("dynamic", {"input_range": a.range})):
        opts = BuildOptions(precision=a.precision, opt_level=a.opt_level, params=e2e.plugin_params(a),
                            timing_cache=e2e.timing_cache_file(a, f"{engines[name].stem}.cache"), **shape)
        res = build_engine(a.model, wts, engines[name], opts, force=True, log=say)
        say(f"{name} engine: {engines[name]} ({res.meta['build_seconds']} s build)")
    return engines


def main(argv: list[str] | None = None) -> int:
    a = make_parser().parse_args(argv)
    _, a.range = parse_input_shape(a.input_shape)
    if a.range is None or not all(lo <= s <= hi for lo, s, hi in zip(a.range[0], SQUARE, a.range[2])):
        raise NetdefError(f"--input-shape {a.input_shape}: give a MIN:OPT:MAX range that holds 640x640")
    warmup, measure = parse_budget(a.warmup, "--warmup"), parse_budget(a.measure, "--measure")
    out = e2e.routes.results_file(a.json, a.workdir, f"rect_{a.model}.json")
    e2e.require_packages(a.model)
    from netdef.runtime import Engine
    from netdef.tools.detect import engine_detector

    e2e.require_gpu_and_trt("this benchmark")
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[rect +{time.perf_counter() - t0:5.0f}s] {msg}", flush=True)

    photos = e2e.photos_bgr()
    engines = build(a, photos, say)
    loaded = {name: Engine(path, cuda_graph=a.cuda_graph) for name, path in engines.items()}
    detectors = {"static square": engine_detector(loaded["static"]),
                 "dynamic square": engine_detector(loaded["dynamic"], input_hw=SQUARE),
                 "dynamic rect": engine_detector(loaded["dynamic"], input_hw=SQUARE, rect=True)}
    doc: dict[str, Any] = {"environment": environment(), "command": " ".join([sys.executable, *sys.argv]),
                           "model": a.model, "precision": a.precision, "opt_level": a.opt_level,
                           "input_range": a.range, "cuda_graph": a.cuda_graph, "batch": 1,
                           "images": {n: list(p.shape[:2]) for n, p in zip(e2e.PHOTOS, photos)},
                           "engines": {k: str(v) for k, v in engines.items()}, "results": [], "engine_alone": []}
    for name, det in detectors.items():
        shapes: list[tuple[int, int]] = []
        infer = det.infer
        det.infer = lambda batch, infer=infer: (shapes.append(tuple(batch.shape[2:])), infer(batch))[1]
        one = e2e.detector_pipeline(det)
        boxes = [int(one([p])[0][0].shape[0]) for p in photos]  # one pass: the sizes and the detections
        det.infer = infer
        stats = e2e.time_pipeline(lambda ims: [one([im]) for im in ims], photos, warmup, measure)
        pixels = sum(h * w for h, w in shapes) / len(shapes)
        doc["results"].append({"pipeline": name, "input_hw": [list(s) for s in shapes], "pixels_per_image": pixels,
                               "detections": boxes, **stats})
        write_json(out, doc)
        say(f"{name:14s}: {stats['throughput']:8.1f} img/s (median {stats['median_ms'] / len(photos):.3f} ms/img), "
            f"{pixels:9.0f} pixels/img, sizes {shapes}, detections {boxes}")
    sizes = sorted({tuple(hw) for r in doc["results"] for hw in r["input_hw"]})
    for name, hws in (("static", [SQUARE]), ("dynamic", sizes)):  # each engine alone at each size the pipelines ran
        for hw in hws:
            settings = BenchSettings(warmup=warmup, measure=measure, cuda_graph=a.cuda_graph,
                                     hw=hw if name == "dynamic" else None)
            stats = bench_engine(loaded[name], [1], settings, log=lambda m: None)[0]
            doc["engine_alone"].append({"engine": name, "input_hw": list(hw), **stats})
            write_json(out, doc)
            say(f"{name} engine alone at {hw[0]}x{hw[1]}: median {stats['median_ms']:.3f} ms, "
                f"p99 {stats['p99_ms']:.3f} ms ({stats['iters']} iters)")
    rows = {r["pipeline"]: r for r in doc["results"]}
    rect, square = rows["dynamic rect"], rows["dynamic square"]
    say(f"rect / square on the dynamic engine: {rect['throughput'] / square['throughput']:.2f}x img/s, "
        f"{rect['pixels_per_image'] / square['pixels_per_image']:.2f}x pixels")
    say(f"figures in {out}; engines timed in turn: netdef bench {engines['dynamic']} --against {engines['static']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(main, prog="bench_rect"))
