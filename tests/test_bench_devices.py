"""Tests of `netdef bench --devices` (netdef.tools.bench_devices): the option and the options that go with it,
the output check and the report's arithmetic with fake instances (CPU). GPU tests run two instances of one plan on
device 0 (threads and processes), check each lives on its device, and, where the machine has two GPUs, one
instance per GPU."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from netdef import trt_api
from netdef.errors import NetdefError, OptionError
from netdef.tools import bench, bench_devices
from netdef.cli.device import parse_devices
from netdef.tools.bench_devices import bench_devices as run_devices, compare_outputs
from netdef.tools.timing import summarize

from test_bench import bench_args, fake_engine, run_bench
from test_device import FakeCuda

FAKE_GPUS = (("Fake GPU A", "8.6"), ("Fake GPU A", "8.6"), ("Fake GPU B", "9.0"))


@pytest.fixture
def fake_gpus(monkeypatch):
    """Three visible fake devices (two of one model); torch's current device 0."""
    monkeypatch.setattr(trt_api, "visible_devices", lambda: FAKE_GPUS)
    monkeypatch.setattr(trt_api, "_cuda_torch", lambda: SimpleNamespace(cuda=FakeCuda()))


# ---------------------------------------------------------------- the option

def test_parse_devices(fake_gpus):
    assert parse_devices("0,2") == (0, 2) and parse_devices("2, 1") == (2, 1)
    assert parse_devices("all") == parse_devices(" ALL ") == (0, 1, 2)
    assert parse_devices("0,0,1", allow_repeat=True) == (0, 0, 1)
    cases = [("x", "--devices 'x': expected device indices such as 0,1, or 'all'"),
             ("0,,1", "--devices '0,,1': expected device indices"),
             ("", "--devices '': expected device indices"),
             ("0,-1", "--devices '0,-1': device indices must be >= 0"),
             ("0x1", "--devices '0x1': expected device indices"),  # int() alone takes '+1' and '1_0'
             ("+1", "--devices '\\+1': expected device indices"),
             ("1_0", "--devices '1_0': expected device indices"),
             ("0,1,0", r"--devices 0,1,0: device\(s\) \[0\] listed more than once; add --allow-shared-device"),
             ("0,3", "--devices 3: no such CUDA device; the visible ones are 0: Fake GPU A"),
             ]
    for text, message in cases:
        with pytest.raises(OptionError, match=message):
            parse_devices(text)


def test_parse_devices_without_gpu(monkeypatch):
    monkeypatch.setattr(trt_api, "visible_devices", lambda: ())
    with pytest.raises(OptionError, match="^--devices all: no CUDA device is visible here$"):
        parse_devices("all")
    with pytest.raises(OptionError, match="^--devices 0: no CUDA device is visible here"):
        parse_devices("0,1")


def test_bench_devices_option_checks(tmp_path, fake_gpus):
    eng = str(fake_engine(tmp_path / "fake.engine"))
    other = str(fake_engine(tmp_path / "other.engine"))
    cases = [
        ((eng, "--workers", "process"), "--workers only applies with --devices LIST"),
        ((eng, "--baseline", "--allow-shared-device"), "--allow-shared-device, --baseline only apply with --devices"),
        ((eng, "--devices", "0,1", "--device", "1"), "--devices and --device do not go together"),
        ((eng, "--devices", "0,1", "--against", other), "--devices and --against do not go together"),
        ((eng, "--devices", "0,1", "--chart", "c.png"), "--devices and --chart do not go together"),
        ((eng, "--devices", "0,a"), "--devices '0,a': expected device indices"),
        ((eng, "--devices", "1,1"), r"--devices 1,1: device\(s\) \[1\] listed more than once"),
        ((eng, "--devices", "0,5"), "--devices 5: no such CUDA device"),
        ((eng, "--devices", "0,1", "--batch", "16"), r"batch size\(s\) \[16\] outside the engine's profile"),
    ]
    for argv, message in cases:
        with pytest.raises(NetdefError, match=message):
            run_bench(*argv)


def test_bench_help_shows_the_devices_options(capsys):
    with pytest.raises(SystemExit):
        bench_args("--help")
    text = " ".join(capsys.readouterr().out.split())
    for opt in ("--devices LIST", "--workers {thread,process}", "--allow-shared-device", "--baseline"):
        assert opt in text
    assert "for testing the several-GPU path on one GPU" in text and "releases the GIL" in text


# ---------------------------------------------------------------- outputs, report arithmetic (fake instances)

