#!/usr/bin/env python
"""Compare four inference routes for one PyTorch model on one GPU, in one run:

  netdef   .wts export -> netdef build (network-definition API) -> engine
  onnx     torch.onnx.export (opset 17, dynamic batch) -> TensorRT's ONNX parser -> engine
           (same TensorRT, precision, optimization profile and builder optimization level)
  eager    PyTorch eager (fp32; fp16 through model.half())
  compile  torch.compile (mode 'default' unless --compile-mode; compile time is reported and budgeted)

Every route is timed by netdef.tools.bench.time_callable (CUDA events, one call at a time), and both
engines by netdef.tools.bench.bench_engine. Results are printed as they come and rewritten to the JSON
after each one, so a cut run keeps its figures. See docs/benchmarks.md.

    python scripts/compare_routes.py --quick --markdown                       # ~6 min on an H100
    python scripts/compare_routes.py --model resnet50 --precision fp32,fp16 --json r50.json --markdown
    python scripts/compare_routes.py --model yolov5s --precision fp16 --opt-level 0 --json y5s.json
    python scripts/compare_routes.py --model yolo11n --precision fp16 --opt-level 0 --routes netdef,onnx
    python scripts/compare_routes.py --report r50.json                        # tables from a JSON, no GPU
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from netdef import trt_api
from netdef.build import BuildOptions, build_engine, format_profiles, parse_profiles
from netdef.compiler import compile_engine
from netdef.engine_file import read_meta
from netdef.cli.guard import run_guarded
from netdef.errors import NetdefError
from netdef.fileio import RESULTS_JSON, check_output, file_sha256
from netdef.tools.bench import BenchSettings, bench_engine, parse_batches
from netdef.tools.environment import environment
from netdef.tools.report import write_json
from netdef.tools.timing import parse_budget, time_callable

MODELS: dict[str, dict[str, Any]] = {
    "resnet50": {"arch": "resnet50", "shape": (3, 224, 224), "batches": [1, 8, 32, 256]},
    "yolov5s": {"arch": "yolov5s", "shape": (3, 640, 640), "batches": [1, 8, 32]},
    # the model zoo (netdef/architectures): torchvision's models, the same state_dict keys
    "mobilenet_v2": {"arch": "mobilenet_v2", "shape": (3, 224, 224), "batches": [1, 64]},
    "efficientnet_b0": {"arch": "efficientnet_b0", "shape": (3, 224, 224), "batches": [1, 64]},
    "vit_b_16": {"arch": "vit_b_16", "shape": (3, 224, 224), "batches": [1, 64]},
}
# Ultralytics' YOLOv8 and YOLO11 detectors (netdef.testing.ultralytics_reference makes them, random weights)
ULTRALYTICS_DETECT = tuple(f"{family}{scale}" for family in ("yolov8", "yolo11") for scale in "nsmlx")
MODELS.update({name: {"arch": name, "shape": (3, 640, 640), "batches": [1, 8, 32]} for name in ULTRALYTICS_DETECT})
ROUTES = ("netdef", "onnx", "eager", "compile")
LABELS = {"netdef": "netdef", "onnx": "ONNX→TRT", "eager": "eager", "compile": "torch.compile"}
DYNAMO_RECOMPILE_LIMIT = 1024  # compiled entries per code object (torch's default: 8); see route_compile
QUICK = {"model": "resnet50", "precision": "fp16", "batches": "1,256", "opt_level": 3, "profile": "1:256:256",
         "compile_budget": 150.0}


def built_state(state: str, meta: dict[str, Any]) -> str:
    """The timing cache a build had: `state` ("warm" or "cold", as the file was), or "refused" where TensorRT would
    not use the file (the engine header says; the build timed its tactics without it)."""
    return "refused" if meta.get("timing_cache") == "refused" else state


# ---------------------------------------------------------------- the record (JSON, rewritten after each result)


class Record:
    """The run's JSON document; `save()` after each addition keeps a cut run's figures."""

    def __init__(self, path: Path, append: bool):
        self.path = path
        self.doc: dict[str, Any] = {"builds": [], "timing_cache": [], "results": [], "skipped": [], "errors": [],
                                    "runs": []}
        if append and path.is_file():
            self.doc.update(json.loads(path.read_text()))

    def add(self, section: str, item: dict[str, Any]) -> None:
        self.doc[section].append(item)
        self.save()

    def save(self) -> None:
        write_json(self.path, self.doc)


# ---------------------------------------------------------------- markdown

def markdown_tables(doc: dict[str, Any]) -> str:
    """Tables for docs/benchmarks.md: median latency per route and batch with the netdef/ONNX ratio,
    then build times and the timing-cache experiment. 'n/m' = not measured."""
    res: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in doc.get("results", []):
        res[(r["route"], r["precision"], r["batch"])] = r
    keys = sorted({(p, b) for _, p, b in res}, key=lambda k: (k[0], k[1]))
    lines = []
    env = doc.get("environment", {})
    if env:
        lines.append(f"{doc.get('model', '?')} on {env.get('device')} (driver {env.get('driver')}), "
                     f"{env.get('tensorrt')}, torch {env.get('torch')}; median latency in ms (img/s)")
        lines.append("")
    lines.append("| precision | batch | netdef | ONNX→TRT | netdef/ONNX | eager | torch.compile |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for p, b in keys:
        cells = []
        for route in ROUTES:
            r = res.get((route, p, b))
            cells.append("n/m" if r is None else f"{r['median_ms']:.3f} ({r['throughput']:.0f})")
        nd, ox = res.get(("netdef", p, b)), res.get(("onnx", p, b))
        ratio = f"{nd['median_ms'] / ox['median_ms']:.2f}" if nd and ox else "n/m"
        lines.append(f"| {p} | {b} | {cells[0]} | {cells[1]} | {ratio} | {cells[2]} | {cells[3]} |")
    builds = doc.get("builds", [])
    if builds:
        lines += ["", "| route | precision | opt level | profile | build s | timing cache |", "|---|---|---:|---|---:|---|"]
        for bd in builds:
            level = "default" if bd.get("opt_level") is None else bd["opt_level"]
            lines.append(f"| {LABELS.get(bd['route'], bd['route'])} | {bd['precision']} | {level} | "
                         f"{profile_text(bd['profile']) if bd.get('profile') else '-'} | "
                         f"{bd['seconds']:.1f} | {bd.get('timing_cache', '-')} |")
    cache = doc.get("timing_cache", [])
    if cache:
        lines += ["", "| timing cache | precision | opt level | cold build s | warm build s | speed-up |",
                  "|---|---|---:|---:|---:|---:|"]
        for c in cache:
            level = "default" if c.get("opt_level") is None else c["opt_level"]
            cold = "n/m" if c.get("cold_s") is None else f"{c['cold_s']:.1f}"
            speed = "n/m" if c.get("speedup") is None else f"{c['speedup']:.1f}x"
            lines.append(f"| netdef | {c['precision']} | {level} | {cold} | {c['warm_s']:.1f} | {speed} |")
    return "\n".join(lines)


def profile_text(profile: list) -> str:
    """A record's profile: [1, 8, 32] -> '1:8:32'; [[1, 1, 4], [5, 32, 32]] -> '1:1:4,5:32:32'."""
    return format_profiles(profile if profile and isinstance(profile[0], list) else [profile])


