"""`netdef serve` (Triton through PyTriton) and scripts/bench_serve.py.

CPU: the PyTriton binding derived from real engines built by the installed builder (TensorRT-RTX in CI): ResNet-18
with one profile and with three, and a non-batching engine (batches 8..8); how a batch is split and padded over the
profiles; option errors of `netdef serve` (all before any server or GPU work); the error without pytriton.
GPU (`-m gpu`, also needs pytriton and tritonclient): `netdef serve` in a subprocess answers tritonclient HTTP and
gRPC requests exactly like `Engine.infer`, and the load test of scripts/bench_serve.py (RESULT lines).
"""
from __future__ import annotations

import builtins
import importlib.util
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from netdef import engine_file
from netdef.build import BuildOptions, build_engine
from netdef.deploy.serve import TensorSpec, binding, chunks, import_pytriton, infer_function, run_batch, serve
from netdef.errors import NetdefError, OptionError

ROOT = Path(__file__).resolve().parent.parent
THREE_PROFILES = ((1, 1, 4), (5, 32, 64), (65, 256, 256))


def bench_serve():
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "scripts" / "bench_serve.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def engines(torchvision_wts, tmp_path_factory):
    """name -> engine path: r18 (1:8:32), r18_3p (three profiles), r18_8 (8:8:8); for the GPU tests r18_fp16 and
    r50_fp16 (1:8:64) and y5s_plugin_fp16 (YOLOv5s with the decode + NMS plugin head, 1:8:32)."""
    out = tmp_path_factory.mktemp("serve_engines")
    options = {"r18": BuildOptions(batch=(1, 8, 32), opt_level=0),
               "r18_3p": BuildOptions(profiles=THREE_PROFILES, opt_level=0),
               "r18_8": BuildOptions(batch=(8, 8, 8), opt_level=0),
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


def test_infer_function_serves_one_value_per_item_as_a_column():
    """An engine output (B,) is (B, 1) in Triton (dims [1], reshape []): the infer function adds the axis."""
    meta = {"arch": {"name": "toy"}, "options": {"batch": [1, 2, 8], "profiles": None},
            "inputs": [{"name": "x", "shape": [-1, 4], "dtype": "float32"}],
            "outputs": [{"name": "score", "shape": [-1], "dtype": "float32"}]}
    spec = binding(meta)
    assert spec.outputs == (TensorSpec("score", "float32", (1,), squeeze=True),)

    class Fake:
        profiles = [(1, 2, 8)]

        def infer(self, feeds, as_numpy):
            return {"score": feeds["x"].sum(axis=1)}

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = infer_function(Fake(), spec)(x=x)
    np.testing.assert_array_equal(out["score"], x.sum(axis=1)[:, None])


# ---------------------------------------------------------------- options and errors

@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "--port 0: must be 1..65535"),
    (["--grpc-port", "70000"], "--grpc-port 70000: must be 1..65535"),
    (["--port", "9000", "--metrics-port", "9000"], "--port, --grpc-port and --metrics-port must differ"),
    (["--max-batch", "33"], "--max-batch 33: must be within the engine's batches 1..32"),
    (["--max-batch", "x"], "--max-batch 'x': expected an integer"),
    (["--max-queue-delay-us", "-1"], "--max-queue-delay-us -1: must be >= 0"),
    (["--devices", "0,0"], "--devices 0,0: expected distinct device indices"),
    (["--name", "a/b"], "a Triton model name is a folder name"),
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
    with pytest.raises(NetdefError, match="pip install nvidia-pytriton"):  # before any GPU work
        serve(engines("r18"), port=18000, grpc_port=18001, metrics_port=18002)


# ---------------------------------------------------------------- the server on the CPU

STAND_IN = """
import sys

import numpy as np

import netdef.runtime
from netdef.cli import main
from netdef.deploy.plan import read_any_plan
from netdef.engine_file import profiles


class StandIn:  # the engine's metadata, and for its network the mean of each image (TensorRT-RTX cannot run it)
    def __init__(self, path, device=None):
        self.meta = read_any_plan(path)[0]
        self.profiles, self.device = profiles(self.meta), device or 0

    def infer(self, feeds, as_numpy):
        x = feeds["input"]
        assert any(lo <= len(x) <= hi for lo, _, hi in self.profiles), len(x)
        print("ENGINE BATCH", len(x), flush=True)
        return {"logits": np.repeat(x.mean(axis=(1, 2, 3))[:, None], 1000, axis=1).astype(np.float32)}


netdef.runtime.Engine = StandIn
sys.exit(main(sys.argv[1:]))
"""


