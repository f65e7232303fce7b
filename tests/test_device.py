"""GPU selection: `--device N` of build/calibrate/run/bench/profile/detect, `trt_api.use_device`, `Engine(device=N)`.

On CPU, CUDA devices are faked (`trt_api.visible_devices` and torch's current device) to check the option, the
error for a device that does not exist (before any work) and that each command works inside its device. The
GPU tests run engines through `Engine(device=0)` and `netdef run --device 0` against the default device, two
engines in one process, and a second device where the machine has one."""
from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from netdef import trt_api
from netdef.cli import main, make_parser
from netdef.errors import OptionError

from helpers import run_cli

GPU_COMMANDS = ("build", "calibrate", "run", "bench", "profile", "detect", "refit", "verify")
FAKE_GPUS = (("Fake GPU A", "8.6"), ("Fake GPU B", "9.0"))


class FakeCuda:
    """torch.cuda's current device, with every change recorded (no CUDA needed)."""

    def __init__(self) -> None:
        self.current, self.sets = 0, []

    def current_device(self) -> int:
        return self.current

    def set_device(self, index: int) -> None:
        self.sets.append(index)
        self.current = index


@pytest.fixture
def two_gpus(monkeypatch):
    """Two visible fake devices, torch's current device 0; yields the FakeCuda."""
    cuda = FakeCuda()
    monkeypatch.setattr(trt_api, "visible_devices", lambda: FAKE_GPUS)
    monkeypatch.setattr(trt_api, "_cuda_torch", lambda: SimpleNamespace(cuda=cuda))
    return cuda


# ---------------------------------------------------------------- the option

@pytest.mark.parametrize("command", GPU_COMMANDS)
def test_every_gpu_command_takes_device(command, capsys):
    with pytest.raises(SystemExit):
        make_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--device N" in text and "CUDA_VISIBLE_DEVICES" in text and "--device 1 is GPU 3" in text


@pytest.mark.parametrize("value, error", [("-1", "--device -1: must be >= 0"),
                                          ("x", "--device 'x': expected an integer")])
def test_device_values_are_checked(value, error, capsys):
    for command in ("run", "build"):
        argv = [command, "m.engine", "--device", value] if command == "run" else \
            [command, "resnet18", "-w", "w.wts", "-o", "m.engine", "--device", value]
        assert main(argv) == 1
        err = capsys.readouterr().err.splitlines()
        assert err == [f"netdef {command}: error: {error}"]


def test_check_device_lists_the_visible_devices(two_gpus, monkeypatch):
    assert trt_api.check_device(1) == 1
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(OptionError) as e:
        trt_api.check_device(2, "--device")
    assert str(e.value) == ("--device 2: no such CUDA device; the visible ones are 0: Fake GPU A (compute 8.6), "
                            "1: Fake GPU B (compute 9.0)")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    with pytest.raises(OptionError, match=r"CUDA_VISIBLE_DEVICES=5,7: indices count the devices it leaves visible"):
        trt_api.check_device(-1)
    for bad in ("1", 1.0, True, None):
        with pytest.raises(OptionError, match="expected a CUDA device index"):
            trt_api.check_device(bad)


def test_check_device_without_any_gpu(monkeypatch):
    monkeypatch.setattr(trt_api, "visible_devices", lambda: ())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(OptionError, match=r"^device 0: no CUDA device is visible here$"):
        trt_api.check_device(0)
    assert trt_api.gpu_identity() is None


def command_argv(command: str, tmp_path: Path) -> list[str]:
    """A command line of `command` whose files exist (or not: the device must be checked first)."""
    from PIL import Image

    (tmp_path / "imgs").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    engine, wts = str(tmp_path / "m.engine"), str(tmp_path / "w.wts")
    return {"build": ["build", "resnet18", "-w", wts, "-o", engine],
            "calibrate": ["calibrate", "resnet18", "-w", wts, "-d", str(tmp_path / "imgs"), "-o",
                          str(tmp_path / "t.json")],
            "run": ["run", engine], "bench": ["bench", engine], "profile": ["profile", engine],
            "detect": ["detect", engine, str(tmp_path / "imgs"), "--out", str(tmp_path / "out")],
            "refit": ["refit", engine, "-w", wts],
            "verify": ["verify", "resnet18", "-w", wts, "--model", "torchvision:resnet18"]}[command]


