"""Tests of netdef.tools.timing (statistics, budgets), netdef.tools.bench and report (batches, tables),
`netdef bench` (argument checks) and scripts/compare_routes.py (arguments, markdown tables, the ONNX route's
engine). GPU tests time real engines."""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netdef import engine_file, trt_api
from netdef.cli import bench as bench_cli
from netdef.cli import make_parser
from netdef.cli.options import checked
from netdef.errors import NetdefError
from netdef.tools import bench, report, timing
from netdef.tools.bench import check_batches, parse_batches
from netdef.tools.timing import Budget, parse_budget, run_budget, summarize

from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compare():
    return load_script("compare_routes")


def bench_args(*argv: str) -> argparse.Namespace:
    return checked(make_parser().parse_args(["bench", *argv]))


def run_bench(*argv: str) -> int:
    a = bench_args(*argv)
    return a.func(a)


def fake_engine(path: Path, batch=(1, 4, 8)) -> Path:
    """A netdef engine header around a dummy plan: enough for everything that runs before TensorRT."""
    meta = {"options": {"batch": list(batch)}, "arch": {"name": "fake"}, "precision": "fp16",
            "tensorrt": {"flavor": "tensorrt", "version": "0"}, "gpu": {"compute_capability": None},
            "inputs": [], "outputs": [], "weights": {"path": "fake.wts", "sha256": "0" * 64}, "plugins": [],
            "layers": 0, "created": "2026-01-01T00:00:00Z", "build_seconds": 0.0}
    engine_file.write_engine(path, b"\0" * 64, meta)
    return path


# ---------------------------------------------------------------- statistics

def test_summarize_matches_numpy():
    samples = np.random.default_rng(3).lognormal(0.0, 0.4, size=997)
    s = summarize(samples, batch=32)
    assert s["iters"] == 997 and s["batch"] == 32
    assert s["median_ms"] == pytest.approx(np.median(samples), rel=1e-12)
    assert s["p90_ms"] == pytest.approx(np.percentile(samples, 90), rel=1e-12)
    assert s["p99_ms"] == pytest.approx(np.percentile(samples, 99), rel=1e-12)
    assert s["min_ms"] == samples.min() and s["max_ms"] == samples.max()
    assert s["mean_ms"] == pytest.approx(samples.mean(), rel=1e-12)
    assert s["cv"] == pytest.approx(samples.std(ddof=1) / samples.mean(), rel=1e-12)
    assert s["throughput"] == pytest.approx(32 * 1000 / np.median(samples), rel=1e-12)
    assert s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]


def test_summarize_known_values():
    s = summarize(np.arange(1, 101, dtype=float), batch=8)  # 1..100 ms
    assert (s["median_ms"], s["p90_ms"], s["p99_ms"]) == pytest.approx((50.5, 90.1, 99.01))
    assert s["throughput"] == pytest.approx(8000 / 50.5)
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["cv"] == pytest.approx(np.sqrt(5 / 3) / 2.5) and "throughput" not in s
    one = summarize([2.5], batch=1)
    assert one["cv"] == 0.0 and one["p99_ms"] == one["median_ms"] == one["min_ms"] == 2.5


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [1.0, -0.5]])
def test_summarize_rejects_bad_samples(bad):
    with pytest.raises(NetdefError):
        summarize(bad)


def clock_ticking(step: float):
    t = [-step]

    def clock() -> float:
        t[0] += step
        return t[0]

    return clock


@pytest.mark.parametrize("budget, expected", [(Budget(5, 0.0), 5), (Budget(0, 1.0), 4), (Budget(10, 1.0), 10),
                                              (Budget(2, 1.0), 4), (Budget(0, 0.0), 1)])
def test_run_budget_takes_whichever_is_longer(budget, expected):
    calls = []
    samples = run_budget(lambda: calls.append(1) or 0.5, budget, clock=clock_ticking(0.25))
    assert len(samples) == len(calls) == expected and set(samples) == {0.5}


def test_parse_budget():
    assert parse_budget("50") == Budget(50, 0.0)
    assert parse_budget("1.5s") == Budget(0, 1.5)
    assert parse_budget("50, 1s") == Budget(50, 1.0)
    for bad in ("abc", "1.5", "-3", "2x", "-1s"):
        with pytest.raises(NetdefError, match="--warmup"):
            parse_budget(bad)


