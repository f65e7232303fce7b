"""`netdef serve` (Triton through PyTriton) and scripts/bench_serve.py.

CPU: the PyTriton binding derived from real engines built by the installed builder (TensorRT-RTX in CI): ResNet-18
with one profile and with three, and a non-batching engine (batches 8..8); how a batch is split and padded over the
profiles; option errors of `netdef serve` (all before any server or GPU work); the error without pytriton. The
images -> detections model (`NAME_detect`): its binding and PyTriton's model config of it, its infer function on
encoded images with a fake detector (padding, JSON records, request parameters, a bad image).
GPU (`-m gpu`, also needs pytriton and tritonclient): `netdef serve` in a subprocess answers tritonclient HTTP and
gRPC requests exactly like `Engine.infer`, the detect model like `netdef detect`, and the load test of
scripts/bench_serve.py (RESULT lines).
"""
from __future__ import annotations

import builtins
import contextlib
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers import load_script, run_cli
from netdef import engine_file, trt_api
from netdef.build import BuildOptions, build_engine
from netdef.deploy.serve import TensorSpec, binding, chunks, import_pytriton, numpy_outside, run_batch, serve
from netdef.errors import NetdefError, OptionError

THREE_PROFILES = ((1, 1, 4), (5, 32, 64), (65, 256, 256))


def bench_serve():
    """scripts/bench_serve.py, importable by name (its spawned client processes import it)."""
    return load_script("bench_serve")


@pytest.fixture(scope="module")
def engines(torchvision_wts, tmp_path_factory):
    """name -> engine path: r18 (1:8:32), r18_3p (three profiles), r18_8 (8:8:8), r18_u8 (1:8:32, uint8 images
    normalized inside); for the GPU tests r18_fp16 and
    r50_fp16 (1:8:64) and y5s_plugin_fp16 (YOLOv5s with the decode + NMS plugin head, 1:8:32)."""
    out = tmp_path_factory.mktemp("serve_engines")
    options = {"r18": BuildOptions(batch=(1, 8, 32), opt_level=0),
               "r18_3p": BuildOptions(profiles=THREE_PROFILES, opt_level=0),
               "r18_8": BuildOptions(batch=(8, 8, 8), opt_level=0),
               "r18_u8": BuildOptions(batch=(1, 8, 32), opt_level=0, input_dtype="uint8", input_mean=(0.5,),
                                      input_std=(0.25,)),
               "r18_fp16": BuildOptions(batch=(1, 8, 64), precision="fp16", opt_level=0),
               "r50_fp16": BuildOptions(batch=(1, 8, 64), precision="fp16", opt_level=0),
               "y5s_plugin_fp16": BuildOptions(batch=(1, 8, 32), precision="fp16", opt_level=0,
                                               params={"head": "plugin"})}
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            path = out / f"{name}.engine"
            if name.startswith("y5s"):
                from netdef.testing import yolov5_reference as ref
                from netdef.wts import write_wts

                if not ref.yolov5_available():
                    pytest.skip("needs the YOLOv5 reference: pip install --no-deps yolov5==7.0.14")
                arch, wts = "yolov5s", out / "yolov5s.wts"
                write_wts(wts, ref.reference_model("yolov5s")[1])
            else:
                arch = "resnet50" if name.startswith("r50") else "resnet18"
                wts = torchvision_wts(arch)[1]
            build_engine(arch, wts, path, options[name], log=lambda m: None)
            built[name] = path
        return built[name]

    return get


@contextlib.contextmanager
def stub_fits():
    """Skips the test where PyTriton's Python stub does not fit this Python (pytriton issue 51: Triton cannot load
    a model, whatever the GPU)."""
    try:
        yield
    except NetdefError as e:
        if "_recursion_count" in str(e):
            pytest.skip(f"PyTriton's Python stub does not fit Python {sys.version.split()[0]} (pytriton issue 51)")
        raise


# ---------------------------------------------------------------- the binding

def test_binding_of_a_one_profile_engine(engines):
    meta = engine_file.read_meta(engines("r18"))
    spec = binding(meta)
    assert spec.name == "resnet18"
    assert spec.inputs == tuple(TensorSpec(io["name"], io["dtype"], tuple(io["shape"][1:])) for io in meta["inputs"])
    assert spec.inputs[0].shape == (3, 224, 224) and spec.inputs[0].dtype == "float32"
    assert [(t.name, t.shape) for t in spec.outputs] == [(io["name"], (1000,)) for io in meta["outputs"]]
    assert (spec.max_batch_size, spec.preferred_batch_sizes, spec.max_queue_delay_us) == (32, (8,), 0)
    capped = binding(meta, name="r18", max_batch=4, max_queue_delay_us=250)
    assert (capped.name, capped.max_batch_size, capped.preferred_batch_sizes, capped.max_queue_delay_us) == \
        ("r18", 4, (), 250)  # OPT 8 is above the cap
    with pytest.raises(OptionError, match=r"--max-batch 33: must be within the engine's batches 1\.\.32"):
        binding(meta, max_batch=33)


def test_binding_of_a_three_profile_engine(engines):
    meta = engine_file.read_meta(engines("r18_3p"))
    spec = binding(meta)
    assert spec.max_batch_size == 256 and spec.preferred_batch_sizes == (32, 256)  # OPT 1 left out
    assert spec.profiles == THREE_PROFILES
    assert binding(meta, max_batch=64).preferred_batch_sizes == (32,)


def test_preferred_batch_sizes_of_the_batcher(engines):
    """--preferred-batch: the profiles' OPT batches ('opt', as netdef triton writes them: serve's default), none
    (the largest batch the batcher can form) or a list, each size within the batches the server forms."""
    from netdef.cli.serve import preferred_batch

    meta = engine_file.read_meta(engines("r18"))  # 1:8:32
    assert binding(meta).preferred_batch_sizes == (8,)
    assert binding(meta, preferred_batch=()).preferred_batch_sizes == ()
    assert binding(meta, preferred_batch=[32, 16, 16]).preferred_batch_sizes == (16, 32)
    with pytest.raises(OptionError, match=r"^--preferred-batch 64: sizes must be within the batches the server "
                                          r"forms, 1\.\.32$"):
        binding(meta, preferred_batch=[64])
    with pytest.raises(OptionError, match=r"1\.\.16$"):
        binding(meta, max_batch=16, preferred_batch=[32])
    with pytest.raises(OptionError, match="served without batching"):
        binding(engine_file.read_meta(engines("r18_8")), preferred_batch=[8])
    assert (preferred_batch("opt"), preferred_batch("none"), preferred_batch("8,16")) == (None, (), (8, 16))
    with pytest.raises(OptionError, match="--preferred-batch"):
        preferred_batch("eight")


def test_binding_of_a_non_batching_engine(engines):
    """Batches 8..8: no dynamic batching (max_batch_size 0), the batch axis in the shapes."""
    meta = engine_file.read_meta(engines("r18_8"))
    spec = binding(meta)
    assert spec.max_batch_size == 0 and spec.preferred_batch_sizes == ()
    assert spec.inputs[0].shape == (8, 3, 224, 224) and spec.outputs[0].shape == (8, 1000)
    with pytest.raises(OptionError, match="--max-batch 4: the engine's smallest batch is 8"):
        binding(meta, max_batch=4)
    with pytest.raises(OptionError, match="without dynamic batching"):
        binding(meta, max_queue_delay_us=100)


# ---------------------------------------------------------------- splitting and padding batches

@pytest.mark.parametrize("n, want", [
    (3, [(0, 3, 3)]),  # covered by 1..4
    (6, [(0, 6, 8)]),  # in the gap 5..7: padded to 8
    (16, [(0, 16, 16)]),
    (40, [(0, 16, 16), (16, 32, 16), (32, 40, 8)]),  # split at the largest batch
    (17, [(0, 16, 16), (16, 17, 1)]),
])
def test_chunks_split_and_pad_over_the_profiles(n, want):
    assert chunks(n, [(1, 2, 4), (8, 8, 16)]) == want


def test_chunks_pad_up_to_the_smallest_batch():
    assert chunks(3, [(8, 8, 8)]) == [(0, 3, 8)]
    with pytest.raises(OptionError, match="at least one item"):
        chunks(0, [(1, 1, 4)])


def test_run_batch_gives_what_one_run_would():
    """A fake engine that refuses batches outside its profiles: the batch of 40 runs in pieces, padded, and comes
    back whole, item by item as one run would give it."""
    profiles = [(1, 2, 4), (8, 8, 16)]
    seen = []

    def infer(feeds):
        b = len(feeds["x"])
        assert any(lo <= b <= hi for lo, _, hi in profiles), b
        seen.append(b)
        return {"y": feeds["x"] * 2 + feeds["z"], "n": feeds["x"].sum(axis=(1, 2))}

    rng = np.random.default_rng(0)
    x, z = rng.standard_normal((40, 3, 5)).astype(np.float32), rng.standard_normal((40, 3, 5)).astype(np.float32)
    out = run_batch(infer, {"x": x, "z": z}, profiles)
    assert seen == [16, 16, 8]
    np.testing.assert_array_equal(out["y"], x * 2 + z)
    np.testing.assert_array_equal(out["n"], x.sum(axis=(1, 2)))
    out = run_batch(infer, {"x": x[:6], "z": z[:6]}, profiles)  # padded to 8, cut back to 6
    assert seen[-1] == 8 and out["y"].shape == (6, 3, 5)
    with pytest.raises(OptionError, match="one common batch axis"):
        run_batch(infer, {"x": x[:6], "z": z[:5]}, profiles)


def test_the_raw_model_serves_one_value_per_item_as_a_column():
    """An engine output (B,) is (B, 1) in Triton (dims [1]): the stub's raw model adds the axis (and takes a (B,)
    input served as (B, 1) without it)."""
    from netdef.deploy.serve import CallTimes
    from netdef.deploy.stub_model import Request, raw_model

    meta = {"arch": {"name": "toy"}, "options": {"batch": [1, 2, 8], "profiles": None},
            "inputs": [{"name": "x", "shape": [-1, 4], "dtype": "float32"}],
            "outputs": [{"name": "score", "shape": [-1], "dtype": "float32"}]}
    spec = binding(meta)
    assert spec.outputs == (TensorSpec("score", "float32", (1,), squeeze=True),)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = raw_model(HostEngine(lambda f: {"score": f["x"].sum(axis=1)}, [(1, 2, 8)]), spec, CallTimes())(
        [Request({"x": x[:1]}), Request({"x": x[1:]})])
    np.testing.assert_array_equal(out[0]["score"], x[:1].sum(axis=1)[:, None])
    np.testing.assert_array_equal(out[1]["score"], x[1:].sum(axis=1)[:, None])