@pytest.mark.parametrize("command", GPU_COMMANDS)
def test_a_device_that_does_not_exist_is_refused_before_any_work(command, two_gpus, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert main([*command_argv(command, tmp_path), "--device", "2"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"netdef {command}: error: --device 2: no such CUDA device; the visible ones are "
                   "0: Fake GPU A (compute 8.6), 1: Fake GPU B (compute 9.0)"]
    assert two_gpus.sets == [] and not (tmp_path / "m.engine").exists()


def test_verify_on_the_cpu_refuses_a_device(capsys):
    assert main(["verify", "resnet18", "-w", "w.wts", "--model", "torchvision:resnet18", "--cpu", "--device", "0"]) == 1
    assert capsys.readouterr().err == ("netdef verify: error: --device 0 with --cpu: verify --cpu uses no GPU; leave "
                                       "out one of them\n")


# ---------------------------------------------------------------- use_device

def test_use_device_switches_and_restores(two_gpus):
    with trt_api.use_device(1):
        assert trt_api.current_device() == 1 and trt_api.gpu_identity() == FAKE_GPUS[1]
        with trt_api.use_device(0):
            assert trt_api.current_device() == 0
        with trt_api.use_device(1):  # current already: nothing to do
            pass
        assert trt_api.current_device() == 1
    assert trt_api.current_device() == 0 and trt_api.gpu_identity() == FAKE_GPUS[0]
    assert two_gpus.sets == [1, 0, 1, 0]
    with pytest.raises(RuntimeError):
        with trt_api.use_device(1):
            raise RuntimeError("inside")
    assert trt_api.current_device() == 0
    with trt_api.use_device(None), trt_api.use_device(0):
        assert trt_api.current_device() == 0
    assert two_gpus.sets == [1, 0, 1, 0, 1, 0]
    with pytest.raises(OptionError, match="device 3: no such CUDA device"):
        with trt_api.use_device(3):
            pass
    assert trt_api.gpu_identity(1) == FAKE_GPUS[1]


def test_use_device_without_torch_pushes_the_primary_context(monkeypatch):
    """Without torch (pycuda only), the device's primary context is pushed and popped again."""
    events = []

    class Context:
        def __init__(self, index):
            self.index = index

        def push(self):
            events.append(("push", self.index))

        @staticmethod
        def pop():
            events.append(("pop",))

    cuda = SimpleNamespace(Device=lambda i: SimpleNamespace(retain_primary_context=lambda: Context(i)),
                           Context=Context)
    monkeypatch.setattr(trt_api, "visible_devices", lambda: FAKE_GPUS)
    monkeypatch.setattr(trt_api, "_cuda_torch", lambda: None)
    monkeypatch.setattr(trt_api, "_pycuda", lambda: cuda)
    trt_api._primary_context.cache_clear()
    try:
        with trt_api.use_device(1):
            assert trt_api.current_device() == 1
            with trt_api.use_device(0):
                assert trt_api.current_device() == 0
            assert trt_api.current_device() == 1
        assert trt_api.current_device() == 0
        assert events == [("push", 1), ("push", 0), ("pop",), ("pop",)]
    finally:
        trt_api._primary_context.cache_clear()


# ---------------------------------------------------------------- each command inside its device

def test_build_and_calibrate_run_on_the_device(two_gpus, tmp_path, monkeypatch):
    """The builder is made and the engine's GPU recorded inside --device; the caller's device is back after."""
    import netdef.build
    from netdef.cli import calibrate as cli_calibrate
    from netdef.compiler import target_identity
    from netdef.options import BuildOptions

    seen = []

    def fake_build(arch, weights, output, opts, force=False, **kwargs):
        seen.append(("build", trt_api.current_device(), target_identity(opts)["name"]))
        return SimpleNamespace(built=False)

    def fake_calibrate(*args, **kwargs):
        seen.append(("calibrate", trt_api.current_device(), target_identity(BuildOptions())["name"]))
        return SimpleNamespace(amax={}, meta={"images": 0})

    monkeypatch.setattr(netdef.build, "build_engine", fake_build)
    monkeypatch.setattr(cli_calibrate.calibration_run, "calibrate", fake_calibrate)
    for command in ("build", "calibrate"):
        assert main([*command_argv(command, tmp_path), "--device", "1"]) == 0
        assert main(command_argv(command, tmp_path)) == 0
    assert seen == [("build", 1, "Fake GPU B"), ("build", 0, "Fake GPU A"),
                    ("calibrate", 1, "Fake GPU B"), ("calibrate", 0, "Fake GPU A")]
    assert two_gpus.current == 0


def test_run_bench_profile_detect_use_the_device(two_gpus, tmp_path, monkeypatch):
    import netdef.runtime
    import netdef.tools.detect
    from netdef.cli import bench as cli_bench
    from netdef.cli import profile as cli_profile

    seen = []

    class FakeEngine:
        inputs = [SimpleNamespace(name="x", shape=(-1, 2), dtype="float32")]
        batch_range = (1, 1, 1)

        @classmethod
        def described(cls, path):  # no header to check
            return None

        def __init__(self, path, *, backend, cuda_graph, device):
            seen.append(("run", device))

        def infer(self, feeds, as_numpy):
            return {"y": feeds["x"]}

        def input_shape(self, t, batch, hw=None):
            return (batch, *t.shape[1:])

    monkeypatch.setattr(netdef.runtime, "Engine", FakeEngine)
    monkeypatch.setattr(cli_bench, "_cmd_bench", lambda a: seen.append(("bench", trt_api.current_device())))
    monkeypatch.setattr(cli_profile, "_cmd_profile", lambda a: seen.append(("profile", trt_api.current_device())))

    def fake_detector(engine, conf, iou, max_det, names, *, device, **kw):
        seen.append(("detect", device))
        return lambda arrays, labels: [{"image": label, "boxes": []} for label in labels]

    monkeypatch.setattr(netdef.tools.detect, "engine_detector", fake_detector)
    monkeypatch.setattr(netdef.tools.detect, "write_annotated", lambda results, arrays, out, names, **kw: [])
    for command in ("run", "bench", "profile", "detect"):
        assert main([*command_argv(command, tmp_path), "--device", "1"]) == 0
    assert main(command_argv("run", tmp_path)) == 0
    assert seen == [("run", 1), ("bench", 1), ("profile", 1), ("detect", 1), ("run", None)]
    assert two_gpus.current == 0


# ---------------------------------------------------------------- on the GPU

@pytest.fixture(scope="module")
def small_engine(tmp_path_factory):
    """A two-convolution engine (batch 1..4) and an input batch."""
    from test_plugins import build_test_engine

    rng = np.random.default_rng(0)
    weights = {"c1.weight": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32).ravel(),
               "c1.bias": rng.normal(0, 0.1, 8).astype(np.float32),
               "c2.weight": rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32).ravel(),
               "c2.bias": rng.normal(0, 0.1, 4).astype(np.float32)}

    def define(net):
        x = net.input("images", (-1, 3, 16, 16))
        return {"out": net.conv(net.conv(x, "c1", 8, 3, bias=True, act="relu"), "c2", 4, 1, bias=True)}

    path = tmp_path_factory.mktemp("device") / "small.engine"
    build_test_engine(path, weights, define, "fp32", 4, tf32=False)
    return path, rng.standard_normal((3, 3, 16, 16)).astype(np.float32)