def test_parse_batches():
    assert parse_batches("1,8,32") == [1, 8, 32]
    assert parse_batches("32, 1") == [1, 32]
    for bad in ("", "1,x", "0,4", "4,4", "1,,2"):
        with pytest.raises(NetdefError, match="--batch"):
            parse_batches(bad)


def test_batch_outside_profile_is_an_error(tmp_path):
    check_batches([1, 4, 8], (1, 4, 8), "e")  # inside: fine
    path = fake_engine(tmp_path / "fake.engine")
    with pytest.raises(NetdefError, match=r"\[16\] outside the engine's profile 1\.\.8") as e:
        bench.bench_engine(path, [1, 16])
    assert "fake.engine" in str(e.value)
    with pytest.raises(NetdefError, match="not a netdef engine"):
        bench.bench_engine(ROOT / "architectures" / "resnet18.yaml", [1])


# ---------------------------------------------------------------- command line

def test_bench_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        bench_args("--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--batch", "--iters", "--seconds", "--warmup", "--cuda-graph", "--with-copies", "--json", "--chart",
                "--against", "--rounds", "--weights", "--precision", "--engine-out"):
        assert opt in out
    run = subprocess.run([sys.executable, "-m", "netdef.cli", "bench", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert run.returncode == 0 and "--cuda-graph" in run.stdout


def test_bench_argument_checks(tmp_path):
    eng = fake_engine(tmp_path / "fake.engine")
    cases = [
        ((str(eng), "--batch", "2,16"), "outside the engine's profile 1..8"),
        ((str(eng), "--weights", "w.wts"), "--weights only apply when TARGET is an architecture"),
        ((str(eng), "--iters", "0"), "--iters 0"),
        ((str(eng), "--seconds", "-1"), "--seconds"),
        ((str(eng), "--batch", "1,a"), "--batch '1,a'"),
        ((str(eng), "--warmup", "x"), "--warmup 'x'"),
        ((str(tmp_path / "missing.engine"),), "engine not found"),
        (("resnet18", "--batch", "1,4"), "--weights"),
        (("resnet18", "--weights", "w.wts"), "needs --batch"),
        (("resnet18", "--weights", "w.wts", "--batch", "1,64", "--profile", "1:8:8"), r"\[64\] outside"),
    ]
    for argv, message in cases:
        with pytest.raises(NetdefError, match=message):
            run_bench(*argv)


def test_bench_against_checks_both_engines_first(tmp_path):
    eng, small = fake_engine(tmp_path / "a.engine"), fake_engine(tmp_path / "b.engine", batch=(1, 2, 2))
    (tmp_path / "plain.bin").write_bytes(b"\0" * 64)
    plan = tmp_path / "r.plan"
    plan.write_bytes(b"ftrt" + bytes(60))
    cases = [
        ((str(eng), "--rounds", "3"), "--rounds only applies with --against"),
        ((str(eng), "--against", str(small), "--rounds", "0"), "--rounds 0"),
        ((str(eng), "--against", str(tmp_path / "none.engine")), "--against: engine not found"),
        ((str(eng), "--against", str(tmp_path / "plain.bin")), "is not a netdef engine"),
        # a raw plan said "is not a netdef engine; build it with `netdef build`", though it was exported from one
        ((str(eng), "--against", str(plan)), r"is not a netdef engine \(no netdef header\).*raw TensorRT plan runs with"),
        ((str(plan),), r"r\.plan is not a netdef engine \(no netdef header\).*raw TensorRT plan runs with `netdef run`"),
        ((str(eng), "--against", str(small), "--chart", "c.png"), "--chart draws one engine"),
        ((str(eng), "--against", str(small), "--batch", "1,4"), rf"{small}: batch size\(s\) \[4\] outside"),
    ]
    for argv, message in cases:
        with pytest.raises(NetdefError, match=message):
            run_bench(*argv)


def test_format_ratios_per_batch_and_round():
    def row(engine, rnd, batch, ms):
        return {"engine": engine, "round": rnd, "batch": batch, "median_ms": ms}

    results = [row("A", 1, 1, 0.30), row("A", 1, 8, 0.60), row("B", 1, 1, 0.40), row("B", 1, 8, 0.50),
               row("A", 2, 1, 0.33), row("A", 2, 8, 0.60), row("B", 2, 1, 0.30), row("B", 2, 8, 0.60)]
    lines = report.format_ratios(results, "A", "B").splitlines()
    assert lines[0].split() == ["batch", "A/B", "r1", "A/B", "r2"]
    assert lines[1].split() == ["1", "0.750", "1.100"] and lines[2].split() == ["8", "1.200", "1.000"]
    with pytest.raises(NetdefError, match="--rounds 0"):
        bench.bench_interleaved({"A": Path("a.engine")}, [1], bench.BenchSettings(), rounds=0)


def test_bench_interleaved_loads_each_engine_once(monkeypatch):
    loads, timed = [], []
    monkeypatch.setattr(bench, "load_for_timing", lambda path, batches: loads.append(path) or f"loaded {path}")
    monkeypatch.setattr(bench, "bench_engine", lambda eng, batches, settings, log=None:
                        timed.append(eng) or [{"batch": b, "median_ms": 1.0} for b in batches])
    results = bench.bench_interleaved({"A": Path("a.engine"), "B": Path("b.engine")}, [1, 8],
                                      bench.BenchSettings(), rounds=3)
    assert loads == [Path("a.engine"), Path("b.engine")]
    assert timed == ["loaded a.engine", "loaded b.engine"] * 3
    assert [(r["engine"], r["round"], r["batch"]) for r in results[:4]] == [("A", 1, 1), ("A", 1, 8), ("B", 1, 1),
                                                                            ("B", 1, 8)]


def test_load_for_timing_checks_a_loaded_engine():
    class Loaded:  # what bench needs of a runtime.Engine
        path, meta = Path("r.engine"), {"options": {"batch": [1, 4, 8]}}
        backend = argparse.Namespace(name="numpy")

    with pytest.raises(NetdefError, match=r"r\.engine: batch size\(s\) \[16\] outside"):
        bench.load_for_timing(Loaded(), [1, 16])
    with pytest.raises(NetdefError, match=r"r\.engine: timing needs an Engine loaded with backend='torch'"):
        bench.load_for_timing(Loaded(), [1, 8])
    Loaded.backend = argparse.Namespace(name="torch")
    eng = Loaded()
    assert bench.load_for_timing(eng, [1, 8]) is eng


def test_prepare_step_needs_the_torch_backend():
    from netdef.runtime import Engine

    loaded = argparse.Namespace(path=Path("r.engine"), backend=argparse.Namespace(name="pycuda"), inputs=[])
    with pytest.raises(NetdefError, match=r"r\.engine: stepping an engine needs the torch backend"):
        Engine.prepare_step(loaded, 1)


def test_timing_knows_nothing_about_engines():
    import ast

    tree = ast.parse(Path(timing.__file__).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__", "time", "dataclasses", "typing", "numpy", "errors", "torch"}, imported


def test_bench_settings_defaults_and_overrides():
    s = bench_cli.settings_from_args(bench_args("e.engine"))
    assert (s.warmup, s.measure) == (timing.DEFAULT_WARMUP, timing.DEFAULT_MEASURE)
    assert s.warmup.iters >= 50 and s.warmup.seconds >= 1 and s.measure.iters >= 200 and s.measure.seconds >= 2
    s = bench_cli.settings_from_args(bench_args("e.engine", "--iters", "30", "--warmup", "5", "--cuda-graph"))
    assert s.measure == Budget(30, 0.0) and s.warmup == Budget(5, 0.0) and s.cuda_graph and not s.with_copies
    s = bench_cli.settings_from_args(bench_args("e.engine", "--seconds", "0.5", "--with-copies"))
    assert s.measure == Budget(0, 0.5) and s.with_copies


@pytest.mark.skipif(trt_api.can_run_engines(), reason="checks the message on machines that cannot run engines")
def test_bench_arch_without_gpu_fails_before_building(tmp_path):
    a = bench_args("resnet18", "--weights", str(tmp_path / "w.wts"), "--batch", "1,2",
                   "--engine-out", str(tmp_path / "r.engine"))
    with pytest.raises(NetdefError, match="CUDA GPU and full TensorRT"):
        a.func(a)
    assert not (tmp_path / "r.engine").exists()


def test_chart_without_matplotlib_says_to_install_it(tmp_path, monkeypatch):
    """On a GPU machine the missing matplotlib is said before anything is built or timed; without a GPU, that the
    engine cannot run here (installing matplotlib would not be enough)."""
    from netdef import trt_api

    if importlib.util.find_spec("matplotlib") is not None:
        pytest.skip("matplotlib is installed")
    a = bench_args(str(fake_engine(tmp_path / "f.engine")), "--chart", str(tmp_path / "c.png"))
    if not trt_api.can_run_engines():
        with pytest.raises(NetdefError, match="CUDA GPU and full TensorRT"):
            a.func(a)
        monkeypatch.setattr(trt_api, "can_run_engines", lambda: True)
    with pytest.raises(NetdefError, match="pip install matplotlib"):
        a.func(a)


def test_chart_replaces_a_chart_never_a_png_image(tmp_path):
    """--chart writes over an earlier chart (Matplotlib names itself in the PNG's first chunk), not over a photo or
    a screenshot that is a PNG too; refused before any timing."""
    from PIL import Image

    photo = tmp_path / "holiday.png"
    Image.new("RGB", (4, 4), (200, 120, 40)).save(photo)
    before = photo.read_bytes()
    a = bench_args(str(fake_engine(tmp_path / "f.engine")), "--chart", str(photo))
    with pytest.raises(NetdefError, match=r"holiday\.png exists and is not a Matplotlib chart \(PNG\) \(it looks like a "
                                          r"PNG image\)"):
        a.func(a)
    assert photo.read_bytes() == before
    drawn = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x04\xb0\x00\x00\x01\xe0\x08\x06\x00\x00\x00\xb5\x97\x94\x9f"
             b"\x00\x00\x00:tEXtSoftware\x00Matplotlib version3.11.2, http")  # the first bytes of a chart netdef drew
    assert report.CHART_FILE.test(drawn) and not report.CHART_FILE.test(before[:64])
    if importlib.util.find_spec("matplotlib") is not None:
        rows = [summarize([1.0, 2.0], batch=1) | {"batch": 1}]
        report.write_chart(tmp_path / "c.png", rows, "chart")
        assert report.CHART_FILE.test((tmp_path / "c.png").read_bytes()[:64])


def test_format_table():
    rows = [summarize([1.0, 2.0, 3.0], batch=1) | {"batch": 1}, summarize([10.0, 10.0, 13.0], batch=8)]
    lines = report.format_table(rows).splitlines()
    assert lines[0].split() == ["batch", "median", "ms", "p90", "ms", "p99", "ms", "min", "ms", "mean", "ms", "CV",
                                "iters", "img/s"]
    assert lines[1].split()[:3] == ["1", "2.000", "2.800"] and lines[1].split()[-1] == "500.0"
    assert lines[2].split()[:2] == ["8", "10.000"] and lines[2].split()[-1] == "800.0"


# ---------------------------------------------------------------- scripts/compare_routes.py

FIXED = {
    "model": "resnet50",
    "environment": {"device": "NVIDIA H100 80GB HBM3", "driver": "580.1", "tensorrt": "tensorrt 8.6.0",
                    "torch": "2.11.0"},
    "results": [
        {"route": "netdef", "precision": "fp16", "batch": 1, "median_ms": 0.8, "throughput": 1250.0},
        {"route": "onnx", "precision": "fp16", "batch": 1, "median_ms": 1.0, "throughput": 1000.0},
        {"route": "eager", "precision": "fp16", "batch": 1, "median_ms": 4.0, "throughput": 250.0},
        {"route": "netdef", "precision": "fp16", "batch": 256, "median_ms": 50.0, "throughput": 5120.0},
        {"route": "compile", "precision": "fp16", "batch": 256, "median_ms": 80.0, "throughput": 3200.0},
        {"route": "netdef", "precision": "fp32", "batch": 1, "median_ms": 1.5, "throughput": 666.7},
    ],
    "builds": [{"route": "netdef", "precision": "fp16", "opt_level": 3, "profile": [1, 256, 256], "seconds": 80.25,
                "timing_cache": "cold"},
               {"route": "onnx", "precision": "fp16", "opt_level": None, "profile": [1, 256, 256], "seconds": 84.0,
                "timing_cache": "cold"}],
    "timing_cache": [{"precision": "fp16", "opt_level": 3, "cold_s": 80.25, "warm_s": 10.0, "speedup": 8.03},
                     {"precision": "fp32", "opt_level": 3, "cold_s": None, "warm_s": 9.0, "speedup": None}],
}


def test_a_run_removes_its_own_timing_caches_only(compare, tmp_path):
    """Each run starts cold (without --timing-cache): it removes the caches it will use, not the whole
    WORKDIR/timing-cache folder, which a --workdir of the user's may hold with files of theirs."""
    a = compare.parse_args(["--workdir", str(tmp_path), "--precision", "fp16", "--routes", "netdef,onnx"])
    folder = tmp_path / "timing-cache"
    folder.mkdir()
    mine = folder / "mine" / "yolov5s.cache"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's cache")
    earlier = [folder / compare.cache_name(route, compare.Run(a).tag("fp16"), False) for route in ("netdef", "onnx")]
    for path in earlier:
        path.write_bytes(b"an earlier run's cache")
    compare.Run(a)
    assert mine.read_bytes() == b"the user's cache" and not any(path.exists() for path in earlier)


def test_a_refused_timing_cache_is_not_called_warm(compare):
    """The build's header says whether TensorRT used the cache file; a file with entries alone made it "warm"."""
    assert compare.built_state("warm", {"timing_cache": "refused"}) == "refused"
    assert compare.built_state("warm", {"timing_cache": "loaded"}) == "warm"
    assert compare.built_state("cold", {}) == "cold"


def test_markdown_tables(compare):
    lines = compare.markdown_tables(FIXED).splitlines()
    assert lines[0].startswith("resnet50 on NVIDIA H100 80GB HBM3 (driver 580.1), tensorrt 8.6.0, torch 2.11.0")
    header = lines.index("| precision | batch | netdef | ONNX→TRT | netdef/ONNX | eager | torch.compile |")
    assert lines[header + 2:header + 5] == [
        "| fp16 | 1 | 0.800 (1250) | 1.000 (1000) | 0.80 | 4.000 (250) | n/m |",
        "| fp16 | 256 | 50.000 (5120) | n/m | n/m | n/m | 80.000 (3200) |",
        "| fp32 | 1 | 1.500 (667) | n/m | n/m | n/m | n/m |",
    ]
    assert "| netdef | fp16 | 3 | 1:256:256 | 80.2 | cold |" in lines
    assert "| ONNX→TRT | fp16 | default | 1:256:256 | 84.0 | cold |" in lines
    assert "| netdef | fp16 | 3 | 80.2 | 10.0 | 8.0x |" in lines
    assert "| netdef | fp32 | 3 | n/m | 9.0 | n/m |" in lines


def test_report_prints_tables_from_json(compare, tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(FIXED))
    assert compare.main(["--report", str(path)]) == 0
    assert "| fp16 | 1 | 0.800 (1250) | 1.000 (1000) | 0.80 |" in capsys.readouterr().out


def test_compare_arguments(compare):
    a = compare.parse_args(["--quick"])
    assert (a.model, a.precisions, a.batches_l, a.profile_t, a.opt_level) == \
        ("resnet50", ["fp16"], [1, 256], (1, 256, 256), 3)
    assert a.routes_l == list(compare.ROUTES) and a.compile_budget < 300
    a = compare.parse_args(["--model", "yolov5s", "--precision", "fp16", "--opt-level", "0"])
    assert a.batches_l == [1, 8, 32] and a.profile_t == (1, 32, 32) and a.precisions == ["fp16"]
    a = compare.parse_args(["--batches", "8,2", "--routes", "netdef,onnx", "--measure", "50"])
    assert a.batches_l == [2, 8] and a.profile_t == (2, 8, 8) and a.measure_budget == Budget(50, 0.0)
    a = compare.parse_args(["--profile", "1:1:4,5:32:64,65:256:256", "--precision", "fp16"])
    assert a.profile_t == (1, 256, 256) and a.profiles_t == ((1, 1, 4), (5, 32, 64), (65, 256, 256))
    assert a.profile_text == "1:1:4,5:32:64,65:256:256" and a.profile_rec[1] == [5, 32, 64]
    run = compare.Run.__new__(compare.Run)
    run.a = a
    assert run.tag("fp16") == "resnet50_fp16_b1-1-4_5-32-64_65-256-256"
    assert run.opts("fp16", None).profiles == a.profiles_t
    for argv, message in [(["--quick", "--batches", "1,8"], "leave out --batches"),
                          (["--precision", "int8"], "--precision"),
                          (["--precision", "fp16,fp16"], "--precision"),
                          (["--routes", "netdef,tvm"], "unknown"),
                          (["--batches", "1,64", "--profile", "1:8:32"], r"does not cover batch size\(s\) \[64\]"),
                          (["--profile", "1:1:4,6:8:8"], "batches 5..5 are in no profile"),
                          (["--opt-level", "7"], "--opt-level 7"),
                          (["--measure", "0"], "--measure")]:
        with pytest.raises(NetdefError, match=message):
            compare.parse_args(argv)


def test_compare_yolo_needs_ultralytics(compare, monkeypatch):
    pytest.importorskip("torch")
    import netdef.testing.yolov5_reference as reference

    def missing(*args, **kwargs):
        raise ImportError("No module named 'yolov5'")

    monkeypatch.setattr(reference, "reference_model", missing)
    with pytest.raises(NetdefError, match=r"needs Ultralytics' code \(pip install --no-deps yolov5==7.0.14\)"):
        compare.load_model("yolov5s")


def test_compare_models_are_the_same_in_every_run(compare):
    """Random weights, but seeded: a later run with --reuse writes the same .wts and finds its engine current."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    first, second = compare.load_model("resnet50").state_dict(), compare.load_model("resnet50").state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert first["conv1.weight"].std() > 0


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError("unsupported operator")])
def test_an_interrupted_onnx_export_leaves_no_part_for_reuse(compare, tmp_path, monkeypatch, stop):
    """An ONNX export cut short (Ctrl-C, an exporter error) leaves neither the model's .onnx, which --reuse would
    take for a complete one, nor its temporary file; an earlier run's file stays as it was."""
    torch = pytest.importorskip("torch")

    def export_stopped(m, args, f, **kw):
        Path(f).write_bytes(b"\x08\x07 part of a model")
        raise stop

    monkeypatch.setattr(torch.onnx, "export", export_stopped)
    onnx_path = tmp_path / "m.onnx"
    with pytest.raises(KeyboardInterrupt if stop is KeyboardInterrupt else NetdefError):
        compare.export_onnx(torch.nn.Conv2d(3, 4, 1), (3, 8, 8), onnx_path, False, "legacy", lambda m: None)
    assert list(tmp_path.iterdir()) == []
    onnx_path.write_bytes(b"earlier run")
    with pytest.raises(KeyboardInterrupt if stop is KeyboardInterrupt else NetdefError):
        compare.export_onnx(torch.nn.Conv2d(3, 4, 1), (3, 8, 8), onnx_path, False, "legacy", lambda m: None)
    assert list(tmp_path.iterdir()) == [onnx_path] and onnx_path.read_bytes() == b"earlier run"


def test_onnx_route_engine_builds(compare, tmp_path):
    """The ONNX route with the installed builder: same profile/precision plumbing as netdef, netdef container."""
    pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    model = compare.first_output(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
                                                     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()))
    onnx_path = tmp_path / "m.onnx"
    compare.export_onnx(model, (3, 32, 32), onnx_path, half=False, exporter="legacy", log=lambda m: None)
    from netdef.build import BuildOptions

    meta = compare.build_onnx_engine(onnx_path, tmp_path / "m.engine", BuildOptions(batch=(1, 2, 4), opt_level=0),
                                     "tiny (ONNX)", log=lambda m: None)
    stored = engine_file.read_meta(tmp_path / "m.engine")
    assert stored["options"]["batch"] == [1, 2, 4] and stored["route"] == "onnx"
    assert meta["inputs"] == [{"name": "input", "shape": [-1, 3, 32, 32], "dtype": "float32"}]
    assert meta["outputs"] == [{"name": "output", "shape": [-1, 8], "dtype": "float32"}]
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(NetdefError, match="ONNX parser rejected"):
        compare.build_onnx_engine(bad, tmp_path / "b.engine", BuildOptions(), "bad", log=lambda m: None)


def test_onnx_route_exports_multihead_attention(compare, tmp_path):
    """nn.MultiheadAttention in eval mode (torchvision's ViT) runs a fused kernel ONNX cannot express: the export
    turns PyTorch's fast path off, so the graph holds standard operators only, the ONNX route builds it, and the
    fast path is back on afterwards."""
    onnx = pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = torch.nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            tokens = x.flatten(2).transpose(1, 2)
            return self.mha(tokens, tokens, tokens, need_weights=False)[0]

    onnx_path = tmp_path / "mha.onnx"
    assert torch.backends.mha.get_fastpath_enabled()
    compare.export_onnx(Attention().eval(), (16, 4, 4), onnx_path, half=False, exporter="legacy", log=lambda m: None)
    assert torch.backends.mha.get_fastpath_enabled()
    nodes = onnx.load(str(onnx_path)).graph.node
    assert {n.domain for n in nodes} <= {"", "ai.onnx"} and "MatMul" in {n.op_type for n in nodes}
    from netdef.build import BuildOptions

    meta = compare.build_onnx_engine(onnx_path, tmp_path / "mha.engine", BuildOptions(batch=(1, 2, 2), opt_level=0),
                                     "attention (ONNX)", log=lambda m: None)
    assert meta["outputs"] == [{"name": "output", "shape": [-1, 16, 16], "dtype": "float32"}]


# ---------------------------------------------------------------- GPU

@pytest.fixture(scope="module")
def resnet18_engine(torchvision_wts, tmp_path_factory):
    from netdef.build import BuildOptions, build_engine

    model, wts = torchvision_wts("resnet18")
    out = tmp_path_factory.mktemp("bench") / "resnet18_fp16.engine"
    build_engine("resnet18", wts, out, BuildOptions(precision="fp16", batch=(1, 4, 4), opt_level=0), log=print)
    return model, wts, out


def check_record(doc: dict, batches: list[int], min_iters: int) -> None:
    env = doc["environment"]
    assert env["device"] and env["tensorrt"].startswith("tensorrt ") and env["torch"]
    assert doc["engine"]["precision"] == "fp16" and doc["engine"]["options"]["batch"] == [1, 4, 4]
    assert [r["batch"] for r in doc["results"]] == batches
    for r in doc["results"]:
        print(f"batch {r['batch']}: median {r['median_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms "
              f"{r['throughput']:.0f} img/s cv {r['cv']:.2%} iters {r['iters']}")
        assert r["iters"] >= min_iters and r["warmup_iters"] >= 5
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"] < 1000
        assert r["throughput"] == pytest.approx(r["batch"] * 1000 / r["median_ms"])
        assert 0 <= r["cv"] < 5


@pytest.mark.gpu
def test_bench_against_another_engine_on_gpu(resnet18_engine, tmp_path, capsys):
    _, _, engine = resnet18_engine
    out = tmp_path / "against.json"
    a = bench_args(str(engine), "--against", str(engine), "--batch", "1,4", "--iters", "30", "--warmup", "5",
                   "--cuda-graph", "--json", str(out))
    assert a.func(a) == 0
    doc = json.loads(out.read_text())
    assert [(r["engine"], r["round"], r["batch"]) for r in doc["results"]] == \
        [(e, n, b) for n in (1, 2) for e in ("A", "B") for b in (1, 4)]
    assert doc["settings"]["rounds"] == 2 and doc["engines"]["A"]["path"] == doc["engines"]["B"]["path"]
    out = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(out) if line.split()[:2] == ["batch", "A/B"])
    ratios = out[head:head + 3]
    print("\n".join(ratios))
    assert [line.split()[0] for line in ratios[1:]] == ["1", "4"]
    for line in ratios[1:]:  # the same engine against itself: ratios near 1
        assert all(0.5 < float(v) < 2.0 for v in line.split()[1:])