# ---------------------------------------------------------------- models

def load_model(name: str) -> Any:
    """The PyTorch model (eval, CPU, fp32); random weights are enough for timing. Seeded, so a later run
    (`--reuse`) gets the same weights and finds its engines up to date."""
    import torch

    torch.manual_seed(0)

    if name in ULTRALYTICS_DETECT:
        from netdef.testing.ultralytics_reference import reference_model as ultralytics_model

        try:
            return ultralytics_model(name, seed=0)[0].eval()
        except ImportError as e:
            raise NetdefError(f"the {name} reference model needs Ultralytics' code (pip install --no-deps "
                              f"ultralytics==8.4.190): {e}") from None
    if name != "yolov5s":  # torchvision's
        from netdef.export import load_source, randomize_batchnorm

        model = load_source(f"torchvision:{name}")
        randomize_batchnorm(model, seed=0)
        return model.eval()
    from netdef.testing.yolov5_reference import reference_model

    try:
        made = reference_model("yolov5s")
    except ImportError as e:
        raise NetdefError(f"the YOLOv5 reference model needs Ultralytics' code (pip install --no-deps "
                          f"yolov5==7.0.14): {e}") from None
    model = made[0] if isinstance(made, tuple) else made  # reference_model returns (model, state_dict)
    if not isinstance(model, torch.nn.Module):
        raise NetdefError(f"reference_model('yolov5s') returned {type(model).__name__}, not a torch module")
    return model.eval()