@pytest.mark.gpu
def test_engine_on_device_0_equals_the_default_device(small_engine):
    import torch

    from netdef.runtime import Engine

    path, x = small_engine
    ref = Engine(path).infer(x)["out"]
    eng = Engine(path, device=0)
    assert eng.device == 0 and eng.backend.device == torch.device("cuda", 0)
    np.testing.assert_array_equal(eng.infer(x)["out"], ref)
    out = eng.infer(torch.from_numpy(x).cuda())["out"]
    assert out.device == torch.device("cuda", 0)
    np.testing.assert_array_equal(out.cpu().numpy(), ref)
    graphed = Engine(path, device=0, cuda_graph=True)
    for _ in range(2):  # captured, then replayed
        np.testing.assert_array_equal(graphed.infer(x)["out"], ref)
    step = eng.prepare_step(2, cuda_graph=True)
    step()
    step.synchronize()
    assert torch.cuda.current_device() == 0


@pytest.mark.gpu
def test_two_engines_on_device_0_in_one_process(small_engine):
    from netdef.runtime import Engine

    path, x = small_engine
    plain = Engine(path)
    refs = {n: plain.infer(x[:n])["out"] for n in (1, 2, 3)}  # per batch: the same kernels as below
    a, b = Engine(path, device=0), Engine(path, device=0)
    results: dict[str, list] = {"a": [], "b": []}

    def loop(name, eng):
        for k in range(20):
            results[name].append(eng.infer(x[: 1 + k % 3])["out"])

    threads = [threading.Thread(target=loop, args=item) for item in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        assert len(results[name]) == 20
        for k, out in enumerate(results[name]):
            np.testing.assert_array_equal(out, refs[1 + k % 3])
    # in turn with one that replays CUDA graphs (captures are not made while another thread runs: global mode)
    graphed = Engine(path, device=0, cuda_graph=True)
    for n in (3, 3, 1, 2, 2):
        np.testing.assert_array_equal(a.infer(x[:n])["out"], refs[n])
        np.testing.assert_array_equal(graphed.infer(x[:n])["out"], refs[n])


@pytest.mark.gpu
def test_an_engine_on_a_device_that_does_not_exist(small_engine):
    import torch

    from netdef.runtime import Engine

    path, _ = small_engine
    n = torch.cuda.device_count()
    with pytest.raises(OptionError, match=rf"device {n}: no such CUDA device; the visible ones are 0: "):
        Engine(path, device=n)
    r = run_cli("run", str(path), "--device", str(n))
    err = r.stderr.splitlines()
    assert r.returncode == 1 and len(err) == 1, r.stderr
    assert err[0].startswith(f"netdef run: error: --device {n}: no such CUDA device; the visible ones are "
                             f"0: {torch.cuda.get_device_name(0)}")


@pytest.mark.gpu
def test_netdef_run_on_device_0_equals_the_default(small_engine, tmp_path):
    path, x = small_engine
    np.save(tmp_path / "x.npy", x)
    for name, extra in (("default", []), ("device0", ["--device", "0"])):
        r = run_cli("run", str(path), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / f"{name}.npy"),
                    *extra)
        assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "device0.npy"), np.load(tmp_path / "default.npy"))