class HostEngine:
    """An engine stand-in on the host: `fn(feeds)` as its outputs, each run's batch kept in `runs`."""

    def __init__(self, fn, profiles, delay_s=0.0):
        self.fn, self.profiles, self.delay_s, self.runs, self.buffers = fn, profiles, delay_s, [], []

    def host_buffer(self, shape, dtype):
        self.buffers.append(np.zeros(shape, dtype))
        return self.buffers[-1]

    def infer(self, feeds, as_numpy):
        assert as_numpy and any(lo <= len(v) <= hi for lo, _, hi in self.profiles for v in feeds.values())
        self.runs.append(len(next(iter(feeds.values()))))
        time.sleep(self.delay_s)
        return self.fn(feeds)


def test_the_raw_model_joins_requests_in_the_engine_s_host_buffers_and_pads_them():
    """The requests of one execution (inputs as the stub reads them: a (B,) input served as (B, 1) already
    flattened) are copied into one host buffer per input (made once, of the largest batch), padded with the last
    item up to a batch a profile covers, run once, and each request gets its own rows back; more items than the
    largest batch run in chunks."""
    from netdef.deploy.serve import CallTimes
    from netdef.deploy.stub_model import Request, raw_model

    meta = {"arch": {"name": "toy"}, "options": {"batch": None, "profiles": [[1, 1, 2], [4, 4, 8]]},
            "inputs": [{"name": "x", "shape": [-1, 2], "dtype": "float32"},
                       {"name": "k", "shape": [-1], "dtype": "int32"}],
            "outputs": [{"name": "y", "shape": [-1, 2], "dtype": "float32"}]}
    spec = binding(meta)
    seen = []
    engine = HostEngine(lambda f: seen.append({k: v.copy() for k, v in f.items()}) or
                        {"y": f["x"] * 10 + f["k"][:, None]}, [(1, 1, 2), (4, 4, 8)])
    times = CallTimes()
    run = raw_model(engine, spec, times)
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    k = np.arange(10, dtype=np.int32)
    out = run([Request({"x": x[:1], "k": k[:1]}), Request({"x": x[1:3], "k": k[1:3]})])
    assert engine.runs == [4] and [b.shape for b in engine.buffers] == [(8, 2), (8,)]  # 3 items padded to 4
    np.testing.assert_array_equal(seen[0]["x"][3], x[2])  # the pad: a copy of the last item
    np.testing.assert_array_equal(out[0]["y"], x[:1] * 10 + k[:1, None])
    np.testing.assert_array_equal(out[1]["y"], x[1:3] * 10 + k[1:3, None])
    run([Request({"x": x[:5], "k": k[:5]})])  # 5 items: a profile covers 5, in the same buffers
    assert engine.runs[1:] == [5] and len(engine.buffers) == 2
    out = run([Request({"x": x, "k": k})])  # 10 items: a chunk of 8, then 2 (a profile covers 2)
    assert engine.runs[2:] == [8, 2] and [b.shape for b in engine.buffers[2:]] == [(10, 2), (10,)]  # made anew
    np.testing.assert_array_equal(out[0]["y"], x * 10 + k[:, None])
    assert times.engine_s > 0


def test_the_raw_model_serves_an_engine_of_dynamic_height_and_width():
    """An engine input (B, 3, H, W) with H and W dynamic: the host buffers take the requests' own shape (Triton
    joins requests of one shape), made anew when another shape comes."""
    from netdef.deploy.serve import CallTimes
    from netdef.deploy.stub_model import Request, raw_model

    meta = {"arch": {"name": "toy"}, "options": {"batch": [1, 2, 4], "profiles": None},
            "inputs": [{"name": "images", "shape": [-1, 3, -1, -1], "dtype": "float32"}],
            "outputs": [{"name": "m", "shape": [-1], "dtype": "float32"}]}
    spec = binding(meta)
    assert spec.inputs[0].shape == (3, -1, -1)
    engine = HostEngine(lambda f: {"m": f["images"].mean(axis=(1, 2, 3))}, [(1, 2, 4)])
    run = raw_model(engine, spec, CallTimes())
    rng = np.random.default_rng(1)
    for h, w in [(4, 6), (4, 6), (8, 8)]:
        x = rng.standard_normal((3, 3, h, w)).astype(np.float32)
        out = run([Request({"images": x[:1]}), Request({"images": x[1:]})])
        np.testing.assert_allclose(np.concatenate([o["m"] for o in out])[:, 0], x.mean(axis=(1, 2, 3)), rtol=1e-6)
    assert [b.shape for b in engine.buffers] == [(4, 3, 4, 6), (4, 3, 8, 8)]  # one per shape, made when it came


def test_a_timing_line_with_an_escape_repr_never_writes_is_no_timing_line():
    """parse_timing_line gives None, as for any other line, where the quoted model name holds an escape that
    repr() never writes (a hand-edited or another program's line); it raised a SyntaxError."""
    from netdef.deploy.serve import CallTimes, parse_timing_line

    good = CallTimes(executions=2, items=5).line("m", "m_0")
    assert parse_timing_line(good)["items"] == 5
    assert parse_timing_line(good.replace("'m'", "'\\x'")) is None


def test_the_time_in_netdefs_execute_and_in_the_engine_is_counted_and_read_back():
    """CallTimes: executions, items, the model's execute and Engine.infer's time within it; the line each model
    instance writes when it stops is what bench_serve's `RESULT serve-callable` reads back."""
    from netdef.deploy.serve import CallTimes
    from netdef.deploy.stub_model import Request, raw_model

    meta = {"arch": {"name": "toy"}, "options": {"batch": [1, 4, 8], "profiles": None},
            "inputs": [{"name": "x", "shape": [-1, 2], "dtype": "float32"}],
            "outputs": [{"name": "y", "shape": [-1, 2], "dtype": "float32"}]}
    model = TimedModel(raw_model(HostEngine(lambda f: {"y": f["x"] * 2}, [(1, 4, 8)], delay_s=0.02),
                                 binding(meta), times := CallTimes()), times)
    requests = [Request({"x": np.ones((1, 2), np.float32)}), Request({"x": np.ones((2, 2), np.float32)})]
    assert [r["y"].shape for r in model.execute(requests)] == [(1, 2), (2, 2)]
    model.execute(requests[:1])
    assert (times.executions, times.items) == (2, 4)
    assert 0.04 <= times.engine_s <= times.callable_s
    line = times.line("toy", "toy_0_0")
    got = bench_serve().callable_lines(["serving ...", line])
    assert got == [f"RESULT serve-callable model=toy instance=toy_0_0 executions=2 items=4 callable_ms="
                   f"{1000 * times.callable_s / 2:.3f} engine_ms={1000 * times.engine_s / 2:.3f}"]


class TimedModel:
    """The stub's TritonPythonModel.execute around a model function, with Triton's request objects replaced by
    netdef's own `Request`s (what `execute` makes of them) and responses by the answers."""

    def __init__(self, run, times):
        from netdef.deploy.stub_model import TritonPythonModel

        self.model = TritonPythonModel()
        self.model.run, self.model.times = run, times
        self.model._request = lambda r: r
        self.model._response = lambda a: a

    def execute(self, requests):
        return self.model.execute(requests)


# ---------------------------------------------------------------- options and errors

@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "--port 0: must be 1..65535"),
    (["--grpc-port", "70000"], "--grpc-port 70000: must be 1..65535"),
    (["--port", "9000", "--metrics-port", "9000"], "--port, --grpc-port and --metrics-port must differ"),
    (["--max-batch", "33"], "--max-batch 33: must be within the engine's batches 1..32"),
    (["--max-batch", "x"], "--max-batch 'x': expected an integer"),
    (["--max-queue-delay-us", "-1"], "--max-queue-delay-us -1: must be >= 0"),
    (["--devices", "0,0"], "--devices 0,0: device(s) [0] listed more than once; add --allow-shared-device"),
    (["--devices", "0,x"], "--devices '0,x': expected device indices such as 0,1, or 'all'"),
    (["--device", "0", "--allow-shared-device"], "--allow-shared-device goes with --devices"),
    (["--detect"], "--detect: resnet18 has outputs"),
    (["--iou", "0.5"], "--conf, --iou, --max-det and --names set the images -> detections model, which is not "
                       "served for this engine: resnet18 has outputs"),
    (["--name", "a/b"], "a Triton model name is a folder name"),
    (["--instances", "0"], "--instances 0: must be >= 1"),
    (["--preferred-batch", "64"], "--preferred-batch 64: sizes must be within the batches the server forms, 1..32"),
])
def test_serve_option_errors_are_one_line(engines, args, message):
    r = run_cli("serve", str(engines("r18")), *args)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stdout == ""  # nothing started, nothing printed


def test_serve_refuses_a_port_in_use(engines):
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("serve", str(engines("r18")), "--grpc-port", str(port))
    assert r.returncode == 1 and f"--grpc-port {port}: the port is in use" in r.stderr, r.stderr


def test_serve_of_a_missing_engine(tmp_path):
    r = run_cli("serve", str(tmp_path / "none.engine"))
    assert r.returncode == 1 and "none.engine" in r.stderr and "Traceback" not in r.stderr


def test_missing_pytriton_says_how_to_install_it(engines, monkeypatch):
    real_import = builtins.__import__

    def no_pytriton(name, *args, **kwargs):
        if name == "pytriton" or name.startswith("pytriton."):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pytriton)
    with pytest.raises(NetdefError, match=r"needs PyTriton.*pip install nvidia-pytriton.*netdef\[serve\]"):
        import_pytriton()
    with pytest.raises(NetdefError, match="pip install nvidia-pytriton") as e:  # before any GPU work
        serve(engines("r18"), port=18000, grpc_port=18001, metrics_port=18002)
    # without a GPU, that too is said: installing PyTriton would not be enough
    assert ("a CUDA GPU with full TensorRT, which this machine lacks" in str(e.value)) == \
        (not trt_api.can_run_engines())


# ---------------------------------------------------------------- the server on the CPU

STAND_IN_ENGINE = """
import numpy as np

from netdef.deploy.plan import read_any_plan
from netdef.engine_file import profiles

LOADED = []


class StandIn:  # the engine's metadata, and for its network the mean of each image (TensorRT-RTX cannot run it)
    def __init__(self, path, device=None, cuda_graph=False):
        self.meta = read_any_plan(path)[0]
        self.profiles, self.device, self.graph_cache = profiles(self.meta), device, 8
        LOADED.append((str(path), device, cuda_graph, self))

    def host_buffer(self, shape, dtype):
        return np.zeros(shape, dtype)

    def infer(self, feeds, as_numpy):
        x = feeds["input"]
        assert any(lo <= len(x) <= hi for lo, _, hi in self.profiles), len(x)
        return {"logits": np.repeat(x.mean(axis=(1, 2, 3))[:, None], 1000, axis=1).astype(np.float32)}
"""
STAND_IN = STAND_IN_ENGINE + """

if __name__ == "__main__":  # netdef's command line, its Triton's model instances running the stand-in
    import os
    import sys

    from netdef.cli import main

    os.environ["NETDEF_STUB_ENGINE"] = os.path.splitext(os.path.basename(__file__))[0] + ":StandIn"
    sys.exit(main(sys.argv[1:]))
"""