def test_compare_outputs():
    a = {"prob": np.array([[0.25, 0.5]], np.float32)}
    assert compare_outputs(a, {"prob": a["prob"].copy()}) == (True, 0.0)
    equal, diff = compare_outputs(a, {"prob": np.array([[0.25, 0.5625]], np.float32)})
    assert not equal and diff == pytest.approx(0.0625)
    nan = {"prob": np.array([[np.nan, 0.5]], np.float32)}
    assert compare_outputs(nan, {"prob": nan["prob"].copy()}) == (True, 0.0)  # the same bits
    assert compare_outputs(a, nan) == (False, float("inf"))
    with pytest.raises(NetdefError, match="outputs differ in names or shapes"):
        compare_outputs(a, {"prob": np.zeros((2, 2), np.float32)})


class FakeRunner:
    """An instance without a GPU: latency `ms` on every call, measured from `start` for `seconds`."""

    def __init__(self, device: int, ms: float, start: float, seconds: float, offset: float = 0.0):
        self.device, self.gpu = device, FAKE_GPUS[device]
        self.ms, self.start, self.seconds, self.offset = ms, start, seconds, offset
        self.calls: list[tuple] = []
        self.closed = False

    def outputs(self, batch, hw):
        self.calls.append(("outputs", batch))
        return {"prob": np.full((batch, 10), 0.5 + self.offset, np.float32)}

    def prepare(self, batch, settings):
        self.calls.append(("prepare", batch))
        return {"warmup_iters": 5, "warmup_s": 0.1}

    def measure(self, batch, settings):
        self.calls.append(("measure", batch))
        iters = int(self.seconds * 1000 / self.ms)
        return summarize([self.ms] * iters, batch) | {"start": self.start, "end": self.start + self.seconds}

    def close(self):
        self.closed = True


def fake_runners(specs: dict[int, tuple]) -> tuple[list[FakeRunner], object]:
    made: list[FakeRunner] = []

    def make(engine, device, batches):
        made.append(FakeRunner(device, *specs[device]))
        return made[-1]

    return made, make


def test_totals_sum_the_instances(fake_gpus):
    made, make = fake_runners({0: (2.0, 10.0, 2.0), 1: (4.0, 10.5, 2.5)})
    run = run_devices("e.engine", [0, 1], [8, 32], bench.BenchSettings(), baseline=True, make_runner=make,
                      log=lambda m: None)
    assert [(r["instance"], r["device"], r["batch"]) for r in run["results"]] == \
        [(0, 0, 8), (1, 1, 8), (0, 0, 32), (1, 1, 32)]
    for b, t in zip((8, 32), run["totals"]):
        rows = [r for r in run["results"] if r["batch"] == b]
        assert t["throughput"] == pytest.approx(sum(r["throughput"] for r in rows))
        assert t["throughput"] == pytest.approx(b * 1000 / 2.0 + b * 1000 / 4.0)
        assert t["window_s"] == pytest.approx(3.0)  # 10.0 .. 13.0
        assert t["wall_throughput"] == pytest.approx(b * (1000 + 625) / 3.0)  # 2 s of 2 ms, 2.5 s of 4 ms
        assert (t["median_ms"], t["p99_ms"], t["instances"]) == (4.0, 4.0, 2)
        assert t["baseline_throughput"] == pytest.approx(b * 1000 / 2.0)
        assert t["scaling"] == pytest.approx(1.5)
        assert t["wall_scaling"] == pytest.approx(t["wall_throughput"] / (b * 1000 / 2.0))  # alone: 1000 in 2 s
    assert run["results"][1]["wall_throughput"] == pytest.approx(8 * 625 / 2.5)
    assert [r["device"] for r in run["baseline"]] == [0, 0] and len(run["baseline"]) == 2
    assert run["instances"] == [{"instance": 0, "device": 0, "gpu": "Fake GPU A", "compute_capability": "8.6"},
                                {"instance": 1, "device": 1, "gpu": "Fake GPU A", "compute_capability": "8.6"}]
    assert [(c["batch"], c["device"], c["bitwise_equal"], c["same_gpu_model"]) for c in run["output_check"]] == \
        [(8, 1, True, True), (32, 1, True, True)]
    # outputs of every batch are checked before any timing; the baseline instance is prepared alone first
    assert made[1].calls[:2] == [("outputs", 8), ("outputs", 32)]
    assert made[0].calls[:5] == [("outputs", 8), ("outputs", 32), ("prepare", 8), ("measure", 8), ("prepare", 8)]
    assert all(r.closed for r in made)


def test_outputs_must_match_on_the_same_gpu_model(fake_gpus):
    made, make = fake_runners({0: (2.0, 0.0, 1.0), 1: (2.0, 0.0, 1.0, 0.25)})
    with pytest.raises(NetdefError, match=r"batch 4: outputs of instance 1 \(CUDA device 1, Fake GPU A\) differ from "
                                          r"instance 0's \(device 0\) .* max abs difference 0\.25"):
        run_devices("e.engine", [0, 1], [4], make_runner=make, log=lambda m: None)
    assert all(r.closed for r in made) and not any(c[0] == "measure" for r in made for c in r.calls)