def test_a_loaded_engine_on_another_device_is_not_timed_there():
    from netdef.tools.bench import load_for_timing

    loaded = SimpleNamespace(path=Path("m.engine"), device=1, meta={"options": {"batch": [1, 4, 4]}},
                             backend=SimpleNamespace(name="torch"))
    assert load_for_timing(loaded, [2], device=1) is loaded
    with pytest.raises(OptionError, match=r"m\.engine is loaded on CUDA device 1, not device 0"):
        load_for_timing(loaded, [2], device=0)


@pytest.mark.gpu
def test_bench_and_profile_on_device_0(small_engine, tmp_path, capsys):
    import json

    import torch

    path, _ = small_engine
    name = torch.cuda.get_device_name(0)
    assert main(["bench", str(path), "--device", "0", "--iters", "5", "--warmup", "2", "--cuda-graph",
                 "--json", str(tmp_path / "b.json")]) == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["environment"]["device"] == name and [r["batch"] for r in doc["results"]] == [1, 4]
    assert all(r["iters"] >= 5 and r["median_ms"] > 0 for r in doc["results"])
    assert main(["profile", str(path), "--device", "0", "--runs", "3", "--warmup", "1",
                 "--json", str(tmp_path / "p.json")]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["environment"]["device"] == name and doc["profiles"][0]["layers"]
    assert torch.cuda.current_device() == 0


@pytest.mark.gpu
def test_build_on_device_0_records_its_gpu(tmp_path, torchvision_wts):
    import torch

    from netdef import engine_file

    _, wts = torchvision_wts("resnet18")
    out = tmp_path / "r18.engine"
    r = run_cli("build", "resnet18", "-w", str(wts), "-o", str(out), "--opt-level", "0", "--device", "0")
    assert r.returncode == 0, r.stderr
    assert "on GPU 0 (" in r.stderr
    assert engine_file.read_meta(out)["gpu"]["name"] == torch.cuda.get_device_name(0)


@pytest.mark.gpu
def test_engines_on_two_devices(small_engine):
    """Where the machine has a second GPU: an engine on each, used in turn, same outputs; the caller's device
    stays current throughout."""
    import torch

    from netdef.runtime import Engine

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two visible CUDA devices")
    path, x = small_engine
    on0, on1 = Engine(path, device=0), Engine(path, device=1, cuda_graph=True)
    assert torch.cuda.current_device() == 0
    for _ in range(3):
        a, b = on0.infer(x)["out"], on1.infer(torch.from_numpy(x))["out"]
        assert b.device == torch.device("cuda", 1)
        np.testing.assert_array_equal(a, b.cpu().numpy())
    step = on1.prepare_step(2)
    step()
    step.synchronize()
    assert torch.cuda.current_device() == 0