def first_output(model: Any) -> Any:
    """Wrap a model so every route computes the same single tensor (YOLOv5 eval returns (pred, maps))."""
    import torch

    class First(torch.nn.Module):
        def __init__(self, m: Any):
            super().__init__()
            self.m = m

        def forward(self, x: Any) -> Any:
            y = self.m(x)
            return y[0] if isinstance(y, (tuple, list)) else y

    return First(model).eval()


def half_onnx(precision: str) -> bool:
    """Whether the ONNX route needs an fp16 export for `precision`. Weakly typed TensorRT (8.6) takes an fp32 model
    and the FP16 flag, as trtexec --fp16; strongly typed TensorRT computes in the types the ONNX file carries."""
    return precision == "fp16" and trt_api.info().strongly_typed


def export_onnx(model: Any, shape: tuple[int, ...], path: Path, half: bool, exporter: str, log: Callable,
                names: tuple[str, str] = ("input", "output")) -> float:
    """torch.onnx.export with a dynamic batch axis (opset 17), input and output named `names`; returns seconds.
    Exported to a temporary file renamed to `path` once complete: a failed or interrupted export leaves no part
    that --reuse would take for the model."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    m = copy.deepcopy(model).to(device)
    x = torch.randn(2, *shape, device=device)  # not 1: torch.export would specialize a size-1 batch axis
    if half:
        m, x = m.half(), x.half()
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"opset_version": 17, "input_names": [names[0]], "output_names": [names[1]]}
    if exporter == "legacy":
        kwargs.update(dynamic_axes={names[0]: {0: "batch"}, names[1]: {0: "batch"}}, dynamo=False)
    else:
        kwargs.update(dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}}, dynamo=True)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    part = path.with_name(f".{path.name}.part.onnx")
    try:
        # nn.MultiheadAttention's eval fast path (a fused kernel, aten::_native_multi_head_attention, which
        # ONNX cannot express; ViT hits it) is off while exporting, so attention exports as matmuls and softmax
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad():
            torch.onnx.export(m, (x,), str(part), **kwargs)
    except BaseException as e:
        part.unlink(missing_ok=True)
        if not isinstance(e, Exception):  # Ctrl-C
            raise
        raise NetdefError(f"torch.onnx.export ({exporter} exporter) failed: {type(e).__name__}: {e}; "
                          f"try --onnx-exporter {'dynamo' if exporter == 'legacy' else 'legacy'}") from None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    os.replace(part, path)
    seconds = time.perf_counter() - t0
    log(f"exported {path} ({path.stat().st_size / 2**20:.1f} MiB, {exporter} exporter) in {seconds:.1f} s")
    del m
    return seconds


# ---------------------------------------------------------------- the ONNX route's engine

def build_onnx_engine(onnx_path: Path, out: Path, opts: BuildOptions, label: str, log: Callable) -> dict[str, Any]:
    """Parse ONNX with TensorRT's parser and compile it with netdef's own compile step (same builder settings,
    profiles, timing cache and metadata), so both engines run through the same code."""
    opts.validate()
    t0 = time.perf_counter()
    builder = trt_api.create_builder()
    network, strong = trt_api.create_network(builder)
    parser = trt_api.parse_onnx(network, str(onnx_path))  # noqa: F841  (kept alive until the build ends)
    sha = file_sha256(onnx_path)
    meta = compile_engine(builder, network, opts, out, strongly_typed=strong,
                          arch={"name": label, "path": str(onnx_path), "sha256": sha},
                          weights={"path": str(onnx_path), "sha256": sha}, log=log, tag="onnx", route="onnx")
    return dict(meta, parse_and_build_seconds=round(time.perf_counter() - t0, 2))


# ---------------------------------------------------------------- the run

def cache_name(route: str, tag: str, shared: bool) -> str:
    """A route's timing-cache file name, ROUTE_TAG.cache, or with `shared` (--shared-timing-cache) the one both
    routes use, shared_TAG.cache (compare_end_to_end.py names its caches alike)."""
    return f"{'shared' if shared else route}_{tag}.cache"


class Run:
    def __init__(self, args: argparse.Namespace):
        self.a = args
        self.t0 = time.perf_counter()
        self.m = MODELS[args.model]
        self.workdir = Path(args.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rec = Record(args.json_path, args.append)
        self.settings = BenchSettings(warmup=args.warmup_budget, measure=args.measure_budget)
        self.cache_dir = Path(args.timing_cache) if args.timing_cache else self.workdir / "timing-cache"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if not args.timing_cache:  # fresh caches per run, the first netdef build cold: this run's files, no others
            for precision in args.precisions:
                for route in ("netdef", "onnx"):  # the routes that build engines
                    self._cache_file(route, precision)[0].unlink(missing_ok=True)
        self.failed = False

    def say(self, msg: str) -> None:
        print(f"[compare +{time.perf_counter() - self.t0:5.0f}s] {msg}", flush=True)

    def tag(self, precision: str) -> str:
        level = "" if self.a.opt_level is None else f"_o{self.a.opt_level}"
        profiles = format_profiles(self.opts(precision, None).all_profiles, "_", "-")
        return f"{self.a.model}_{precision}_b{profiles}{level}{'_d' if self.a.detailed else ''}"

    def opts(self, precision: str, cache: Path | None) -> BuildOptions:
        return BuildOptions(precision=precision, batch=self.a.profile_t, profiles=self.a.profiles_t,
                            opt_level=self.a.opt_level,
                            tf32=self.a.tf32, workspace_mib=self.a.workspace, detailed=self.a.detailed,
                            timing_cache=str(cache) if cache else None)

    def attempt(self, what: str, precision: str, fn: Callable[[], None]) -> None:
        """Run one route; a failure is printed and recorded, and the other routes still run."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001  keep the other routes' figures; the exit code says it failed
            self.failed = True
            self.say(f"FAILED {what} {precision}: {type(e).__name__}: {e}")
            self.rec.add("errors", {"route": what, "precision": precision, "error": f"{type(e).__name__}: {e}"})
        finally:
            gc.collect()
            import torch

            torch.cuda.empty_cache()

    def main(self) -> int:
        import torch

        a = self.a
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = a.tf32
        env = environment()
        old_env = self.rec.doc.get("environment")
        if old_env and (old_env.get("device"), old_env.get("tensorrt")) != (env["device"], env["tensorrt"]):
            raise NetdefError(f"--append: {self.rec.path} holds figures from {old_env.get('device')} / "
                              f"{old_env.get('tensorrt')}, this is {env['device']} / {env['tensorrt']}")
        if self.rec.doc.get("model", a.model) != a.model:
            raise NetdefError(f"--append: {self.rec.path} holds {self.rec.doc['model']} figures, not {a.model}")
        self.rec.doc.update(environment=env, model=a.model)
        self.rec.doc["runs"].append({"command": " ".join([sys.executable, *sys.argv]), "started":
                                     datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     "settings": self.settings_record()})
        self.rec.save()
        self.say(f"{a.model} on {env['device']} (driver {env['driver']}), {env['tensorrt']}, torch {env['torch']}; "
                 f"routes {','.join(a.routes_l)}, precisions {','.join(a.precisions)}, batches {a.batches_l}, "
                 f"profile {a.profile_text}, opt level {a.opt_level if a.opt_level is not None else 'default'}; "
                 f"JSON {self.rec.path}")
        self.model = first_output(load_model(a.model))
        self.wts = weights_file(self.workdir, a.model)
        if "netdef" in a.routes_l and not (a.reuse and self.wts.is_file()):
            from netdef.export import export_wts

            t = time.perf_counter()
            export_wts(self.model.m, self.wts)
            self.say(f"exported {self.wts} in {time.perf_counter() - t:.1f} s")
        for precision in a.precisions:
            for route in a.routes_l:
                self.attempt(route, precision, lambda: getattr(self, f"route_{route}")(precision))
            if "netdef" in a.routes_l and a.cache_experiment:
                self.attempt("timing-cache", precision, lambda: self.cache_rebuild(precision))
        self.say(f"done; figures in {self.rec.path}")
        if a.markdown:
            print()
            print(markdown_tables(self.rec.doc))
        return 1 if self.failed else 0

    def settings_record(self) -> dict[str, Any]:
        a = self.a
        return {"routes": a.routes_l, "precisions": a.precisions, "batches": a.batches_l, "profile": a.profile_rec,
                "opt_level": a.opt_level, "tf32": a.tf32, "workspace_mib": a.workspace, "detailed": a.detailed,
                "warmup": asdict(self.settings.warmup), "measure": asdict(self.settings.measure),
                "compile_mode": a.compile_mode, "compile_budget_s": a.compile_budget,
                "onnx_exporter": a.onnx_exporter, "timing_cache_dir": str(self.cache_dir),
                "timing": "CUDA events around each call, synchronized per call (netdef.tools.bench.time_callable)"}

    # -- the engine routes

    def _record_build(self, route: str, precision: str, seconds: float, cache: Path | None, cache_state: str,
                      engine: Path, extra: dict[str, Any] | None = None) -> None:
        item = {"route": route, "precision": precision, "opt_level": self.a.opt_level, "profile": self.a.profile_rec,
                "seconds": round(seconds, 2), "timing_cache": cache_state, "cache_file": str(cache) if cache else None,
                "engine": str(engine), "engine_mib": round(engine.stat().st_size / 2**20, 2)} | (extra or {})
        self.rec.add("builds", item)
        self.say(f"{LABELS[route]} {precision} engine built in {seconds:.1f} s (timing cache {cache_state})")

    def _bench(self, route: str, precision: str, engine: Path) -> None:
        def on_result(stats: dict[str, Any]) -> None:
            self.rec.add("results", {"route": route, "precision": precision} | stats)

        bench_engine(engine, self.a.batches_l, self.settings, log=self.say, on_result=on_result)

    def _cache_file(self, route: str, precision: str) -> tuple[Path, str]:
        """The route's timing cache file and its state before the build: "warm" (it has entries) or "cold"."""
        path = self.cache_dir / cache_name(route, self.tag(precision), self.a.shared_timing_cache)
        return path, "warm" if path.is_file() and path.stat().st_size else "cold"

    def route_netdef(self, precision: str) -> None:
        cache, state = self._cache_file("netdef", precision)
        engine = self.workdir / f"netdef_{self.tag(precision)}.engine"
        self.say(f"building the netdef {precision} engine -> {engine}")
        res = build_engine(MODELS[self.a.model]["arch"], self.wts, engine, self.opts(precision, cache),
                           force=not self.a.reuse, log=self.say)
        expected = [-1, *self.m["shape"]]
        if res.meta["inputs"][0]["shape"] != expected:
            raise NetdefError(f"the netdef engine's input is {res.meta['inputs'][0]['shape']}, expected {expected}")
        if res.built:
            state = built_state(state, res.meta)
            self._record_build("netdef", precision, res.meta["build_seconds"], cache, state, engine,
                               {"total_seconds": round(res.seconds, 2)})
            self.netdef_cold = (precision, state, res.meta["build_seconds"])
        else:
            self.say(f"reusing {engine} (up to date; built in {res.meta['build_seconds']} s earlier)")
        self._bench("netdef", precision, engine)

    def route_onnx(self, precision: str) -> None:
        half = half_onnx(precision)
        onnx_path = self.workdir / f"{self.a.model}_{'fp16' if half else 'fp32'}.onnx"
        if not (self.a.reuse and onnx_path.is_file()):
            self.say(f"exporting {onnx_path} (opset 17, dynamic batch)")
            export_onnx(self.model, self.m["shape"], onnx_path, half, self.a.onnx_exporter, self.say)
        cache, state = self._cache_file("onnx", precision)
        engine = self.workdir / f"onnx_{self.tag(precision)}.engine"
        if self.a.reuse and engine.is_file():
            self.say(f"reusing {engine}")
        else:
            meta = build_onnx_engine(onnx_path, engine, self.opts(precision, cache), f"{self.a.model} (ONNX)", self.say)
            self._record_build("onnx", precision, meta["build_seconds"], cache, built_state(state, meta), engine,
                               {"total_seconds": meta["parse_and_build_seconds"]})
        self._bench("onnx", precision, engine)

    def cache_rebuild(self, precision: str) -> None:
        """The netdef engine again (--force) with the timing cache its first build left, in a fresh process
        as a user's next `netdef build` would run: a second build in this process would also profit from
        kernels already loaded, which is not the timing cache's doing."""
        first = getattr(self, "netdef_cold", None)
        if first is None or first[0] != precision:
            self.say(f"timing-cache experiment {precision}: no netdef build in this run to compare with; skipped")
            return
        cache, state = self._cache_file("netdef", precision)
        engine = self.workdir / f"netdef_{self.tag(precision)}_warm.engine"
        a = self.a
        cmd = [sys.executable, "-m", "netdef.cli", "build", MODELS[a.model]["arch"], "--weights", str(self.wts),
               "-o", str(engine), "--precision", precision, "--batch", a.profile_text,
               "--timing-cache", str(cache), "--force"]
        cmd += (["--opt-level", str(a.opt_level)] if a.opt_level is not None else []) + \
            (["--workspace", str(a.workspace)] if a.workspace else []) + ([] if a.tf32 else ["--no-tf32"]) + \
            (["--detailed"] if a.detailed else [])
        self.say(f"rebuilding the netdef {precision} engine in a new process with the timing cache: {' '.join(cmd)}")
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=Path.cwd())
        total = time.perf_counter() - t
        if proc.returncode != 0:
            raise NetdefError(f"the timing-cache rebuild failed (exit code {proc.returncode}; its messages above)")
        rebuilt = read_meta(engine)
        warm, state = rebuilt["build_seconds"], built_state(state, rebuilt)
        cold = first[2] if first[1] in ("cold", "refused") and state == "warm" else None
        item = {"precision": precision, "opt_level": a.opt_level, "profile": a.profile_rec,
                "first_build": first[1], "cold_s": cold, "warm_s": warm,
                "speedup": round(cold / warm, 2) if cold and warm else None, "command": " ".join(cmd)}
        self.rec.add("timing_cache", item)
        self._record_build("netdef", precision, warm, cache, state, engine, {"total_seconds": round(total, 2)})
        self.say(f"timing cache: first build {first[1]} {first[2]:.1f} s, rebuild {warm:.1f} s" +
                 (f" -> {cold / warm:.1f}x faster" if cold else " (TensorRT refused the cache: no speed-up figure)"
                  if state == "refused" else " (the cache was already warm: no cold figure)"))
        engine.unlink()

    # -- the PyTorch routes

    def _time_torch(self, route: str, precision: str,
                    prepare: Callable[[int], tuple[Callable[[], Any] | None, dict[str, Any]]]) -> None:
        """Time a PyTorch route per batch; `prepare(b)` gives (fn, extra figures) or (None, {'reason': ...})."""
        import torch

        for b in self.a.batches_l:
            fn, extra = prepare(b)
            if fn is None:
                self.rec.add("skipped", {"route": route, "precision": precision, "batch": b} | extra)
                self.say(f"{LABELS[route]} {precision} batch {b}: skipped ({extra['reason']})")
                continue
            with torch.inference_mode():
                stats = time_callable(fn, None, self.settings.warmup, self.settings.measure, batch=b)
            self.rec.add("results", {"route": route, "precision": precision} | stats | extra)
            self.say(f"{LABELS[route]} {precision} batch {b}: median {stats['median_ms']:.3f} ms, "
                     f"p99 {stats['p99_ms']:.3f} ms, {stats['throughput']:.1f} img/s ({stats['iters']} iters, "
                     f"CV {stats['cv']:.1%})")

    def _input(self, b: int, precision: str) -> Any:
        import torch

        dtype = torch.float16 if precision == "fp16" else torch.float32
        return torch.randn(b, *self.m["shape"], device="cuda", dtype=dtype)

    def _torch_model(self, precision: str) -> Any:
        m = copy.deepcopy(self.model).cuda().eval()
        return m.half() if precision == "fp16" else m

    def route_eager(self, precision: str) -> None:
        m = self._torch_model(precision)

        def prepare(b: int) -> tuple[Callable[[], Any], dict[str, Any]]:
            x = self._input(b, precision)
            return (lambda: m(x)), {}

        self._time_torch("eager", precision, prepare)

    def route_compile(self, precision: str) -> None:
        import torch

        mode = None if self.a.compile_mode == "default" else self.a.compile_mode
        # A graph break (YOLOv5's SPPF enters warnings.catch_warnings()) makes Dynamo compile the modules
        # after it one call at a time, and with dynamic=False each module and shape is one more compiled
        # entry of the same code (Conv.forward): past Dynamo's default limit of 8 the rest would run
        # eagerly. Raise the limits so every module is compiled, as a user tuning torch.compile would.
        dynamo = torch._dynamo.config
        limits = {}
        for names, value in ((("recompile_limit", "cache_size_limit"), DYNAMO_RECOMPILE_LIMIT),
                             (("accumulated_recompile_limit", "accumulated_cache_size_limit"),
                              4 * DYNAMO_RECOMPILE_LIMIT)):
            for name in [n for n in names if hasattr(dynamo, n)][:1]:  # torch 2.7 renamed them
                setattr(dynamo, name, max(getattr(dynamo, name), value))
                limits[name] = getattr(dynamo, name)
        cm = torch.compile(self._torch_model(precision), mode=mode, dynamic=False)
        spent = 0.0

        def prepare(b: int) -> tuple[Callable[[], Any] | None, dict[str, Any]]:
            nonlocal spent
            if spent > self.a.compile_budget:
                return None, {"reason": f"compile budget {self.a.compile_budget:g} s spent ({spent:.0f} s)"}
            x = self._input(b, precision)
            self.say(f"torch.compile ({self.a.compile_mode}) {precision} batch {b}: compiling ...")
            t = time.perf_counter()
            with torch.inference_mode():
                cm(x)
            torch.cuda.synchronize()
            s = time.perf_counter() - t
            spent += s
            self.say(f"torch.compile {precision} batch {b}: compiled in {s:.1f} s")
            return (lambda: cm(x)), {"compile_s": round(s, 2), "compile_mode": self.a.compile_mode,
                                     "dynamo_limits": limits}

        self._time_torch("compile", precision, prepare)


