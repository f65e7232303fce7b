"""Refit against rebuilding, on a GPU: for each model, weights A and B (random, nothing downloaded), a plain
engine built cold and again from the timing cache, a refittable engine from the same cache, the refit of
that engine with B (end to end: reading the .wts, defining the network, TensorRT's refit, writing the file),
and the refittable engine's speed against the plain one (interleaved timing).

    python scripts/bench_refit.py --models resnet50,yolov5s --precision fp16 --workdir out/refit --json out/refit.json

Prints one table; `--opt-level` defaults to TensorRT's own level (3). A level-3 YOLOv5s cold build takes minutes:
run it apart (`netdef build ... --timing-cache Y.timing`) and pass `--timing-cache Y.timing` (the plain engine is
then built once, from that cache, and no cold figure is printed).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from netdef.build import BuildOptions, build_engine, parse_profiles
from netdef.cli.guard import run_guarded
from netdef.fileio import RESULTS_JSON, check_output
from netdef.refit import refit_file
from netdef.tools.bench import BenchSettings, bench_interleaved, require_gpu
from netdef.tools.report import format_ratios, write_json
from netdef.tools.timing import parse_budget
from netdef.wts import write_wts


def weights(model: str, seed: int, out: Path) -> Path:
    """A .wts of `model` with random weights and random BatchNorm statistics (seeded)."""
    import torch

    path = out / f"{model}_{seed}.wts"
    if path.is_file():
        return path
    if model == "yolov5s":
        from netdef.testing.yolov5_reference import reference_model

        _, sd = reference_model("yolov5s", seed=seed)
    else:
        from netdef.export import load_source, randomize_batchnorm

        torch.manual_seed(seed)
        m = load_source(f"torchvision:{model}")
        randomize_batchnorm(m, seed=seed)
        sd = m.state_dict()
    write_wts(path, sd)
    return path


def bench_model(model: str, a: argparse.Namespace, out: Path) -> dict[str, Any]:
    wa, wb = weights(model, 1, out), weights(model, 2, out)
    batch, profiles = parse_profiles(a.profile)
    cache = Path(a.timing_cache) if a.timing_cache else out / f"{model}_{a.precision}.timing"
    if not a.timing_cache:
        cache.unlink(missing_ok=True)  # the first build is a cold one

    def opts(refittable: bool) -> BuildOptions:
        return BuildOptions(precision=a.precision, batch=batch, profiles=profiles, opt_level=a.opt_level,
                            timing_cache=str(cache), refittable=refittable)

    plain, refittable = out / f"{model}_plain.engine", out / f"{model}_refittable.engine"
    # with --timing-cache the cold build ran elsewhere: one build from the cache is the warm figure
    cold = None if a.timing_cache else build_engine(model, wa, plain, opts(False), force=True).meta["build_seconds"]
    warm = build_engine(model, wa, plain, opts(False), force=True).meta["build_seconds"]
    refittable_build = build_engine(model, wa, refittable, opts(True), force=True).meta["build_seconds"]
    t0 = time.perf_counter()
    meta = refit_file(refittable, wb)
    refit_s = time.perf_counter() - t0
    settings = BenchSettings(warmup=parse_budget(a.warmup), measure=parse_budget(a.measure, "--measure"))
    results = bench_interleaved({"refittable": refittable, "plain": plain}, a.batches, settings, a.rounds)
    print(format_ratios(results, "refittable", "plain"))
    return {"model": model, "precision": a.precision, "profile": a.profile, "opt_level": a.opt_level,
            "cold_build_s": cold, "cache_build_s": warm, "refittable_cache_build_s": refittable_build,
            "refit_end_to_end_s": round(refit_s, 3), "refit_tensorrt_s": meta["refit"]["refit_seconds"],
            "weights_refitted": meta["refit"]["weights_set"], "timing": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet50,yolov5s")
    p.add_argument("--precision", default="fp16", choices=("fp32", "fp16"))
    p.add_argument("--profile", default="1:32:32", help="batch profile of both engines")
    p.add_argument("--opt-level", type=int, default=None)
    p.add_argument("--batches", type=lambda t: [int(v) for v in t.split(",")], default=[1, 32])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", default="30,0.5s")
    p.add_argument("--measure", default="300,1s")
    p.add_argument("--workdir", default="out/refit")
    p.add_argument("--json")
    p.add_argument("--timing-cache", help="an existing timing cache to start from (one model): the cold build ran "
                                          "separately, e.g. `netdef build --timing-cache`; the plain engine is then "
                                          "built once, from the cache")
    a = p.parse_args(argv)
    if a.timing_cache and "," in a.models:
        p.error("--timing-cache serves one model")
    if a.timing_cache and not Path(a.timing_cache).is_file():
        p.error(f"--timing-cache {a.timing_cache}: no such file (its builds would be cold, not from the cache)")
    if a.json:
        check_output(a.json, what="--json", kind=RESULTS_JSON)
    require_gpu()  # before any export or build: refits and timings need one
    out = Path(a.workdir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [bench_model(m, a, out) for m in a.models.split(",")]
    print(f"{'model':10} {'cold build':>11} {'cache build':>12} {'refittable':>11} {'refit (e2e)':>12} {'TRT refit':>10}")
    for r in rows:
        cold = "-" if r["cold_build_s"] is None else f"{r['cold_build_s']:.1f}s"
        print(f"{r['model']:10} {cold:>11}{'*' if r['cold_build_s'] is None else ' '}"
              f"{r['cache_build_s']:>11.1f}s "
              f"{r['refittable_cache_build_s']:>10.1f}s {r['refit_end_to_end_s']:>11.2f}s {r['refit_tensorrt_s']:>9.2f}s")
    if a.timing_cache:
        print("* the cold build ran separately (--timing-cache); every build here starts from that cache")
    if a.json:
        write_json(a.json, {"results": rows})
    print(json.dumps([{k: v for k, v in r.items() if k != "timing"} for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_guarded(main, prog="bench_refit"))