@pytest.mark.gpu
@pytest.mark.parametrize("mode", [(), ("--cuda-graph",), ("--with-copies",), ("--cuda-graph", "--with-copies")])
def test_bench_engine_on_gpu(resnet18_engine, tmp_path, mode):
    _, _, engine = resnet18_engine
    out = tmp_path / "bench.json"
    a = bench_args(str(engine), "--batch", "1,4", "--iters", "30", "--warmup", "5", "--json", str(out), *mode)
    assert a.func(a) == 0
    doc = json.loads(out.read_text())
    check_record(doc, [1, 4], 30)
    assert doc["settings"]["cuda_graph"] == ("--cuda-graph" in mode)
    assert doc["settings"]["with_copies"] == ("--with-copies" in mode)


@pytest.mark.gpu
def test_bench_builds_an_architecture_first(resnet18_engine, tmp_path):
    _, wts, _ = resnet18_engine
    out, engine = tmp_path / "arch.json", tmp_path / "r18.engine"
    a = bench_args("resnet18", "--weights", str(wts), "--batch", "1,4", "--profile", "1:4:4", "--opt-level", "0",
                   "--engine-out", str(engine), "--seconds", "0.2", "--warmup", "0.1s", "--json", str(out))
    assert a.func(a) == 0 and engine.is_file()
    check_record(json.loads(out.read_text()), [1, 4], 1)