def test_serve_on_the_cpu_with_a_stand_in_engine(engines, tmp_path):
    """`netdef serve` itself (PyTriton's Triton loading netdef's model repository: the Python stub running the
    engine, two instances, HTTP, gRPC, batcher, health, metrics, statistics, Ctrl-C) with the engine's runs replaced
    by numpy: Triton runs without a GPU. Needs pytriton and tritonclient; skips where PyTriton's Python stub does
    not fit this Python (pytriton issue 51: Python 3.11.7) or `netdef serve` refuses the install."""
    _serving_stack()
    grpc = pytest.importorskip("tritonclient.grpc", reason="needs pip install 'tritonclient[all]'")
    http = pytest.importorskip("tritonclient.http", reason="needs pip install 'tritonclient[all]'")
    import threading
    import urllib.request

    bs = bench_serve()
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    from netdef.deploy import serve_stats

    with stub_fits(), bs.running_server(engines("r18"), "--max-queue-delay-us", "100000", "--open-endpoints",
                                        "statistics", "--instances", "2",
                                        program=(sys.executable, str(script))) as server:
        for protocol, client in [(http, http.InferenceServerClient(server.http)),
                                 (grpc, grpc.InferenceServerClient(server.grpc))]:
            for batch in (1, 5, 32):
                x = bs.sample_inputs(server.spec, batch, seed=batch)
                got = bs.infer(client, protocol, server.spec, x)["logits"]
                np.testing.assert_allclose(got[:, 7], x["input"].mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6)
        before = serve_stats.counters(serve_stats.model_statistics(server.http, "resnet18"), "resnet18")

        def one(k: int) -> None:
            x = {"input": np.full((1, 3, 224, 224), k, np.float32)}
            assert bs.infer(grpc.InferenceServerClient(server.grpc), grpc, server.spec, x)["logits"][0, 0] == k

        threads = [threading.Thread(target=one, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = serve_stats.counters(serve_stats.model_statistics(server.http, "resnet18"), "resnet18")
        got = serve_stats.summary(serve_stats.delta(before, after))
        assert got["requests"] == 16 and got["executions"] < 16, got  # the batcher joined requests
        assert urllib.request.urlopen(f"http://{server.http}/v2/health/ready").status == 200
        metrics = urllib.request.urlopen(f"http://{server.metrics}/metrics").read().decode()
        assert 'nv_inference_request_success{model="resnet18",version="1"} 22' in metrics
    assert server.process.returncode == 0 and "stopped" in "".join(server.output[-3:]), server.output[-5:]
    assert any(line.startswith("health   http://localhost:") for line in server.output)
    timing = bs.callable_lines(server.output)  # logged when it stopped: each instance's share of the 22 requests'
    items = [int(line.split(" items=")[1].split()[0]) for line in timing]  # 92 items (2 x (1 + 5 + 32) + 16)
    assert len(timing) == 2 and sum(items) == 92 and all("model=resnet18 instance=" in t for t in timing), timing


def test_serve_takes_uint8_images_on_the_cpu(engines, tmp_path):
    """An engine of uint8 input served through Triton and the Python stub (the stand-in's mean of each image):
    the model's input is TYPE_UINT8, and uint8 batches over HTTP and gRPC reach the engine as the clients sent
    them, joined in uint8 host buffers."""
    _serving_stack()
    grpc = pytest.importorskip("tritonclient.grpc", reason="needs pip install 'tritonclient[all]'")
    http = pytest.importorskip("tritonclient.http", reason="needs pip install 'tritonclient[all]'")
    bs = bench_serve()
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    with stub_fits(), bs.running_server(engines("r18_u8"), "--max-queue-delay-us", "1000",
                                        program=(sys.executable, str(script))) as server:
        assert server.spec.inputs[0].dtype == "uint8"
        clients = [(http, http.InferenceServerClient(server.http)), (grpc, grpc.InferenceServerClient(server.grpc))]
        meta = clients[0][1].get_model_metadata("resnet18")
        assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [("input", "UINT8")]
        for protocol, client in clients:
            x = bs.sample_inputs(server.spec, 5, seed=3)
            assert x["input"].dtype == np.uint8
            got = bs.infer(client, protocol, server.spec, x)["logits"]
            np.testing.assert_allclose(got[:, 0], x["input"].mean(axis=(1, 2, 3)), rtol=1e-5)
            client.close()  # an open connection holds Triton up when it stops
    assert server.process.returncode == 0, server.output[-5:]


def test_serve_names_the_stub_s_exception_where_a_model_fails_to_load(engines, tmp_path):
    """An engine that fails to load inside the stub (here the stand-in raises) stops `netdef serve` with exit
    status 1 and one error naming the model and the exception, once Triton has tried: no hang, no timing lines.
    Skips as the stand-in test above does."""
    _serving_stack()
    bs = bench_serve()
    script = tmp_path / "stand_in_fails.py"
    script.write_text(STAND_IN.replace("        self.meta = read_any_plan(path)[0]",
                                       "        raise RuntimeError(f'no GPU for {path.name if hasattr(path, \"name\") "
                                       "else path}')"))
    with stub_fits(), pytest.raises(NetdefError) as err:
        with bs.running_server(engines("r18"), program=(sys.executable, str(script))):
            pass
    text = str(err.value)
    assert "netdef serve exited with status 1 before it was ready" in text, text[-2000:]
    want = "netdef serve: error: Triton could not load model 'resnet18': RuntimeError: no GPU for "
    assert want in text, text[-2000:]
    assert "timing   model" not in text


def test_load_test_inputs_in_system_shared_memory(engines, tmp_path):
    """bench_serve's `--shared-memory system` (perf_analyzer's): each client's inputs in a shared-memory region
    it registers with the server, answered as over the wire, and unregistered and freed when the client ends;
    a server that keeps the shared-memory endpoint behind PyTriton's token is an error saying how to open it.
    Runs the stand-in server on the CPU; skips as the stand-in test above does."""
    _serving_stack()
    import tritonclient.grpc as grpc

    bs = bench_serve()
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    for endpoints in ("statistics,shared-memory", "statistics"):
        with stub_fits(), bs.running_server(engines("r18"), "--open-endpoints", endpoints,
                                            program=(sys.executable, str(script))) as server:
            requests = bs.Requests(server.grpc, server.spec, shared_memory=True)
            if endpoints == "statistics":
                with pytest.raises(NetdefError, match="serve with --open-endpoints shared-memory"):
                    requests.client()
                assert bs.load_test(server, 2, 0.3, warmup=1, processes=1).get("requests")  # over the wire
                continue
            client = requests.client()
            regions = client.connection.get_system_shared_memory_status(as_json=True)["regions"]
            assert [r["byte_size"] for r in regions.values()] == [str(3 * 224 * 224 * 4)]
            got = requests(client).as_numpy("logits")
            np.testing.assert_allclose(got[0, 7], requests.feeds["input"].mean(), rtol=1e-5, atol=1e-6)
            requests.close(client)
            assert client.region is None and \
                grpc.InferenceServerClient(server.grpc).get_system_shared_memory_status(as_json=True) == {}
            got = bs.load_test(server, 4, 0.5, warmup=1, processes=2, shared_memory=True)
            assert got["requests"] > 0 and got["concurrency"] == 4
            assert grpc.InferenceServerClient(server.grpc).get_system_shared_memory_status(as_json=True) == {}


# ---------------------------------------------------------------- images -> detections (NAME_detect)

PLUGIN_OUTPUTS = [{"name": "num_dets", "shape": [-1, 1], "dtype": "int32"},
                  {"name": "boxes", "shape": [-1, 100, 4], "dtype": "float32"},
                  {"name": "scores", "shape": [-1, 100], "dtype": "float32"},
                  {"name": "classes", "shape": [-1, 100], "dtype": "int32"}]


def toy_meta(batch=(1, 4, 8), outputs=PLUGIN_OUTPUTS, name="yolov5s"):
    return {"arch": {"name": name}, "options": {"batch": list(batch), "profiles": None},
            "inputs": [{"name": "images", "shape": [-1, 3, 64, 64], "dtype": "float32"}], "outputs": outputs}


def encoded(image: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def content_model(batch):
    """A fake raw YOLOv5 engine (nc 2): per image the box of its letterboxed content (non-grey pixels), class 0 at
    0.9 * 0.5, and its middle half, class 1 at 0.9 * 0.8."""
    import torch

    pred = torch.zeros(batch.shape[0], 10, 7)
    for i in range(batch.shape[0]):
        content = (batch[i].sub(114 / 255).abs().sum(0) > 1e-6).nonzero()
        if not len(content):  # a padding image
            continue
        (y0, x0), (y1, x1) = content.min(0).values.tolist(), content.max(0).values.tolist()
        cx, cy, w, h = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2, x1 + 1 - x0, y1 + 1 - y0
        pred[i, 0, :5], pred[i, 0, 6] = torch.tensor([cx, cy, w / 2, h / 2, 0.9]), 0.8
        pred[i, 1, :6] = torch.tensor([cx, cy, w, h, 0.9, 0.5])
    return {"output": pred}


class Req:
    """What the detect model's function reads of a PyTriton request: inputs by name and `parameters`."""

    def __init__(self, images, parameters=None):
        self.data = {"image": np.array([[x] for x in images], dtype=object)}
        self.parameters = parameters

    def __getitem__(self, name):
        return self.data[name]


def fake_detectors():
    """settings -> a CPU Detector over `content_model` (64x64 input, batches 1..4), and the settings asked for."""
    pytest.importorskip("torchvision")
    from dataclasses import replace

    from netdef.tools.detect import Detector, OutputLayout

    base = Detector(content_model, (64, 64), OutputLayout("raw", {"pred": "output"}), batch_range=(1, 4),
                    names=["whole", "middle"])
    asked = []

    def make(s):
        asked.append(s)
        return replace(base, conf=base.conf if s.conf is None else s.conf, max_det=s.max_det,
                       iou=base.iou if s.iou is None else s.iou)

    return make, asked


def test_detect_model_binding_follows_the_raw_one():
    from netdef.deploy.serve_detect import detect_binding, detector_error

    meta = toy_meta()
    assert detector_error(meta) is None
    assert "r has outputs logits [-1, 1000]: expected either the NMS plugin" in detector_error(
        toy_meta(outputs=[{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}], name="r"))
    spec = detect_binding(binding(meta, max_queue_delay_us=300), 7)
    assert spec.name == "yolov5s_detect" and spec.inputs == (TensorSpec("image", "bytes", (1,)),)
    assert [(t.name, t.dtype, t.shape) for t in spec.outputs] == [
        ("num_dets", "int32", (1,)), ("boxes", "float32", (7, 4)), ("scores", "float32", (7,)),
        ("classes", "int32", (7,)), ("detections", "bytes", (1,))]
    assert (spec.max_batch_size, spec.preferred_batch_sizes, spec.max_queue_delay_us) == (8, (4,), 300)
    capped = detect_binding(binding(meta, name="d", max_batch=2), 7)
    assert (capped.name, capped.max_batch_size, capped.preferred_batch_sizes) == ("d_detect", 2, ())
    whole = detect_binding(binding(toy_meta(batch=(8, 8, 8))), 7)  # no batching for the raw model: the detector
    assert whole.max_batch_size == 8                                 # pads the images up to 8 itself
    with pytest.raises(OptionError, match="--max-det 0: must be >= 1"):
        detect_binding(spec, 0)


def test_repository_of_both_models_parses_with_triton_s_schema(tmp_path, monkeypatch):
    """`write_repository`: per model a model.py (the stub's shim) and a config.pbtxt for the Python backend that
    parses with Triton's schema: tensors and batching from the bindings, a KIND_GPU group per device (a device
    listed twice: count 2), and the model's settings as the parameter the stub reads."""
    pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs pip install 'tritonclient[grpc]'")
    from google.protobuf import text_format

    from netdef.deploy.serve import write_repository
    from netdef.deploy.serve_detect import DetectSettings
    from netdef.deploy.stub_model import ENGINE_ENV, MODEL_PY, Settings

    monkeypatch.delenv(ENGINE_ENV, raising=False)
    models = write_repository(tmp_path / "m", tmp_path / "t", Path("/e/y.engine"), toy_meta(), [0, 1, 0],
                              max_queue_delay_us=100, detect=True, detect_settings=DetectSettings(conf=0.4, max_det=5),
                              names=["a", "b"], cuda_graphs=True)
    assert models == ["yolov5s", "yolov5s_detect"]
    configs = {}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == models  # nothing else for Triton to poll
    for m in models:
        assert (tmp_path / "m" / m / "1" / "model.py").read_text() == MODEL_PY
        c = configs[m] = text_format.Parse((tmp_path / "m" / m / "config.pbtxt").read_text(), pb2.ModelConfig())
        assert c.backend == "python" and not c.platform and c.name == m
        assert [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind), list(g.gpus)) for g in c.instance_group] == [
            (2, "KIND_GPU", [0]), (1, "KIND_GPU", [1])]
        settings = Settings.of_config({"parameters": {k: {"string_value": v.string_value}
                                                      for k, v in c.parameters.items()}})
        assert (settings.engine, settings.role, settings.max_queue_delay_us, settings.names, settings.cuda_graphs) == (
            "/e/y.engine", "raw" if m == "yolov5s" else "detect", 100, ["a", "b"], True)
        assert settings.detect == {"conf": 0.4, "iou": None, "max_det": 5}
        assert Path(settings.timing_dir) == tmp_path / "t" and Path(settings.timing_dir).is_dir()
    name = pb2.DataType.Name
    c = configs["yolov5s_detect"]
    assert c.max_batch_size == 8 and list(c.dynamic_batching.preferred_batch_size) == [4]
    assert c.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(t.name, name(t.data_type), list(t.dims)) for t in c.input] == [("image", "TYPE_STRING", [1])]
    assert [(t.name, name(t.data_type), list(t.dims)) for t in c.output] == [
        ("num_dets", "TYPE_INT32", [1]), ("boxes", "TYPE_FP32", [5, 4]), ("scores", "TYPE_FP32", [5]),
        ("classes", "TYPE_INT32", [5]), ("detections", "TYPE_STRING", [1])]
    r = configs["yolov5s"]
    assert r.max_batch_size == 8 and [(t.name, list(t.dims)) for t in r.input] == [("images", [3, 64, 64])]
    assert [(t.name, list(t.dims)) for t in r.output] == [
        ("num_dets", [1]), ("boxes", [100, 4]), ("scores", [100]), ("classes", [100])]
    monkeypatch.setenv(ENGINE_ENV, "stand_in:StandIn")  # a stand-in engine: CPU instances, one per device entry
    write_repository(tmp_path / "cpu", tmp_path / "t", Path("/e/y.engine"), toy_meta(), [0, 0, 0], 2, name="n")
    c = text_format.Parse((tmp_path / "cpu" / "n" / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind), list(g.gpus)) for g in c.instance_group] == [
        (6, "KIND_CPU", [])]  # --instances 2 on each of three entries
    monkeypatch.delenv(ENGINE_ENV)
    write_repository(tmp_path / "gpu", tmp_path / "t", Path("/e/y.engine"), toy_meta(), [1, 0, 1], 3, name="n")
    c = text_format.Parse((tmp_path / "gpu" / "n" / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert [(g.count, list(g.gpus)) for g in c.instance_group] == [(6, [1]), (3, [0])]


class FakeBackendUtils:
    """What the stub's model uses of Triton's `triton_python_backend_utils`: requests' inputs and parameters,
    tensors, responses (outputs or an error)."""

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class TritonError(str):
        pass

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.outputs, self.error = {t.name: t.array for t in output_tensors}, error

    class Request:
        def __init__(self, inputs, parameters=""):
            self.inputs, self._parameters = inputs, parameters

        def parameters(self):
            return self._parameters

    @classmethod
    def get_input_tensor_by_name(cls, request, name):
        return cls.Tensor(name, request.inputs[name])


def test_the_stub_s_model_class_serves_and_writes_its_timing_line(engines, tmp_path, monkeypatch):
    """TritonPythonModel as Triton's Python backend drives it, with a fake backend module and a stand-in engine:
    initialize reads the settings parameter and loads the engine (the NETDEF_STUB_ENGINE class, on the instance's
    GPU for KIND_GPU); execute answers each request with its rows; finalize writes the instance's timing line."""
    from netdef.deploy.serve import parse_timing_line, stub_config
    from netdef.deploy.stub_model import ENGINE_ENV, Settings, TritonPythonModel

    module = tmp_path / "stub_stand_in.py"
    module.write_text(STAND_IN_ENGINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(ENGINE_ENV, "stub_stand_in:StandIn")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", FakeBackendUtils)
    engine = engines("r18")  # ResNet-18, 1:8:32: its header is what the stand-in reads
    meta = engine_file.read_meta(engine)
    settings = Settings(engine=str(engine), role="raw", timing_dir=str(tmp_path), cuda_graphs=True)
    config = stub_config(binding(meta), [3], "KIND_GPU", settings)
    config["parameters"] = {p["key"]: p["value"] for p in config["parameters"]}  # Triton's JSON form
    model = TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_instance_kind": "GPU",
                      "model_instance_device_id": "3", "model_instance_name": "resnet18_0_3"})
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    answers = model.execute([FakeBackendUtils.Request({"input": x[:2]}), FakeBackendUtils.Request({"input": x[2:]})])
    assert [a.error for a in answers] == [None, None]
    np.testing.assert_allclose(answers[0].outputs["logits"][:, 5], x[:2].mean(axis=(1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(answers[1].outputs["logits"][:, 5], x[2:].mean(axis=(1, 2, 3)), rtol=1e-6)
    model.finalize()
    got = parse_timing_line((tmp_path / "resnet18.resnet18_0_3.timing").read_text().strip())
    assert (got["model"], got["instance"], got["executions"], got["items"]) == ("resnet18", "resnet18_0_3", 1, 3)
    loaded = sys.modules["stub_stand_in"].LOADED
    assert [entry[:3] for entry in loaded] == [(str(engine), 3, True)]  # the instance's device; graphs asked for
    assert loaded[0][3].graph_cache == 32  # a graph kept for every batch size the engine takes (1..32)


def test_detect_function_on_encoded_images():
    """Two requests of the same settings run as one detector call (three images of different sizes, PNG and
    JPEG); a request with max_det 1 as another. Outputs padded to K = 4 rows, the JSON record equal to the
    detector's own on the decoded image, the tensors its values."""
    import json

    from netdef.deploy.serve_detect import DetectSettings, detect_function, request_settings
    from netdef.tools.images import read_image

    make, asked = fake_detectors()
    images = [np.full((40, 60, 3), 200, np.uint8), np.full((90, 30, 3), 30, np.uint8),
              np.full((64, 64, 3), 250, np.uint8)]
    data = [encoded(images[0], "PNG"), encoded(images[1], "JPEG"), encoded(images[2], "PNG")]
    fn = detect_function(make, DetectSettings(max_det=4))
    outs = fn([Req(data[:2]), Req(data[2:], {"max_det": 1}), Req(data[2:])])
    assert asked == [DetectSettings(max_det=4), DetectSettings(max_det=1)]  # one call per distinct settings
    assert [o["num_dets"].tolist() for o in outs] == [[[2], [2]], [[1]], [[2]]]
    assert [o["boxes"].shape for o in outs] == [(2, 4, 4), (1, 4, 4), (1, 4, 4)]
    for o in outs:
        assert {k: v.dtype.kind for k, v in o.items()} == {"num_dets": "i", "boxes": "f", "scores": "f",
                                                          "classes": "i", "detections": "O"}
    for o, pos, im in [(outs[0], 0, 0), (outs[0], 1, 1), (outs[2], 0, 2)]:
        record = json.loads(o["detections"][pos, 0])
        want = make(DetectSettings(max_det=4))([read_image(io.BytesIO(data[im]))], [str(pos)])[0]
        assert record == want and record["image"] == str(pos)
        h, w = images[im].shape[:2]
        assert (record["height"], record["width"], record["names"]) == (h, w, ["middle", "whole"])
        np.testing.assert_allclose(record["boxes"][0], [w / 4, h / 4, 3 * w / 4, 3 * h / 4], atol=2.5 * max(h, w) / 64)
        np.testing.assert_allclose(record["boxes"][1], [0, 0, w, h], atol=2.5 * max(h, w) / 64)
        np.testing.assert_array_equal(o["boxes"][pos, :2], np.float32(record["boxes"]))
        np.testing.assert_array_equal(o["scores"][pos, :2], np.float32(record["scores"]))
        assert o["classes"][pos, :2].tolist() == record["classes"] == [1, 0]
        assert not o["boxes"][pos, 2:].any() and not o["scores"][pos, 2:].any() and not o["classes"][pos, 2:].any()
    assert outs[1]["classes"][0, 0] == 1 and json.loads(outs[1]["detections"][0, 0])["scores"] == [0.72]
    assert request_settings({"conf": "0.5", "iou": 0.6}, DetectSettings(), 300) == DetectSettings(0.5, 0.6)
    assert DetectSettings().rows == 300 and DetectSettings(max_det=7).rows == 7  # outputs padded to the default
    assert request_settings({"conf": 1, "max_det": "7"}, DetectSettings(), 300) == DetectSettings(1.0, None, 7)


@pytest.mark.parametrize("requests, message", [
    ([[b"\x89PNG garbage"]], r"this request, image 0: cannot read image <12 bytes>"),
    ([["x"]], "this request, image 0: expected the bytes of an encoded image, got str"),
    ([None, [b""]], r"this request, image 0: cannot read image <0 bytes>"),
    ([None, None, ({"conf": "high"},)], r"this request: request parameter conf='high': expected a number"),
    ([({"conf": 1.5},)], r"request parameter conf=1.5: must be 0..1"),
    ([({"max_det": 5},)], r"request parameter max_det=5: must be 1..4 \(the server's --max-det"),
    ([({"max_det": 2.5},)], r"request parameter max_det=2.5: expected an integer"),
    ([({"max_det": True},)], r"request parameter max_det=True: expected an integer"),
    ([({"iou": "nan"},)], r"request parameter iou='nan': expected a number"),
    ([({"confidence": 0.5},)], r"unknown request parameter\(s\) \['confidence'\]: this model takes conf, iou, "
                               "max_det"),
])
def test_detect_function_errors_name_the_request(requests, message):
    """A bad image or parameter fails its own request (the last of the batch here) with an error naming the item,
    the batch's other requests answered; the function keeps answering afterwards (the server keeps serving)."""
    from netdef.deploy.serve_detect import DetectSettings, detect_function

    make, _ = fake_detectors()
    good = encoded(np.full((20, 20, 3), 200, np.uint8), "PNG")
    fn = detect_function(make, DetectSettings(max_det=4))
    batch = [Req([good], r[0]) if isinstance(r, tuple) else Req(r or [good]) for r in requests]
    answers = fn(batch)
    assert isinstance(answers[-1], NetdefError) and re.search(message, str(answers[-1])), answers[-1]
    assert all(a["num_dets"].tolist() == [[2]] for a in answers[:-1])
    assert fn([Req([good])])[0]["num_dets"].tolist() == [[2]]


def test_the_stub_s_detect_model_fails_only_the_bad_request():
    """Inside the stub a bad image fails its own request (the error names it as "this request"); the other requests
    of the batch Triton formed are answered, the good ones of the same settings in one detector call; a request with
    a bad image and a bad parameter is told both."""
    from netdef.deploy.serve_detect import DetectSettings, detect_function
    from netdef.deploy.stub_model import Request

    make, asked = fake_detectors()
    good = encoded(np.full((20, 20, 3), 200, np.uint8), "PNG")
    run = detect_function(make, DetectSettings(max_det=4))
    answers = run([Request({"image": np.array([[good]], dtype=object)}),
                   Request({"image": np.array([[b"nope!"]], dtype=object)}),
                   Request({"image": np.array([[good], [good]], dtype=object)}, {"max_det": 1}),
                   Request({"image": np.array([[good]], dtype=object)}),
                   Request({"image": np.array([[b""]], dtype=object)}, {"conf": 2})])
    assert answers[0]["num_dets"].tolist() == answers[3]["num_dets"].tolist() == [[2]]
    assert answers[2]["num_dets"].tolist() == [[1], [1]]
    assert asked == [DetectSettings(max_det=4), DetectSettings(max_det=1)]  # one call per distinct settings
    assert isinstance(answers[1], NetdefError)
    assert str(answers[1]).startswith("this request, image 0: cannot read image <5 bytes>"), answers[1]
    assert str(answers[4]).startswith("this request: request parameter conf=2: must be 0..1; this request, image 0: "
                                      "cannot read image <0 bytes>"), answers[4]


def test_engine_detectors_are_made_once_per_settings(monkeypatch):
    """The server's settings are checked when serving starts (their error as it is); a request's settings the
    engine refuses name the request parameters."""
    from netdef.deploy.serve_detect import DetectSettings, engine_detectors
    from netdef.tools import detect

    calls = []

    def fake(engine, conf, iou, max_det, names, **kw):
        calls.append((engine, conf, iou, max_det, names))
        if conf is not None and conf < 0.25:
            raise NetdefError(f"y.engine filters scores at conf 0.25 inside its NMS plugin; --conf {conf} cannot "
                              "lower it")
        return object()

    monkeypatch.setattr(detect, "engine_detector", fake)
    with pytest.raises(NetdefError, match=r"^y\.engine filters scores at conf 0\.25"):
        engine_detectors("E", DetectSettings(conf=0.1))
    make = engine_detectors("E", DetectSettings(max_det=50), ["a", "b"])
    assert make(DetectSettings(max_det=50)) is make(DetectSettings(max_det=50))
    assert calls[1:] == [("E", None, None, 50, ["a", "b"])]
    make(DetectSettings(conf=0.5, max_det=50))
    assert calls[-1] == ("E", 0.5, None, 50, ["a", "b"])
    with pytest.raises(NetdefError, match=r"^request parameters conf=0\.1, iou=None, max_det=50: y\.engine filters"):
        make(DetectSettings(conf=0.1, max_det=50))


@pytest.fixture(scope="module")
def plugin_engine(engines, tmp_path_factory):
    """ResNet-18's plan under a YOLOv5s plugin-head header: what `netdef serve` reads before any GPU work."""
    from test_deploy import write_engine_with_plugin_header

    out = tmp_path_factory.mktemp("serve_plugin")
    path = out / "y5s_plugin.engine"
    write_engine_with_plugin_header(engines("r18"), path, out / "libyolo_decode_nms-test.so")
    return path


@pytest.mark.parametrize("args, message", [
    (["--no-detect", "--conf", "0.3"], "--conf, --iou, --max-det and --names set the images -> detections model, "
                                       "which is not served with --no-detect"),
    (["--max-det", "0"], "--max-det 0: must be >= 1"),
    (["--conf", "2"], "--conf 2: must be 0.0..1.0"),
    (["--names", "missing-names.txt"], "cannot read class names missing-names.txt"),
])
def test_serve_detect_option_errors(plugin_engine, args, message):
    r = run_cli("serve", str(plugin_engine), *args)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stdout == ""


def test_serve_decides_on_the_detect_model(engines, plugin_engine):
    from netdef.deploy.serve import serves_detections

    plugin, r18 = engine_file.read_meta(plugin_engine), engine_file.read_meta(engines("r18"))
    assert serves_detections(plugin, None) and serves_detections(plugin, True)
    assert not serves_detections(plugin, False) and not serves_detections(r18, None)
    assert not serves_detections(r18, False)


def test_serve_stops_before_triton_where_the_detector_is_refused(plugin_engine, monkeypatch):
    """The detect model's detector is made (and its errors raised) before Triton starts, with the way out."""
    pytest.importorskip("pytriton", reason="needs pip install nvidia-pytriton")
    import pytriton.triton

    import netdef.deploy.serve as serve_module
    import netdef.runtime
    from netdef.tools import detect

    class StandIn:
        def __init__(self, path, device=None):
            self.meta, self.device, self.profiles = engine_file.read_meta(path), device or 0, [(1, 8, 32)]

        @classmethod
        def described(cls, path):
            return cls(path)

    def refuse(engine, conf, iou, max_det, names, **kw):
        raise NetdefError("y.engine: input images [-1, 3, -1, -1] is not a static (B, 3, H, W) image")

    started = []
    monkeypatch.setattr(netdef.runtime, "Engine", StandIn)
    monkeypatch.setattr(detect, "engine_detector", refuse)
    monkeypatch.setattr(pytriton.triton, "Triton", lambda **kwargs: started.append(kwargs))
    monkeypatch.setattr(serve_module, "check_pytriton_install", lambda: None)  # this install's fitness: not the point
    port, grpc, metrics = bench_serve().free_ports(3)
    with pytest.raises(NetdefError, match=r"is not a static \(B, 3, H, W\) image \(for model 'resnet18_detect'; "
                                          r"--no-detect serves the raw tensors alone\)$"):
        serve(plugin_engine, port=port, grpc_port=grpc, metrics_port=metrics)
    assert started == []


def test_serve_checks_the_names_count_against_the_header_before_loading(plugin_engine, tmp_path, monkeypatch):
    """`serve --names FILE` with a count other than the class count the header records is refused before the
    engine is loaded on a GPU (and before PyTriton is needed), naming both files and the way out."""
    import netdef.deploy.serve as serve_module
    from netdef.class_names import load_names
    from netdef.runtime import Engine

    meta, plan = engine_file.read_plan(plugin_engine)
    engine = tmp_path / "y.engine"
    engine_file.write_engine(engine, plan, meta | {"model": {"task": "detect", "nc": 80, "head": "plugin",
                                                             "stride": 32}})
    three = tmp_path / "three.txt"
    three.write_text("cat\ndog\nfox\n")
    loaded = []
    monkeypatch.setattr(Engine, "__init__", lambda self, *a, **kw: loaded.append(a) or 1 / 0)
    monkeypatch.setattr(serve_module, "import_pytriton", lambda: loaded.append("pytriton") or 1 / 0)
    port, grpc, metrics = bench_serve().free_ports(3)
    with pytest.raises(NetdefError, match=rf"^{re.escape(str(three))}: 3 class names, but {re.escape(str(engine))} "
                                          r"holds a model of 80 classes: give one name per class \(for model "
                                          r"'resnet18_detect'; --no-detect serves the raw tensors alone\)$"):
        serve(engine, port=port, grpc_port=grpc, metrics_port=metrics, names=load_names(three), names_from=three)
    assert loaded == []
    r = run_cli("serve", str(engine), "--names", str(three), "--port", str(port), "--grpc-port", str(grpc),
                "--metrics-port", str(metrics))
    assert r.returncode == 1 and "3 class names, but" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    eighty = tmp_path / "eighty.txt"  # the right count passes the header's check and goes on to load
    eighty.write_text("".join(f"c{i}\n" for i in range(80)))
    with pytest.raises(ZeroDivisionError):
        serve(engine, port=port, grpc_port=grpc, metrics_port=metrics, names=load_names(eighty), names_from=eighty)
    assert loaded == ["pytriton"]


STAND_IN_DETECT = """
import netdef.tools.detect as detect
from test_serve import content_model


def cpu_detector(engine, conf, iou, max_det, names, **kw):  # netdef detect's Detector, on the CPU, over content_model
    return detect.Detector(content_model, (64, 64), detect.OutputLayout("raw", {"pred": "output"}),
                           0.25 if conf is None else conf, 0.45 if iou is None else iou, max_det, (1, 4))


detect.engine_detector = cpu_detector
"""


def test_serve_detect_on_the_cpu_with_a_stand_in_engine(plugin_engine, tmp_path):
    """`netdef serve` of a detector engine through Triton (no GPU: the detector runs `content_model` on the CPU):
    encoded images of several sizes in one request, request parameters, a bad image fails its request and the
    server keeps answering. Skips as the stand-in test above does."""
    _serving_stack()
    pytest.importorskip("torchvision")
    http = pytest.importorskip("tritonclient.http", reason="needs pip install 'tritonclient[all]'")
    import json

    bs = bench_serve()
    script = tmp_path / "stand_in_detect.py"
    script.write_text(STAND_IN_ENGINE + STAND_IN_DETECT + STAND_IN[len(STAND_IN_ENGINE):])
    images = [np.full((40, 60, 3), 200, np.uint8), np.full((90, 30, 3), 30, np.uint8)]
    with stub_fits(), bs.running_server(plugin_engine, "--max-det", "4",
                                        program=(sys.executable, str(script))) as server:
        model = server.spec.name + "_detect"  # resnet18_detect: the header keeps ResNet-18's arch name
        assert server.models == (server.spec.name, model)
        client = http.InferenceServerClient(server.http)
        got = bs.detect(client, http, model, [encoded(images[0], "PNG"), encoded(images[1], "JPEG")])
        assert got["num_dets"].tolist() == [[2], [2]] and got["boxes"].shape == (2, 4, 4)
        records = [json.loads(d) for d in got["detections"][:, 0]]
        assert [(r["height"], r["width"], r["classes"]) for r in records] == [(40, 60, [1, 0]), (90, 30, [1, 0])]
        one = bs.detect(client, http, model, [encoded(images[0], "PNG")], {"max_det": 1})
        assert one["num_dets"].tolist() == [[1]]
        with pytest.raises(Exception, match=r"this request, image 0: cannot read image <5 bytes>"):
            bs.detect(client, http, model, [b"nope!"])
        assert bs.detect(client, http, model, [encoded(images[1], "PNG")])["num_dets"].tolist() == [[2]]
    assert any(model in line for line in server.output)


def test_bench_serve_reads_the_options_as_netdef_serve_declares_them():
    """scripts/bench_serve.py finds the model name and batching among the options it passes on with `netdef
    serve`'s own declaration (add_serve_options): the same values, and the command's error for a bad one."""
    got = bench_serve()._binding_args(["--name", "r18", "--max-batch", "16", "--max-queue-delay-us", "500",
                                       "--devices", "0,1", "--no-detect", "--conf", "0.3"])
    assert got == {"name": "r18", "max_batch": 16, "max_queue_delay_us": 500, "preferred_batch": None,
                   "detect": False}
    assert bench_serve()._binding_args(["--preferred-batch", "none"]) == {
        "name": None, "max_batch": None, "max_queue_delay_us": None, "preferred_batch": (), "detect": None}
    with pytest.raises(OptionError, match=r"^--max-batch 0: must be >= 1$"):
        bench_serve()._binding_args(["--max-batch", "0"])


# ---------------------------------------------------------------- on the GPU

def _serving_stack():
    """Skips where PyTriton or tritonclient is missing, or where `netdef serve` refuses this PyTriton install
    (numpy outside its range, libraries it cannot find): the skip reason says why."""
    pytest.importorskip("pytriton", reason="needs pip install nvidia-pytriton")
    pytest.importorskip("tritonclient.grpc", reason="needs pip install 'tritonclient[all]'")
    pytest.importorskip("tritonclient.http", reason="needs pip install 'tritonclient[all]'")
    from netdef.deploy.serve import check_pytriton_install

    try:
        check_pytriton_install()
    except NetdefError as e:
        pytest.skip(str(e))


@pytest.mark.gpu
@pytest.mark.parametrize("name, args", [("r18_fp16", ()), ("r50_fp16", ()), ("y5s_plugin_fp16", ()),
                                        ("r18_fp16", ("--cuda-graphs",))])
def test_serve_answers_like_the_engine(engines, name, args):
    """Requests one at a time (each its own batch): HTTP and gRPC give exactly what `Engine.infer` gives (the
    plugin-head detector as raw tensors: num_dets, boxes, scores, classes), with `--cuda-graphs` too (a graph per
    batch size replayed)."""
    _serving_stack()
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    from netdef.runtime import Engine

    bs = bench_serve()
    engine = engines(name)
    direct = Engine(engine)
    with stub_fits(), bs.running_server(engine, *args) as server:
        for protocol, client in [(http, http.InferenceServerClient(server.http)),
                                 (grpc, grpc.InferenceServerClient(server.grpc))]:
            top = server.spec.max_batch_size
            for batch in (1, 3, top):
                feeds = bs.sample_inputs(server.spec, batch, seed=batch)
                got = bs.infer(client, protocol, server.spec, feeds)
                want = direct.infer(feeds, as_numpy=True)
                assert set(got) == set(want)
                for k in want:
                    np.testing.assert_array_equal(got[k], want[k], err_msg=f"{protocol.__name__} batch {batch} {k}")
            with pytest.raises(Exception, match="(?i)batch.?size"):  # above max_batch_size: Triton refuses it
                bs.infer(client, protocol, server.spec, bs.sample_inputs(server.spec, top + 1))


@pytest.mark.gpu
def test_serve_detect_answers_like_netdef_detect(engines, tmp_path):
    """YOLOv5s with the plugin head: `NAME_detect` over HTTP and gRPC gives, for two photos (JPEG and PNG, sizes
    differing) in one request, exactly `netdef detect`'s records (but "image": the item's index) and tensors
    holding their values; a raised conf as a request parameter; a bad image fails its request, and the server
    answers the next one."""
    _serving_stack()
    import json

    import tritonclient.grpc as grpc
    import tritonclient.http as http

    from test_detect import photo_files
    from netdef.tools.detect import detect

    files = photo_files(tmp_path / "photos")[:2]  # astronaut.jpg 512x512, coffee.png 400x600
    data = [f.read_bytes() for f in files]
    engine = engines("y5s_plugin_fp16")
    want = {None: detect(engine, files), 0.5: detect(engine, files, conf=0.5)}
    assert sum(len(r["boxes"]) for r in want[None]) >= sum(len(r["boxes"]) for r in want[0.5]) > 0
    bs = bench_serve()
    with stub_fits(), bs.running_server(engine, "--max-det", "300") as server:
        model = server.spec.name + "_detect"
        assert server.models == (server.spec.name, model)
        for protocol, client in [(http, http.InferenceServerClient(server.http)),
                                 (grpc, grpc.InferenceServerClient(server.grpc))]:
            for conf, records in want.items():  # conf a double over HTTP, a string over gRPC
                parameters = None if conf is None else {"conf": conf if protocol is http else str(conf)}
                got = bs.detect(client, protocol, model, data, parameters)
                assert got["boxes"].shape == (2, 300, 4) and got["detections"].shape == (2, 1)
                for k, rec in enumerate(records):
                    n = len(rec["boxes"])
                    assert json.loads(got["detections"][k, 0]) == {**rec, "image": str(k)}, (protocol.__name__, k)
                    assert got["num_dets"][k, 0] == n
                    np.testing.assert_array_equal(got["boxes"][k, :n], np.float32(rec["boxes"]).reshape(n, 4))
                    np.testing.assert_array_equal(got["scores"][k, :n], np.float32(rec["scores"]))
                    assert got["classes"][k, :n].tolist() == rec["classes"] and not got["boxes"][k, n:].any()
            with pytest.raises(Exception, match=r"this request, image 0: cannot read image"):
                bs.detect(client, protocol, model, [b"not an image"])
            assert bs.detect(client, protocol, model, data[:1])["num_dets"][0, 0] == len(want[None][0]["boxes"])


@dataclass(frozen=True)
class FakeRequests:
    """A load-test client's requests without a server: each takes 2 ms; with `fail`, those after the warm-up raise;
    with `die`, making a client ends its process with that exit code."""

    fail: bool = False
    die: int = 0

    def client(self) -> dict:
        if self.die:
            os._exit(self.die)
        return {"sent": 0}

    def __call__(self, client: dict) -> None:
        client["sent"] += 1
        time.sleep(0.002)
        if self.fail and client["sent"] > 1:
            raise RuntimeError("boom")


def test_bench_serve_passes_the_server_options_on(monkeypatch):
    """scripts/bench_serve.py's --devices, --allow-shared-device, --instances and --preferred-batch reach `netdef
    serve` (two model instances on one GPU: `--devices 0,0 --allow-shared-device` or `--instances 2`),
    --shared-memory system the load test."""
    bs = bench_serve()
    calls = []
    monkeypatch.setattr(bs, "run", lambda engine, levels, seconds, extra, batch, image, shm:
                        calls.append((levels, extra, shm)))
    assert bs.main(["r50.engine", "--concurrency", "64", "--devices", "0,0", "--allow-shared-device"]) == 0
    assert bs.main(["r50.engine", "--shared-memory", "system", "--instances", "4", "--preferred-batch", "none",
                    "--cuda-graphs"]) == 0
    assert calls == [([64], ["--max-queue-delay-us", "500", "--devices", "0,0", "--allow-shared-device"], False),
                     ([1, 8, 64], ["--max-queue-delay-us", "500", "--preferred-batch", "none", "--instances", "4",
                                   "--cuda-graphs"], True)]


def test_load_test_clients_run_side_by_side_in_client_processes():
    """bench_serve's clients are threads of several spawned processes (one GIL each) that start together after
    their warm-up: six 2 ms clients over 0.5 s send far more than one could, and a failing request is named."""
    bs = bench_serve()
    got = bs.load_test_with(FakeRequests(), 6, 0.5, warmup=1, processes=4)
    assert got["processes"] == 4 and got["concurrency"] == 6
    assert got["requests"] > 2 * 0.5 / 0.002, got  # more than two clients' worth: they ran side by side
    assert got["p50_ms"] >= 2.0 and got["throughput"] > 0
    assert got["busy_cores"] >= 0 and got["client_cores"] >= 0 and math.isnan(got["server_cores"]), got  # no watch
    with pytest.raises(NetdefError, match=r"^load test at concurrency 3: RuntimeError: boom$"):
        bs.load_test_with(FakeRequests(fail=True), 3, 0.5, warmup=1, processes=2)
    with pytest.raises(NetdefError, match=r"^load test at concurrency 2: a client process failed \(exit code 3"):
        bs.load_test_with(FakeRequests(die=3), 2, 0.5, warmup=1, processes=2)  # at once, not after a timeout


def test_cpu_accounting_counts_a_process_tree_and_the_machine():
    """bench_serve's `serve-cpu` figures: `tree_cpu` counts a grandchild's CPU time under its grandparent (Triton's
    stubs under `netdef serve`), `host_busy` at least that much, and a load test watching the tree reports it in
    cores."""
    bs = bench_serve()
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(60)"
    inner = f'"{sys.executable}" -c "{spin}" & wait'  # the spinning python: a grandchild of `tree`
    tree = subprocess.Popen(["sh", "-c", f"sh -c '{inner}' & wait"], start_new_session=True)
    try:
        host0, start = bs.host_busy(), time.monotonic()
        while bs.tree_cpu(tree.pid) < 0.4 and time.monotonic() - start < 30:
            time.sleep(0.05)
        assert 0.4 <= bs.tree_cpu(tree.pid) < 1.0 and bs.host_busy() - host0 >= 0.3
        got = bs.load_test_with(FakeRequests(), 2, 0.3, warmup=1, processes=2, watch=tree.pid)
        assert 0 <= got["server_cores"] < 0.5 and got["busy_cores"] >= 0, got  # the grandchild sleeps by now
        line = bs.cpu_line("concurrency=2", got)
        assert re.fullmatch(r"RESULT serve-cpu concurrency=2 cores=\d+ busy_cores=[\d.]+ server_cores=[\d.]+ "
                            r"client_cores=[\d.]+", line), line
    finally:
        os.killpg(tree.pid, signal.SIGKILL)  # the shell and its child
        tree.wait()


@pytest.mark.gpu
def test_load_test_against_direct_engine_calls(engines):
    """Concurrency 1, 8, 64 against the direct batch-64 throughput (RESULT lines): every request answered, and at
    concurrency 64 Triton's batcher forms batches. The speed target (>= 80 % of the direct throughput at
    concurrency 64) is the benchmark's to report (scripts/bench_serve.py, docs/benchmarks.md), not a test's."""
    _serving_stack()
    with stub_fits():
        lines = bench_serve().run(engines("r50_fp16"), [1, 8, 64], 5.0, ["--max-queue-delay-us", "500"])
    assert [line.split()[1] for line in lines] == ["serve", "serve-stats", "serve-cpu"] * 3 + [
        "serve-callable", "direct", "ratio", "direct-mix", "ratio-mix"]
    stats = [dict(f.split("=", 1) for f in line.split()[2:]) for line in lines if "serve-stats" in line]
    assert all(int(s["failed"]) == 0 and int(s["requests"]) > 0 for s in stats), lines
    cpu = dict(f.split("=", 1) for f in lines[8].split()[2:])  # concurrency 64: the server and clients used CPU
    assert float(cpu["server_cores"]) > 0 and float(cpu["client_cores"]) > 0, lines
    timing = dict(f.split("=", 1) for f in lines[9].split()[2:])  # the one instance's, logged as the server stopped
    assert int(timing["executions"]) > 0 and 0 < float(timing["engine_ms"]) <= float(timing["callable_ms"]), lines
    assert float(stats[-1]["avg_batch"]) > 1, lines
    assert float(lines[-3].split()[-1]) > 0 and float(lines[-1].split()[-1]) > 0, lines
    mix = dict(f.split("=", 1) for f in lines[-2].split()[2:])  # the engine on the batches of concurrency 64
    assert mix["executions"] == stats[-1]["executions"] and float(mix["throughput"]) > 0, lines


def test_a_model_load_failure_names_the_exception():
    """Triton's load error ends with the Python stub's traceback: the error keeps the exception at its end."""
    from netdef.deploy.serve import _cause

    message = ("[400] load failed for model 'toy': version 1 is at UNAVAILABLE state: Internal: TritonModelException: "
               "Model initialize error: Traceback (most recent call last):\\n  File \"model.py\", line 419\\n"
               "AttributeError: '_thread.RLock' object has no attribute '_recursion_count'\\n\\n\\nAt:\\n  "
               "/tmp/folder/1/model.py(454): initialize\\n")
    assert _cause(Exception(message)).startswith("AttributeError: '_thread.RLock' object has no attribute")
    assert "pytriton issue 51" in _cause(Exception(message))
    assert _cause(Exception("model 'x' failed")) == "model 'x' failed"



def fake_pytriton(monkeypatch, libs: Path) -> dict:
    """Empty pytriton modules in sys.modules whose libraries path is `libs`: `serve` stops at its install checks."""
    import types

    fakes = {name: types.ModuleType(name) for name in ("pytriton", "pytriton.decorators", "pytriton.model_config",
                                                       "pytriton.triton", "pytriton.utils",
                                                       "pytriton.utils.distribution")}
    fakes["pytriton.utils.distribution"].get_libs_path = lambda: libs
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    return fakes


def test_pytriton_outside_site_packages_is_refused_before_its_server_hangs(engines, tmp_path, monkeypatch):
    """PyTriton on PYTHONPATH only (pip --target) counts as an editable install and looks for Triton's libraries
    in pytriton/tritonserver/external_libs: the server would fail to start and PyTriton time out after two
    minutes without a reason (seen on the H100). serve says so at once, before any GPU work, and how to fix it;
    importing PyTriton alone is fine."""
    root = tmp_path / "site"
    (root / "nvidia_pytriton.libs").mkdir(parents=True)
    missing = root / "pytriton" / "tritonserver" / "external_libs"
    fakes = fake_pytriton(monkeypatch, missing)
    with pytest.raises(NetdefError, match=rf"PyTriton looks for Triton's libraries in {missing}, which does not "
                                          r"exist: .*pip --target.*pip install nvidia-pytriton.* \(or link .*external_libs "
                                          r"to .*nvidia_pytriton\.libs\)"):
        serve(engines("r18"), port=18000, grpc_port=18001, metrics_port=18002)
    assert import_pytriton() is fakes["pytriton"]


@pytest.mark.parametrize("requires, version, want", [
    (["grpcio", "numpy<2.0.0,>=1.21", "sh"], "2.4.6", "<2.0.0,>=1.21"),
    (["numpy<2.0.0,>=1.21"], "1.26.4", None),
    (["numpy<2.0.0,>=1.21"], "1.20.3", "<2.0.0,>=1.21"),
    (["NumPy<2"], "2.0.0rc1", "<2"),  # a pre-release of 2.0 is 2.0 here
    (['numpy<2; python_version < "3"'], "2.4.6", None),  # a requirement for other Pythons
    (['numpy<2; extra == "legacy"'], "2.4.6", None),  # an extra's requirement
    (["numpy"], "2.4.6", None),
    ([], "2.4.6", None),
])
def test_numpy_outside_the_range_a_distribution_declares(requires, version, want):
    assert numpy_outside(requires, version) == want


def test_serve_refuses_a_numpy_pytriton_does_not_support(engines, tmp_path, monkeypatch):
    """PyTriton 0.7.0 declares numpy<2; with numpy 2 its Triton loads the models and answers each request with
    empty outputs, and the detect model's stub dies (seen on the H200 and reproduced on the CPU): serve refuses at
    once, before any GPU work, naming both versions and the pip command."""
    import importlib.metadata

    (tmp_path / "libs").mkdir()
    fake_pytriton(monkeypatch, tmp_path / "libs")
    declared = f"numpy<{np.__version__},>=1.21"  # this Python's numpy is outside it, whichever it is
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: ["grpcio", declared])
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.7.0")
    with pytest.raises(NetdefError, match=rf"^PyTriton 0\.7\.0 declares numpy<{re.escape(np.__version__)},>=1\.21 and "
                                          rf"this Python has numpy {re.escape(np.__version__)} \(.*\): with it, Triton "
                                          r"loads the models and then answers each request with empty outputs.* "
                                          rf"pip install 'numpy<{re.escape(np.__version__)},>=1\.21'$"):
        serve(engines("r18"), port=18000, grpc_port=18001, metrics_port=18002)


@pytest.mark.gpu
def test_load_test_of_the_detect_model(engines, tmp_path):
    """scripts/bench_serve.py --image: the detect model under load next to netdef detect's Detector (RESULT
    lines with positive throughput; no threshold: the figures go to docs/benchmarks.md)."""
    _serving_stack()
    from test_detect import photo_files

    image = photo_files(tmp_path / "photos")[0].read_bytes()
    with stub_fits():
        lines = bench_serve().run(engines("y5s_plugin_fp16"), [1, 8], 3.0, ["--max-queue-delay-us", "500"],
                                  direct_batch=8, image=image)
    assert [line.split()[1] for line in lines] == ["serve-detect", "serve-stats", "serve-cpu"] * 2 + [
        "serve-callable"] * 2 + ["direct-detect", "ratio-detect"]  # a timing line per model instance (raw, _detect)
    timing = [dict(f.split("=", 1) for f in line.split()[2:]) for line in lines if "serve-callable" in line]
    assert [(t["model"], int(t["items"]) > 0) for t in timing] == [("yolov5s", False), ("yolov5s_detect", True)]
    assert 0 < float(timing[1]["engine_ms"]) <= float(timing[1]["callable_ms"]), timing  # the Detector's time
    assert all(float(line.split("throughput=")[1].split()[0]) > 0 for line in lines if "throughput=" in line), lines
    assert all("_detect requests=" in line for line in lines if "serve-stats" in line), lines


# ---------------------------------------------------------------- where the time goes (Triton's statistics)

def model_stats(name: str, scale: int, batches: dict[int, int], as_strings: bool = False) -> dict:
    """tritonclient.http's JSON of `get_inference_statistics` for one model (gRPC's as_json=True gives the 64-bit
    numbers as strings): `scale` requests of 2 ms each (queue 0.5, input 0.1, infer 1.2, output 0.1 ms) in the
    executions `batches` (batch size -> count, 3 ms of compute_infer each)."""
    def n(x: int):
        return str(x) if as_strings else x

    def phase(count: int, ms: float) -> dict:
        return {"count": n(count), "ns": n(int(count * ms * 1e6))}

    return {"model_stats": [
        {"name": "other", "version": "1", "inference_count": n(999), "execution_count": n(1),
         "inference_stats": {"success": phase(999, 9.0)}, "batch_stats": []},
        {"name": name, "version": "1", "last_inference": n(0), "inference_count": n(scale),
         "execution_count": n(sum(batches.values())),
         "inference_stats": {"success": phase(scale, 2.0), "fail": phase(0, 0.0), "queue": phase(scale, 0.5),
                             "compute_input": phase(scale, 0.1), "compute_infer": phase(scale, 1.2),
                             "compute_output": phase(scale, 0.1), "cache_hit": phase(0, 0.0)},
         "batch_stats": [{"batch_size": n(b), "compute_input": phase(c, 0.2), "compute_infer": phase(c, 3.0),
                          "compute_output": phase(c, 0.2)} for b, c in batches.items()]}]}


@pytest.mark.parametrize("as_strings", [False, True])
def test_serve_stats_over_a_stretch_of_load(as_strings):
    """bench_serve's `RESULT serve-stats` line: the delta of Triton's cumulative counters over one concurrency
    level, means per request and per execution, the batches the batcher formed, and the clients' time beyond the
    server's."""
    from netdef.deploy import serve_stats

    before = serve_stats.counters(model_stats("r50", 10, {1: 10}, as_strings), "r50")
    after = serve_stats.counters(model_stats("r50", 10 + 640, {1: 10, 8: 40, 64: 5}, as_strings), "r50")
    s = serve_stats.summary(serve_stats.delta(before, after), client_mean_ms=5.0, seconds=0.5)
    assert (s["requests"], s["failed"], s["executions"], s["batches"]) == (640, 0, 45, {8: 40, 64: 5})
    assert s["avg_batch"] == pytest.approx(640 / 45)
    assert [s[k] for k in ("server_ms", "queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms",
                           "infer_per_exec_ms", "client_ms", "overhead_ms", "busy")] == pytest.approx(
        [2.0, 0.5, 0.1, 1.2, 0.1, 3.0, 5.0, 3.0, 45 * 3.4e-3 / 0.5])  # 45 executions of 3 + 0.2 + 0.2 ms
    line = serve_stats.stats_line("concurrency=64 model=r50", s)
    assert line.startswith("RESULT serve-stats concurrency=64 model=r50 requests=640 failed=0 executions=45 "
                           "avg_batch=14.222 server_ms=2.000 queue_ms=0.500 "), line
    assert line.endswith(" client_ms=5.000 overhead_ms=3.000 busy=0.306 batches=8:40,64:5"), line
    fields = dict(f.split("=", 1) for f in line.split()[2:])
    assert float(fields["compute_infer_ms"]) == 1.2 and fields["infer_per_exec_ms"] == "3.000"
    idle = serve_stats.summary(serve_stats.delta(after, after))
    assert idle["requests"] == 0 and idle["batches"] == {} and "client_ms" not in idle and "busy" not in idle
    assert serve_stats.stats_line("c", idle).endswith(" batches=-")
    with pytest.raises(KeyError, match=r"no statistics for model 'r18' \(the server's: \['other', 'r50'\]\)"):
        serve_stats.counters(model_stats("r50", 1, {}), "r18")


def test_serve_opens_only_the_endpoints_asked_for(monkeypatch):
    """PyTriton 0.7 restricts statistics (and shared-memory, model-repository, trace, logging) to a token it never
    shows, so the load test's statistics need `--open-endpoints statistics`; the rest stay restricted, and a
    PyTriton without such restrictions gets no argument."""
    import types

    from netdef.deploy.serve import PROTECTED_ENDPOINTS, security_arguments

    class Security:
        def __init__(self, access_token, restricted_endpoints):
            self.token, self.restricted = access_token, restricted_endpoints

    pt = types.SimpleNamespace(triton=types.SimpleNamespace(TritonSecurityConfig=Security,
                                                            DEFAULT_PROTECTED_ENDPOINTS=list(PROTECTED_ENDPOINTS)))
    closed = security_arguments(pt, (), "t0k")["security_config"]
    assert (closed.token, closed.restricted) == ("t0k", list(PROTECTED_ENDPOINTS))  # serve's own token for them
    got = security_arguments(pt, ("statistics",), "t0k")["security_config"].restricted
    assert got == ["shared-memory", "model-repository", "trace", "logging"]
    assert security_arguments(types.SimpleNamespace(triton=types.SimpleNamespace()), ("statistics",), "t") == {}
    try:
        import pytriton.triton
    except ImportError:
        return
    assert set(getattr(pytriton.triton, "DEFAULT_PROTECTED_ENDPOINTS", PROTECTED_ENDPOINTS)) <= set(PROTECTED_ENDPOINTS)


def test_serve_refuses_an_unknown_endpoint_to_open(engines):
    r = run_cli("serve", str(engines("r18")), "--open-endpoints", "statistics,inference")
    assert r.returncode == 1 and "--open-endpoints statistics,inference: inference is not one of shared-memory, " \
                                 "model-repository, statistics, trace, logging" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stdout == ""


def test_triton_s_python_stub_loads_this_python_s_library(tmp_path):
    """Triton's Python stub links libpythonX.Y.so.1.0 and the loader finds the system's first: a system 3.11.2
    under a pyenv 3.11.7 fails in 3.11.7's stdlib (pytriton issue 51, reproduced on this CPU machine: the stub
    loads with the pyenv's directory on LD_LIBRARY_PATH), a pyenv 3.12 has none (the model load timed out).
    `serve` adds this Python's library directory, after the entries already there."""
    from netdef.deploy.serve import stub_library_path

    (tmp_path / "libpython3.11.so.1.0").write_bytes(b"")
    config = {"Py_ENABLE_SHARED": 1, "LIBDIR": str(tmp_path), "INSTSONAME": "libpython3.11.so.1.0"}.get
    assert stub_library_path({}, config) == str(tmp_path)
    assert stub_library_path({"LD_LIBRARY_PATH": "/opt/cuda/lib64:"}, config) == f"/opt/cuda/lib64:{tmp_path}"
    assert stub_library_path({"LD_LIBRARY_PATH": f"/a:{tmp_path}"}, config) is None  # there already
    assert stub_library_path({}, {**config.__self__, "Py_ENABLE_SHARED": 0}.get) is None  # a static Python
    assert stub_library_path({}, {**config.__self__, "INSTSONAME": "libpython3.9.so.1.0"}.get) is None  # none there
    system = {"Py_ENABLE_SHARED": 1, "LIBDIR": "/usr/lib/x86_64-linux-gnu", "MULTIARCH": "x86_64-linux-gnu",
              "INSTSONAME": next(Path("/usr/lib/x86_64-linux-gnu").glob("libpython3*.so.1.0"), Path("x")).name}
    assert stub_library_path({}, system.get) is None  # the loader's own directory: not listed before Triton's


@pytest.mark.parametrize("model", ["resnet18", "it's", 'say "hi"', "two  words", "back\\slash 'and' \"both\"",
                                   "tab\there", "ünïcode €", ""])
def test_the_timing_line_reads_back_for_any_model_name(model):
    """`CallTimes.line` and `parse_timing_line` (what bench_serve reads) share one definition: a line round-trips,
    quotes, spaces and backslashes in the model's name included; other lines are None."""
    from netdef.deploy.serve import CallTimes, parse_timing_line

    times = CallTimes(executions=3, items=7, callable_s=0.0123456, engine_s=0.004)
    line = times.line(model, f"{model}_2")
    assert parse_timing_line(line) == {"model": model, "instance": f"{model}_2", "executions": 3, "items": 7,
                                       "callable_ms": 4.115, "engine_ms": 1.333}
    assert parse_timing_line(f"serving {line}") is None and parse_timing_line("timing   model") is None
    assert bench_serve().callable_lines(["serving ...", line]) == [
        f"RESULT serve-callable model={model} instance={model}_2 executions=3 items=7 callable_ms=4.115 "
        "engine_ms=1.333"]


def test_load_scripts_refuse_a_client_count_below_one():
    for bad in ("0", "8,-2"):
        with pytest.raises(OptionError, match=f"--concurrency {bad}: counts must be >= 1"):
            bench_serve().parse_levels(bad)


def test_bench_serve_direct_mix_runs_the_engine_on_the_batches_the_server_formed(monkeypatch):
    """`direct_mix` times each batch size Triton formed (host copies included) and gives the items/s of exactly
    those executions back to back; with no execution it says so."""
    import netdef.tools.bench as bench

    seen = {}

    def fake_bench(engine, batches, settings, log=None):
        seen.update(engine=engine, batches=list(batches), copies=settings.with_copies)
        return [{"median_ms": 0.5 + 0.1 * b} for b in batches]  # 0.9 ms at 4, 2.1 ms at 16

    monkeypatch.setattr(bench, "bench_engine", fake_bench)
    got = bench_serve().direct_mix("r50.engine", {16: 10, 4: 30})
    assert seen == {"engine": "r50.engine", "batches": [4, 16], "copies": True}
    assert got["throughput"] == pytest.approx((4 * 30 + 16 * 10) / ((30 * 0.9 + 10 * 2.1) / 1000.0))
    assert (got["sizes"], got["executions"]) == (2, 40)
    with pytest.raises(NetdefError, match="no batch sizes to time"):
        bench_serve().direct_mix("r50.engine", {})


def test_bench_serve_without_tritonclient_http_says_what_to_install(monkeypatch, capsys):
    """bench_serve.py's clients need tritonclient's HTTP and gRPC parts; without HTTP (`pip install
    tritonclient[grpc]`, as the test extra installs) it ended in tritonclient's RuntimeError traceback."""
    monkeypatch.setitem(sys.modules, "tritonclient.http", None)  # importing it fails, as without its extra
    assert bench_serve().main(["r50.engine", "--concurrency", "64"]) == 1
    assert "bench_serve.py needs tritonclient with HTTP and gRPC (" in capsys.readouterr().err


def test_served_detections_are_padded_to_what_a_plugin_engine_keeps(plugin_engine, monkeypatch):
    """The images -> detections outputs were padded to 300 rows whatever a plugin engine keeps: one built with
    `--set max_det=1000` filled more rows than its outputs had. The rows are now the detector's own count (this
    engine's 100), before anything is loaded on a GPU."""
    import netdef.deploy.serve as serve_module

    given = []

    def capture(*args, detect_settings=None, **kwargs):
        given.append(detect_settings)
        raise KeyError("captured")

    monkeypatch.setattr(serve_module, "import_pytriton", lambda: None)
    monkeypatch.setattr(serve_module, "check_pytriton_install", lambda: None)
    monkeypatch.setattr(serve_module, "write_repository", capture)
    port, grpc, metrics = bench_serve().free_ports(3)
    with pytest.raises(KeyError, match="captured"):
        serve(plugin_engine, port=port, grpc_port=grpc, metrics_port=metrics)
    assert given[0].max_det == 100 and given[0].rows == 100