# ---------------------------------------------------------------- arguments

def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="resnet50")
    p.add_argument("--quick", action="store_true",
                   help="preset: resnet50 fp16, batches 1 and 256, opt level 3, one 1:256:256 engine per route "
                        "(about 6 minutes on an H100 with TensorRT 8.6)")
    p.add_argument("--precision", default="fp32,fp16", help="comma-separated: fp32, fp16 (default both)")
    p.add_argument("--batches", help="comma-separated batch sizes (default: resnet50 1,8,32,256; the YOLO models "
                                     "1,8,32; the zoo models 1,64)")
    p.add_argument("--profile", help="MIN:OPT:MAX of the one engine per route (default smallest:largest:largest), "
                                     "or several profiles in each engine: 1:1:4,5:32:64,65:256:256")
    p.add_argument("--routes", default=",".join(ROUTES), help=f"subset of {','.join(ROUTES)}")
    p.add_argument("--opt-level", type=int, help="builder optimization level for both engines (TensorRT default: 3)")
    p.add_argument("--timing-cache", metavar="DIR",
                   help="keep timing caches here across runs (default: a fresh folder per run, so builds are cold)")
    p.add_argument("--shared-timing-cache", action="store_true",
                   help="both routes read and extend one timing cache (shared_TAG.cache): the second route's "
                        "build reuses the first's kernel timings (minutes less at level 3) and both engines choose "
                        "from the same measurements")
    p.add_argument("--no-cache-experiment", dest="cache_experiment", action="store_false",
                   help="skip the second (warm timing cache) netdef build")
    p.add_argument("--no-tf32", dest="tf32", action="store_false",
                   help="fp32 without TF32 in every route (default: TF32 allowed everywhere, TensorRT's default)")
    p.add_argument("--workspace", type=int, metavar="MiB", help="builder workspace limit for both engines")
    p.add_argument("--detailed", action="store_true",
                   help="both engines keep layer types and tactics (compare them with `netdef profile --compare`)")
    p.add_argument("--warmup", default="50,1s", help="warm-up per batch: N, Ss or N,Ss (default 50,1s)")
    p.add_argument("--measure", default="200,2s", help="measurement per batch: N, Ss or N,Ss (default 200,2s)")
    p.add_argument("--compile-mode", default="default",
                   choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"))
    p.add_argument("--compile-budget", type=float, default=300.0, metavar="S",
                   help="stop compiling further batch sizes once torch.compile has taken S seconds (default 300)")
    p.add_argument("--onnx-exporter", choices=("legacy", "dynamo"), default="legacy",
                   help="torch.onnx.export: the TorchScript-based exporter (dynamo=False, default) or dynamo")
    p.add_argument("--workdir", default="out/compare", help="weights, ONNX files, engines, default JSON")
    p.add_argument("--json", help="results file (default WORKDIR/compare_MODEL.json), rewritten after each result")
    p.add_argument("--append", action="store_true", help="add to an existing --json (e.g. a second precision)")
    p.add_argument("--reuse", action="store_true", help="keep engines, ONNX files and the .wts of an earlier run "
                                                         "(models are seeded, so a later run makes the same ones)")
    p.add_argument("--markdown", action="store_true", help="print tables for docs/benchmarks.md at the end")
    p.add_argument("--report", metavar="JSON", help="only print the markdown tables of an earlier run's JSON")
    return p


def results_file(json_arg: str | None, workdir: str, name: str) -> Path:
    """The results file, --json or else WORKDIR/NAME, checked before any work: it may replace an earlier run's
    results only (an OptionError where it names another file, say a script or a config)."""
    path = Path(json_arg or Path(workdir) / name)
    check_output(path, what="--json", kind=RESULTS_JSON)
    return path


def weights_file(workdir: str | Path, model: str) -> Path:
    """WORKDIR/MODEL_random.wts, the comparisons' random weights: named so that a --workdir holding the user's
    trained MODEL.wts (weights/, as the README keeps them) never has them replaced by random ones."""
    return Path(workdir) / f"{model}_random.wts"


def check_covered(batches: list[int], profile: tuple[int, int, int], text: str) -> None:
    """Every batch size inside the profile's min..max (else a NetdefError naming those outside)."""
    lo, _, hi = profile
    outside = [b for b in batches if not lo <= b <= hi]
    if outside:
        raise NetdefError(f"--profile {text} does not cover batch size(s) {outside}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments; --quick fills in its preset (explicit flags cannot be mixed with it)."""
    p = make_parser()
    a = p.parse_args(argv)
    if a.report:
        return a
    if a.quick:
        defaults = {k: p.get_default(k) for k in QUICK}
        changed = [k for k in QUICK if getattr(a, k) != defaults[k]]
        if changed:
            raise NetdefError(f"--quick sets {', '.join('--' + k.replace('_', '-') for k in QUICK)}; "
                              f"leave out {', '.join('--' + k.replace('_', '-') for k in changed)}")
        for k, v in QUICK.items():
            setattr(a, k, v)
    a.json_path = results_file(a.json, a.workdir, f"compare_{a.model}.json")
    a.precisions = [s.strip() for s in a.precision.split(",")]
    bad = [s for s in a.precisions if s not in ("fp32", "fp16")]
    if bad or len(set(a.precisions)) != len(a.precisions):
        raise NetdefError(f"--precision '{a.precision}': use fp32, fp16 or fp32,fp16")
    a.routes_l = [s.strip() for s in a.routes.split(",")]
    bad = [s for s in a.routes_l if s not in ROUTES]
    if bad or not a.routes_l:
        raise NetdefError(f"--routes '{a.routes}': unknown {bad}; choose from {','.join(ROUTES)}")
    a.batches_l = parse_batches(a.batches) if a.batches else list(MODELS[a.model]["batches"])
    a.profile_t, a.profiles_t = parse_profiles(a.profile, "--profile") if a.profile else \
        ((a.batches_l[0], a.batches_l[-1], a.batches_l[-1]), ())
    a.profile_rec = [list(p) for p in a.profiles_t] if a.profiles_t else list(a.profile_t)
    a.profile_text = profile_text(a.profile_rec)
    check_covered(a.batches_l, a.profile_t, a.profile_text)
    if a.opt_level is not None and not 0 <= a.opt_level <= 5:
        raise NetdefError(f"--opt-level {a.opt_level}: must be 0..5")
    a.warmup_budget = parse_budget(a.warmup, "--warmup")
    a.measure_budget = parse_budget(a.measure, "--measure")
    if not (a.measure_budget.iters or a.measure_budget.seconds):
        raise NetdefError(f"--measure '{a.measure}': measure at least one iteration or a positive time")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.report:
        print(markdown_tables(json.loads(Path(a.report).read_text())))
        return 0
    import torch

    if not torch.cuda.is_available() or not trt_api.can_run_engines():
        raise NetdefError("this comparison needs a CUDA GPU, PyTorch with CUDA and full TensorRT "
                          f"(have {trt_api.version_string()}, GPU: {trt_api.gpu_identity() or 'none'})")
    return Run(a).main()


if __name__ == "__main__":
    sys.exit(run_guarded(main, prog="compare_routes"))