@pytest.mark.gpu
def test_steps_and_captured_pipelines_on_gpu(resnet18_engine):
    """Engine.capture: a copy from pinned memory, the engine and a copy back as one CUDA graph equal `infer`; a step
    whose context another call bound since binds its own buffers again (its outputs stay right)."""
    import torch

    from netdef.runtime import Engine

    _, _, path = resnet18_engine
    eng = Engine(path)
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    want = eng.infer({"input": x.cuda()})["logits"].cpu()
    host_in, host_out = x.pin_memory(), torch.empty_like(want).pin_memory()
    dev = torch.empty(4, 3, 224, 224, device="cuda")
    step = eng.capture({"input": dev}, before=lambda: dev.copy_(host_in, non_blocking=True),
                       after=lambda outs: host_out.copy_(outs["logits"], non_blocking=True))
    host_in.copy_(torch.zeros_like(x))  # the replay reads the pinned input anew
    step()
    step.synchronize()
    zeros = eng.infer({"input": torch.zeros(4, 3, 224, 224, device="cuda")})["logits"].cpu()  # rebinds the context
    assert torch.equal(host_out, zeros) and not torch.equal(zeros, want)
    host_in.copy_(x)
    step()  # binds its own buffers again first
    step.synchronize()
    assert torch.equal(host_out, want) and torch.equal(step.outputs["logits"].cpu(), want)
    plain = eng.prepare_step(4)
    plain()
    plain.synchronize()
    step()
    step.synchronize()
    assert torch.equal(host_out, want)


