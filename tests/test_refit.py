"""Refit on the CPU: the arrays a refit hands to TensorRT are the build's own (same code, same arrays), and
bad new weights are refused before anything is written. TensorRT-RTX cannot build a refittable engine
without a GPU, so the engine here is a plain one whose header is marked refittable; building, refitting and
running refittable engines is tested on the GPU (tests/test_refit_gpu.py)."""
from __future__ import annotations

import numpy as np
import pytest

from netdef import engine_file, trt_api
from netdef.build import BuildOptions, build_engine, define_network
from netdef.errors import NetdefError, OptionError, TensorRTUnavailable, WeightKeyError
from netdef.refit import refit_arrays, refit_file
from netdef.wts import write_wts

torch = pytest.importorskip("torch")


def lenet_weights(seed: int) -> dict[str, np.ndarray]:
    from netdef.examples.digits import LeNet

    torch.manual_seed(seed)
    return {k: v.numpy() for k, v in LeNet().state_dict().items()}


@pytest.fixture(scope="module")
def refittable(tmp_path_factory):
    """(engine path, meta, .wts A, .wts B): LeNet (fp16) from weights A, its header marked refittable."""
    d = tmp_path_factory.mktemp("refit")
    write_wts(d / "a.wts", lenet_weights(0))
    write_wts(d / "b.wts", lenet_weights(1))
    opts = BuildOptions(precision="fp16", batch=(1, 4, 8), opt_level=0)
    res = build_engine("lenet", d / "a.wts", d / "lenet.engine", opts, log=lambda m: None)
    meta, plan = engine_file.read_plan(res.path)
    meta = engine_file.write_engine(res.path, plan, dict(meta, options=dict(meta["options"], refittable=True)))
    return res.path, meta, d / "a.wts", d / "b.wts"


@pytest.mark.skipif(trt_api.gpu_identity() is not None, reason="the refittable build runs on the GPU there")
def test_tensorrt_rtx_without_a_gpu_says_it_cannot_build_refittable(tmp_path):
    if trt_api.info().flavor != "tensorrt-rtx":
        pytest.skip("TensorRT-RTX only")
    write_wts(tmp_path / "a.wts", lenet_weights(0))
    with pytest.raises(TensorRTUnavailable, match="cannot build refittable engines without a GPU"):
        build_engine("lenet", tmp_path / "a.wts", tmp_path / "e.engine", BuildOptions(refittable=True),
                     log=lambda m: None)


def test_the_refit_benchmark_says_it_needs_a_gpu_before_any_work(tmp_path):
    """scripts/bench_refit.py without a GPU: one error before it exports or builds anything (minutes saved)."""
    import importlib.util
    from pathlib import Path

    if trt_api.can_run_engines():
        pytest.skip("a GPU machine runs the benchmark")
    path = Path(__file__).parents[1] / "scripts" / "bench_refit.py"
    spec = importlib.util.spec_from_file_location("bench_refit_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(NetdefError, match=r"benchmarks need a CUDA GPU and full TensorRT"):
        script.main(["--models", "resnet50", "--workdir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()


def test_refit_arrays_are_the_builds_own(refittable):
    """Same arrays as a network defined from B directly, for every weighted layer; and not A's."""
    _, meta, a, b = refittable
    arrays, _, opts = refit_arrays(meta, b, log=lambda m: None)
    direct = trt_api.layer_weights(define_network("lenet", b, opts, log=lambda m: None).definition)
    old = trt_api.layer_weights(define_network("lenet", a, opts, log=lambda m: None).definition)
    assert arrays.keys() == direct.keys() and len(arrays) >= 6  # conv1/conv2 kernel+bias, fc weights+biases
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], direct[key])
        assert arrays[key].dtype == direct[key].dtype
    assert any(not np.array_equal(arrays[k], old[k]) for k in arrays)


@pytest.mark.parametrize("change, error, needle", [
    (lambda w: {k: v for k, v in w.items() if k != "fc1.bias"}, WeightKeyError, "missing"),
    (lambda w: w | {"extra.weight": np.zeros(3, np.float32)}, WeightKeyError, "not used"),
    (lambda w: w | {"fc2.weight": np.zeros((3, 64), np.float32), "fc2.bias": np.zeros(3, np.float32)},
     WeightKeyError, "'fc2.weight' has 192 values"),
])
def test_bad_new_weights_are_refused_and_the_engine_is_untouched(refittable, tmp_path, change, error, needle):
    path, _, _, _ = refittable
    before = path.read_bytes()
    write_wts(tmp_path / "bad.wts", change(lenet_weights(2)))
    with pytest.raises(error, match=needle):
        refit_file(path, tmp_path / "bad.wts", log=lambda m: None)
    assert path.read_bytes() == before


def test_a_changed_structure_needs_a_rebuild(refittable):
    _, meta, _, b = refittable
    with pytest.raises(NetdefError, match="change the structure of lenet .*rebuild with `netdef build`"):
        refit_arrays(dict(meta, structure="0" * 64), b, log=lambda m: None)


def test_a_plain_engine_is_not_refittable(tmp_path):
    write_wts(tmp_path / "a.wts", lenet_weights(0))
    res = build_engine("lenet", tmp_path / "a.wts", tmp_path / "e.engine", BuildOptions(opt_level=0), log=lambda m: None)
    assert "refit_key" not in res.meta
    with pytest.raises(OptionError, match="built without --refittable"):
        refit_arrays(res.meta, tmp_path / "a.wts")
    said = []
    with pytest.raises(OptionError, match="built without --refittable"):
        refit_file(res.path, tmp_path / "a.wts", tmp_path / "out.engine", log=said.append)
    assert said == [] and not (tmp_path / "out.engine").exists()  # refused before any work is announced