def test_outputs_of_another_gpu_model_are_recorded(fake_gpus):
    logged: list[str] = []
    _, make = fake_runners({0: (2.0, 0.0, 1.0), 2: (3.0, 0.0, 1.0, 0.25)})
    run = run_devices("e.engine", [0, 2], [4], make_runner=make, log=logged.append)
    (check,) = run["output_check"]
    assert check["gpu"] == "Fake GPU B" and not check["same_gpu_model"] and not check["bitwise_equal"]
    assert check["max_abs_diff"] == 0.25
    assert "max abs difference 0.25 (GPU models differ)" in logged[0]
    assert "scaling" not in run["totals"][0] and run["baseline"] == []


def test_instances_are_measured_at_the_same_time(fake_gpus):
    """Every instance is prepared before any is measured, and the measurements overlap."""
    events: list[tuple[str, int]] = []

    class Sleeper(FakeRunner):
        def prepare(self, batch, settings):
            events.append(("prepare", self.device))
            time.sleep(0.05)
            return super().prepare(batch, settings)

        def measure(self, batch, settings):
            events.append(("measure", self.device))
            t0 = time.monotonic()
            time.sleep(0.3)
            return summarize([2.0] * 10, batch) | {"start": t0, "end": time.monotonic()}

    runners = [Sleeper(d, 2.0, 0.0, 1.0) for d in (0, 1)]
    rows = bench_devices.time_together(runners, 4, bench.BenchSettings())
    assert sorted(events[:2]) == [("prepare", 0), ("prepare", 1)] and {e[0] for e in events[2:]} == {"measure"}
    assert max(r["start"] for r in rows) < min(r["end"] for r in rows)  # the windows overlap
    assert bench_devices.totals(rows)["window_s"] < 0.55  # side by side, not one after the other (0.6 s)


def test_format_totals():
    t = {"batch": 8, "instances": 2, "throughput": 6000.0, "wall_throughput": 5900.5, "median_ms": 2.5,
         "p99_ms": 3.25}
    lines = bench_devices.format_totals([t]).splitlines()
    assert lines[0].split() == ["batch", "instances", "img/s", "wall", "img/s", "median", "ms", "p99", "ms"]
    assert lines[1].split() == ["8", "2", "6000.0", "5900.5", "2.500", "3.250"]
    lines = bench_devices.format_totals([t | {"baseline_throughput": 3100.0, "scaling": 6000 / 3100,
                                              "wall_scaling": 1.9}]).splitlines()
    assert lines[0].split()[-5:] == ["alone", "img/s", "scaling", "wall", "scaling"]
    assert lines[1].split()[-3:] == ["3100.0", "1.94x", "1.90x"]


def test_bench_devices_json(tmp_path, fake_gpus, monkeypatch, capsys):
    eng, out = fake_engine(tmp_path / "fake.engine"), tmp_path / "devices.json"
    _, make = fake_runners({0: (2.0, 10.0, 2.0), 1: (2.0, 10.0, 2.0)})
    monkeypatch.setattr(bench, "require_gpu", lambda: None)
    monkeypatch.setattr(bench_devices, "make_runners", lambda engine, devices, batches, workers:
                        [make(engine, d, batches) for d in devices])
    assert run_bench(str(eng), "--devices", "0,1", "--batch", "1,4", "--iters", "7", "--warmup", "2", "--baseline",
                     "--json", str(out)) == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["devices"] == [0, 1] and doc["settings"]["workers"] == "thread"
    assert doc["settings"]["baseline"] is True and doc["settings"]["allow_shared_device"] is False
    assert doc["settings"]["measure"] == {"iters": 7, "seconds": 0.0}
    assert doc["engine"]["path"] == str(eng) and doc["engine"]["options"]["batch"] == [1, 4, 8]
    assert [t["batch"] for t in doc["totals"]] == [1, 4] and [t["scaling"] for t in doc["totals"]] == [2.0, 2.0]
    assert doc["totals"][1]["throughput"] == pytest.approx(4000.0)
    assert len(doc["results"]) == 4 and len(doc["baseline"]) == 2 and len(doc["output_check"]) == 2
    assert {"environment", "command", "instances"} <= set(doc)
    text = capsys.readouterr().out
    assert "instance 1: device 1 (Fake GPU A)" in text and "device 0 alone:" in text and f"wrote {out}" in text