@pytest.mark.gpu
def test_time_callable_on_gpu():
    import torch

    x = torch.randn(1024, 1024, device="cuda")
    s = timing.time_callable(lambda: x @ x, None, Budget(3, 0.0), Budget(20, 0.0), batch=1)
    assert s["iters"] == 20 and s["warmup_iters"] == 3 and 0 < s["min_ms"] <= s["median_ms"] <= s["p99_ms"]


@pytest.mark.gpu
def test_onnx_route_matches_pytorch_on_gpu(compare, resnet18_engine, tmp_path):
    """The comparison's ONNX engine computes the same network: same outputs as PyTorch, timed like netdef's."""
    pytest.importorskip("onnx")
    from netdef.build import BuildOptions
    from netdef.runtime import Engine
    from netdef.tools.verify import max_rel_error, torch_reference

    model, _, _ = resnet18_engine
    onnx_path = tmp_path / "r18.onnx"
    compare.export_onnx(compare.first_output(model), (3, 224, 224), onnx_path, half=False, exporter="legacy",
                        log=print)
    engine = tmp_path / "r18_onnx.engine"
    compare.build_onnx_engine(onnx_path, engine, BuildOptions(batch=(1, 2, 2), opt_level=0, tf32=False),
                              "resnet18 (ONNX)", log=print)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    err = max_rel_error(Engine(engine).infer(x, as_numpy=True)["output"], torch_reference(model, x))
    print(f"ONNX route resnet18 fp32: max relative error vs PyTorch {err:.2e}")
    assert err < 1e-3
    stats = bench.bench_engine(engine, [2], bench.BenchSettings(Budget(2, 0.0), Budget(10, 0.0)))
    assert stats[0]["iters"] == 10 and stats[0]["median_ms"] > 0
