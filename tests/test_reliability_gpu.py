"""GPU: long runs do not leak, engines load and unload cleanly, one Engine serves several threads correctly,
running out of GPU memory is a netdef error the process recovers from, and a deleted plugin library is
compiled again. Prints RESULT lines with the figures (memory curves as numbers).

NETDEF_SOAK_ITERS (default 100000) and NETDEF_LOAD_CYCLES (default 500) set the lengths."""
from __future__ import annotations

import gc
import os
import threading
import time

import pytest

from netdef.build import BuildOptions, build_engine
from netdef.errors import NetdefError

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
SOAK = int(os.environ.get("NETDEF_SOAK_ITERS", "100000"))
CYCLES = int(os.environ.get("NETDEF_LOAD_CYCLES", "500"))
MIB = 2**20


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def gpu_used_mib() -> float:
    """GPU memory this process holds on all devices (NVML's per-process figure: TensorRT allocates outside
    torch's allocator). Where NVML does not list this process (no pynvml, or another PID namespace), the whole
    device's use, which also moves with whatever else runs on the GPU (other test workers)."""
    own = _own_gpu_mib()
    if own is not None:
        return own
    free, total = torch.cuda.mem_get_info()
    return (total - free) / MIB


def gpu_source() -> str:
    return "this process" if _own_gpu_mib() is not None else "whole device"


def _own_gpu_mib() -> float | None:
    try:
        import pynvml
    except ImportError:
        return None
    pynvml.nvmlInit()
    try:
        used = [p.usedGpuMemory for i in range(pynvml.nvmlDeviceGetCount())
                for p in pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(i))
                if p.pid == os.getpid()]
    finally:
        pynvml.nvmlShutdown()
    return sum(used) / MIB if used and None not in used else None