def test_serve_on_the_cpu_with_a_stand_in_engine(engines, tmp_path):
    """`netdef serve` itself (PyTriton, Triton's HTTP, gRPC, batcher, health, metrics, Ctrl-C) with the engine's
    runs replaced by numpy: Triton runs without a GPU. Needs pytriton and tritonclient; skips where PyTriton's
    Python stub does not fit this Python (pytriton issue 51: Python 3.11.7)."""
    pytest.importorskip("pytriton", reason="needs pip install nvidia-pytriton")
    grpc = pytest.importorskip("tritonclient.grpc", reason="needs pip install 'tritonclient[all]'")
    http = pytest.importorskip("tritonclient.http", reason="needs pip install 'tritonclient[all]'")
    import threading
    import urllib.request

    bs = bench_serve()
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    try:
        with bs.running_server(engines("r18"), "--max-queue-delay-us", "100000",
                               program=(sys.executable, str(script))) as server:
            for protocol, client in [(http, http.InferenceServerClient(server.http)),
                                     (grpc, grpc.InferenceServerClient(server.grpc))]:
                for batch in (1, 5, 32):
                    x = bs.sample_inputs(server.spec, batch, seed=batch)
                    got = bs.infer(client, protocol, server.spec, x)["logits"]
                    np.testing.assert_allclose(got[:, 7], x["input"].mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6)
            done = len(server.output)

            def one(k: int) -> None:
                x = {"input": np.full((1, 3, 224, 224), k, np.float32)}
                assert bs.infer(grpc.InferenceServerClient(server.grpc), grpc, server.spec, x)["logits"][0, 0] == k

            threads = [threading.Thread(target=one, args=(k,)) for k in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            batches = [int(line.split()[-1]) for line in server.output[done:] if line.startswith("ENGINE BATCH")]
            assert sum(batches) == 16 and max(batches) > 1, batches  # the batcher joined requests
            assert urllib.request.urlopen(f"http://{server.http}/v2/health/ready").status == 200
            metrics = urllib.request.urlopen(f"http://{server.metrics}/metrics").read().decode()
            assert 'nv_inference_request_success{model="resnet18",version="1"} 22' in metrics
    except NetdefError as e:
        if "_recursion_count" in str(e):
            pytest.skip(f"PyTriton's Python stub does not fit Python {sys.version.split()[0]} (pytriton issue 51)")
        raise
    assert server.process.returncode == 0 and "stopped" in "".join(server.output[-3:]), server.output[-5:]
    assert any(line.startswith("health   http://localhost:") for line in server.output)


# ---------------------------------------------------------------- on the GPU

def _serving_stack():
    pytest.importorskip("pytriton", reason="needs pip install nvidia-pytriton")
    pytest.importorskip("tritonclient.grpc", reason="needs pip install 'tritonclient[all]'")
    pytest.importorskip("tritonclient.http", reason="needs pip install 'tritonclient[all]'")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["r18_fp16", "r50_fp16", "y5s_plugin_fp16"])
def test_serve_answers_like_the_engine(engines, name):
    """Requests one at a time (each its own batch): HTTP and gRPC give exactly what `Engine.infer` gives (the
    plugin-head detector as raw tensors: num_dets, boxes, scores, classes)."""
    _serving_stack()
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    from netdef.runtime import Engine

    bs = bench_serve()
    engine = engines(name)
    direct = Engine(engine)
    with bs.running_server(engine) as server:
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
def test_load_test_against_direct_engine_calls(engines):
    """Concurrency 1, 8, 64 against the direct batch-64 throughput (RESULT lines); with dynamic batching the
    server reaches at least 80 % of it at concurrency 64."""
    _serving_stack()
    lines = bench_serve().run(engines("r50_fp16"), [1, 8, 64], 5.0, ["--max-queue-delay-us", "500"])
    assert [line.split()[1] for line in lines] == ["serve", "serve", "serve", "direct", "ratio"]
    ratio = float(lines[-1].split()[-1])
    assert ratio >= 0.8, lines


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