@pytest.mark.skipif(trt_api.can_run_engines(), reason="checks the message on machines that cannot run engines")
@pytest.mark.parametrize("workers", bench_devices.WORKERS)
def test_an_instance_that_cannot_load_stops_the_run(tmp_path, workers):
    """Threads raise the loading error itself; a worker process sends it back through its pipe and ends."""
    eng = fake_engine(tmp_path / "fake.engine")
    with pytest.raises(NetdefError) as e:
        bench_devices.make_runners(eng, [0], [1, 4], workers)
    prefix = "CUDA device 0 (worker process): " if workers == "process" else ""
    assert str(e.value).startswith(prefix + "timing an engine needs a CUDA GPU and full TensorRT")
    with pytest.raises(OptionError, match="--workers fork: expected one of thread, process"):
        bench_devices.make_runners(eng, [0], [1], "fork")


# ---------------------------------------------------------------- GPU

@pytest.fixture(scope="module")
def engine(torchvision_wts, tmp_path_factory):
    """ResNet-18 fp16 for batch 1..4 (optimization level 0: a quick build)."""
    from netdef.build import BuildOptions, build_engine

    _, wts = torchvision_wts("resnet18")
    out = tmp_path_factory.mktemp("devices") / "resnet18_fp16.engine"
    build_engine("resnet18", wts, out, BuildOptions(precision="fp16", batch=(1, 4, 4), opt_level=0), log=print)
    return out


def check_run(doc: dict, devices: list[int], batches: list[int]) -> None:
    assert [i["device"] for i in doc["instances"]] == devices
    assert all(c["bitwise_equal"] and c["max_abs_diff"] == 0.0 for c in doc["output_check"])
    assert len(doc["output_check"]) == (len(devices) - 1) * len(batches)
    for t in doc["totals"]:
        rows = [r for r in doc["results"] if r["batch"] == t["batch"]]
        assert [r["device"] for r in rows] == devices and all(r["iters"] >= 20 for r in rows)
        assert t["throughput"] == pytest.approx(sum(r["throughput"] for r in rows))
        assert 0 < t["wall_throughput"] and 0 < t["median_ms"] < 1000
        print(f"batch {t['batch']}: {t['throughput']:.0f} img/s summed, {t['wall_throughput']:.0f} wall, "
              + ", ".join(f"device {r['device']} {r['throughput']:.0f}" for r in rows))


@pytest.mark.gpu
@pytest.mark.parametrize("workers", ["thread", "process"])
def test_two_instances_on_device_0(engine, tmp_path, workers):
    out = tmp_path / "two.json"
    assert run_bench(str(engine), "--devices", "0,0", "--allow-shared-device", "--workers", workers, "--baseline",
                     "--batch", "1,4", "--iters", "20", "--warmup", "3", "--json", str(out)) == 0
    doc = json.loads(out.read_text())
    check_run(doc, [0, 0], [1, 4])
    assert doc["settings"]["workers"] == workers and len(doc["baseline"]) == 2
    assert all(t["scaling"] > 0 for t in doc["totals"])


@pytest.mark.gpu
def test_each_instance_deserializes_its_own_engine(engine):
    import torch

    runners = bench_devices.make_runners(engine, [0, 0], [4], "thread")
    a, b = runners
    assert a.engine.engine is not b.engine.engine and a.engine.context is not b.engine.context
    assert a.engine.backend.device == b.engine.backend.device == torch.device("cuda", 0)
    x = a.outputs(4, None)
    assert compare_outputs(x, b.outputs(4, None)) == (True, 0.0)
    assert all(np.isfinite(v).all() for v in x.values())
    with pytest.raises(NetdefError, match="measure\\(batch 4\\) before prepare"):
        a.measure(4, bench.BenchSettings())
    for r in runners:
        r.close()


@pytest.mark.gpu
def test_an_instance_on_the_wrong_device_is_refused(engine):
    inst = bench_devices.Instance(engine, 0, [4])
    inst.device = 1  # as if it had been asked for device 1 but the engine had come up on device 0
    with pytest.raises(NetdefError, match="output 'logits' of the instance for CUDA device 1 is on device 0"):
        inst.outputs(4, None)


def _two_gpus() -> bool:
    try:
        import torch

        return torch.cuda.device_count() >= 2
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _two_gpus(), reason="needs two CUDA devices")
def test_one_instance_per_gpu(engine, tmp_path):
    import torch

    runners = bench_devices.make_runners(engine, [0, 1], [4], "thread")
    for d, r in enumerate(runners):
        assert r.engine.device == d and r.engine.backend.device == torch.device("cuda", d)
    for r in runners:
        r.close()
    out = tmp_path / "all.json"
    assert run_bench(str(engine), "--devices", "all", "--batch", "4", "--iters", "20", "--warmup", "3",
                     "--json", str(out)) == 0
    doc = json.loads(out.read_text())
    check_run(doc, list(range(torch.cuda.device_count())), [4])