@pytest.fixture(scope="module")
def r50_engine(torchvision_wts, tmp_path_factory):
    _, wts = torchvision_wts("resnet50")
    opts = BuildOptions(precision="fp16", batch=(1, 16, 32), opt_level=0)
    return build_engine("resnet50", wts, tmp_path_factory.mktemp("rel") / "r50.engine", opts).path


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_soak_memory_is_flat_and_outputs_stable(r50_engine, cuda_graph):
    from netdef.runtime import Engine

    eng = Engine(r50_engine, cuda_graph=cuda_graph)
    gen = torch.Generator(device="cuda").manual_seed(0)
    inputs = {b: torch.randn((b, 3, 224, 224), device="cuda", generator=gen) for b in range(1, 33)}
    probe = inputs[8]
    first = eng.infer(probe)["logits"].clone()
    samples, identical = [], True
    t0 = time.perf_counter()
    for i in range(SOAK):
        eng.infer(inputs[1 + (i // 50) % 32])  # the batch changes every 50 runs: 1, 2, ..., 32, 1, ...
        if i % (SOAK // 10) == SOAK // 10 - 1:
            identical &= bool(torch.equal(eng.infer(probe)["logits"], first))
            torch.cuda.synchronize()
            samples.append((i + 1, round(gpu_used_mib()), round(rss_mib())))
    seconds = time.perf_counter() - t0
    gpu = [s[1] for s in samples]
    rss = [s[2] for s in samples]
    print(f"RESULT soak resnet50 fp16 {'CUDA graph' if cuda_graph else 'plain'}: {SOAK} runs (batch 1..32) in "
          f"{seconds:.0f} s; GPU used MiB ({gpu_source()}) {gpu}; host RSS MiB {rss}; "
          f"probe output identical {identical}")
    assert identical
    # no growth from the second sample (after warm-up) to the last
    assert gpu[-1] - gpu[1] <= 64 and rss[-1] - rss[1] <= 64


def _cycles(path, x, n: int) -> list[tuple[int, int, int]]:
    from netdef.runtime import Engine

    samples = []
    for i in range(n):
        eng = Engine(path)
        eng.infer(x)
        del eng
        if i % (n // 5) == n // 5 - 1:
            gc.collect()
            torch.cuda.synchronize()
            samples.append((i + 1, round(gpu_used_mib()), round(rss_mib())))
    return samples


def test_load_unload_cycles_do_not_grow(r50_engine, tmp_path):
    x = torch.randn((4, 3, 224, 224), device="cuda")
    r50 = _cycles(r50_engine, x, CYCLES)
    print(f"RESULT load/unload resnet50 fp16 x{CYCLES}: (cycle, GPU used MiB ({gpu_source()}), host RSS MiB) {r50}")
    assert r50[-1][1] - r50[0][1] <= 64 and r50[-1][2] - r50[0][2] <= 64
    plugin = _yolo_plugin_engine(tmp_path)
    if plugin is None:
        pytest.skip("YOLOv5 reference code missing")
    y = torch.rand((1, 3, 640, 640), device="cuda")
    yp = _cycles(plugin, y, CYCLES)
    print(f"RESULT load/unload yolov5s plugin head x{CYCLES}: (cycle, GPU used MiB ({gpu_source()}), host RSS MiB) "
          f"{yp}")
    assert yp[-1][1] - yp[0][1] <= 64 and yp[-1][2] - yp[0][2] <= 64


def _yolo_plugin_engine(tmp_path):
    from netdef.testing import yolov5_reference as ref
    from netdef.wts import write_wts

    try:
        _, sd = ref.reference_model("yolov5s")
    except ImportError:
        return None
    write_wts(tmp_path / "y.wts", sd)
    opts = BuildOptions(batch=(1, 1, 1), opt_level=0, params={"head": "plugin"})
    return build_engine("yolov5s", tmp_path / "y.wts", tmp_path / "y.engine", opts).path


def test_one_engine_from_eight_threads(r50_engine):
    """Calls take turns (a lock, and each run waits for the previous one's event): results equal the
    single-thread ones; throughput is stated."""
    from netdef.runtime import Engine

    eng = Engine(r50_engine)
    xs = [torch.randn((1 + t, 3, 224, 224), device="cuda") for t in range(8)]
    expected = [eng.infer(x)["logits"].clone() for x in xs]
    per_thread, errors, wrong = 100, [], []

    def work(t: int) -> None:
        stream = torch.cuda.Stream()  # each thread on its own stream, as real callers might
        try:
            with torch.cuda.stream(stream):
                for _ in range(per_thread):
                    out = eng.infer(xs[t])["logits"]
                    stream.synchronize()
                    if not torch.equal(out, expected[t]):
                        wrong.append(t)
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(repr(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t0
    images = per_thread * sum(range(1, 9))
    t1 = time.perf_counter()
    for t in range(8):
        for _ in range(per_thread):
            eng.infer(xs[t])["logits"]
    torch.cuda.synchronize()
    single = time.perf_counter() - t1
    print(f"RESULT threads: 8 threads x {per_thread} runs (batches 1..8) on one Engine: {len(wrong)} wrong results, "
          f"{len(errors)} errors, {images / seconds:.0f} img/s (one thread, same runs: {images / single:.0f} img/s)")
    assert not errors and not wrong


def test_out_of_memory_is_a_netdef_error_and_the_process_recovers(r50_engine):
    from netdef.runtime import Engine

    free, _ = torch.cuda.mem_get_info()
    block = torch.empty(free - 96 * MIB, dtype=torch.uint8, device="cuda")  # leave 96 MiB
    messages = []
    try:
        eng = Engine(r50_engine)
        eng.infer(torch.randn((32, 3, 224, 224), device="cpu"))
    except NetdefError as e:
        messages.append(str(e))
    except torch.cuda.OutOfMemoryError as e:
        messages.append(f"NOT A NETDEF ERROR: {e}")
    del block
    torch.cuda.empty_cache()
    out = Engine(r50_engine).infer(torch.randn((2, 3, 224, 224), device="cuda"))["logits"]
    print(f"RESULT out of memory: {messages}; afterwards batch 2 runs: {tuple(out.shape)}")
    assert messages and not messages[0].startswith("NOT A NETDEF") and tuple(out.shape) == (2, 1000)


def test_a_deleted_plugin_library_is_compiled_again(tmp_path):
    from netdef import engine_file
    from netdef.runtime import Engine

    path = _yolo_plugin_engine(tmp_path)
    if path is None:
        pytest.skip("YOLOv5 reference code missing")
    lib = engine_file.read_meta(path)["plugins"][0]["library"]
    before = Engine(path).infer(torch.rand((1, 3, 640, 640), device="cuda"))
    import netdef.plugins as plugins
    os.unlink(lib)
    plugins._LOADED.pop(lib, None)  # as in a new process
    x = torch.rand((1, 3, 640, 640), device="cuda")
    out = Engine(path).infer(x)
    print(f"RESULT missing plugin library: compiled again at the recorded path {os.path.isfile(lib)}; "
          f"outputs {sorted(out)}")
    assert os.path.isfile(lib) and sorted(out) == sorted(before)
