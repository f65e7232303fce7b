"""GPU: refittable engines built from weights A, refitted with weights B, equal PyTorch with B (and an engine
built from B); bad weights are refused with the engine untouched; `netdef build` refits when only the
weights changed; `Engine.refit` works in a running process. Prints RESULT lines."""
from __future__ import annotations

import time

import numpy as np
import pytest

from netdef.build import BuildOptions, build_engine
from netdef.errors import NetdefError, WeightKeyError
from netdef.refit import refit_file
from netdef.tools.verify import max_rel_error, torch_reference
from netdef.wts import write_wts

pytestmark = pytest.mark.gpu
BOUND = {"fp32": 1e-3, "fp16": 2e-2}
torch = pytest.importorskip("torch")


def resnet50(seed: int):
    from netdef.export import load_source, randomize_batchnorm

    torch.manual_seed(seed)
    model = load_source("torchvision:resnet50")
    randomize_batchnorm(model, seed=seed)
    return model.eval()


@pytest.fixture(scope="module")
def resnets(tmp_path_factory):
    d = tmp_path_factory.mktemp("refit")
    models = {"a": resnet50(1), "b": resnet50(2)}
    paths = {}
    for k, m in models.items():
        paths[k] = d / f"r50_{k}.wts"
        write_wts(paths[k], m.state_dict())
    return models, paths


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resnet50_refit_equals_pytorch_with_the_new_weights(precision, resnets, torchvision_wts, tmp_path):
    from netdef.runtime import Engine

    models, wts = resnets
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    opts = BuildOptions(precision=precision, batch=(1, 4, 8), opt_level=0, tf32=False, refittable=True)
    path = build_engine("resnet50", wts["a"], tmp_path / "r50.engine", opts).path
    out_a = Engine(path).infer(x, as_numpy=True)["logits"]

    _, other = torchvision_wts("resnet18")  # another architecture: refused, engine untouched
    before = path.read_bytes()
    with pytest.raises(WeightKeyError):
        refit_file(path, other)
    assert path.read_bytes() == before

    t0 = time.perf_counter()
    meta = refit_file(path, wts["b"])
    seconds = time.perf_counter() - t0
    out_r = Engine(path).infer(x, as_numpy=True)["logits"]
    built_b = build_engine("resnet50", wts["b"], tmp_path / "r50_b.engine",
                           BuildOptions(precision=precision, batch=(1, 4, 8), opt_level=0, tf32=False)).path
    out_b = Engine(built_b).infer(x, as_numpy=True)["logits"]
    ref_b = torch_reference(models["b"], x)
    err, err_built, err_a = max_rel_error(out_r, ref_b), max_rel_error(out_b, ref_b), max_rel_error(out_a, ref_b)
    print(f"RESULT refit resnet50 {precision}: {meta['refit']['weights_set']} weights in {seconds:.2f} s "
          f"(TensorRT refit {meta['refit']['refit_seconds']:.2f} s); vs PyTorch(B) refitted {err:.2e}, built from "
          f"B {err_built:.2e}, engine of A {err_a:.2e}")
    assert err <= BOUND[precision] and err_a > 0.05
    assert meta["weights"]["sha256"] == build_engine("resnet50", wts["b"], tmp_path / "r50_b.engine",
                                                     BuildOptions(precision=precision, batch=(1, 4, 8), opt_level=0,
                                                                  tf32=False)).meta["weights"]["sha256"]


def test_build_refits_when_only_the_weights_changed_and_engine_refit_in_process(resnets, tmp_path):
    from netdef.runtime import Engine

    models, wts = resnets
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    opts = BuildOptions(precision="fp32", batch=(1, 2, 4), opt_level=0, tf32=False, refittable=True)
    first = build_engine("resnet50", wts["a"], tmp_path / "e.engine", opts)
    logs: list[str] = []
    second = build_engine("resnet50", wts["b"], tmp_path / "e.engine", opts, log=logs.append)
    assert second.refitted and any("refitting" in m for m in logs), logs
    assert build_engine("resnet50", wts["b"], tmp_path / "e.engine", opts).built is False  # now up to date
    assert max_rel_error(Engine(second.path).infer(x, as_numpy=True)["logits"],
                         torch_reference(models["b"], x)) <= BOUND["fp32"]

    eng = Engine(first.path, cuda_graph=True)  # the file now holds B: refit the running engine back to A
    eng.infer(x)
    step = eng.prepare_step(2, cuda_graph=True)
    eng.refit(wts["a"])
    out = eng.infer(x, as_numpy=True)["logits"]
    assert max_rel_error(out, torch_reference(models["a"], x)) <= BOUND["fp32"]
    with pytest.raises(NetdefError, match="this step was made before the engine was refitted"):
        step()  # its context is gone


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_yolov5s_refit(precision, tmp_path):
    from netdef.runtime import Engine
    from netdef.testing import yolov5_reference as ref

    try:
        model_a, sd_a = ref.reference_model("yolov5s", seed=0, tame=precision == "fp16")
        model_b, sd_b = ref.reference_model("yolov5s", seed=1, tame=precision == "fp16")
    except ImportError as e:
        pytest.skip(f"needs Ultralytics' YOLOv5 code: {e}")
    write_wts(tmp_path / "a.wts", sd_a)
    write_wts(tmp_path / "b.wts", sd_b)
    opts = BuildOptions(precision=precision, batch=(1, 2, 2), opt_level=0, tf32=False, refittable=True)
    path = build_engine("yolov5s", tmp_path / "a.wts", tmp_path / "y.engine", opts).path
    x = np.random.default_rng(0).random((2, 3, 640, 640)).astype(np.float32)
    out_a = Engine(path).infer(x, as_numpy=True)["output"]
    t0 = time.perf_counter()
    meta = refit_file(path, tmp_path / "b.wts")
    seconds = time.perf_counter() - t0
    out = Engine(path).infer(x, as_numpy=True)["output"]
    ref_b = torch_reference(model_b, x)
    err, err_a = max_rel_error(out, ref_b), max_rel_error(out_a, ref_b)
    print(f"RESULT refit yolov5s {precision}: {meta['refit']['weights_set']} weights in {seconds:.2f} s; "
          f"vs PyTorch(B) {err:.2e}, engine of A {err_a:.2e}")
    assert err <= BOUND[precision] and err_a > 10 * err


def test_int8_refit_keeps_the_calibration(tmp_path):
    """LeNet int8 (explicit Q/DQ) built refittable from A with A's table and refitted with B: the activation
    ranges are kept and the weight scales recomputed, so the output follows PyTorch with B."""
    from netdef.examples.digits import LeNet
    from netdef.int8.calibrate import calibrate_torch
    from netdef.runtime import Engine
    from netdef.tools.verify import cosine

    torch.manual_seed(0)
    a, b = LeNet().eval(), LeNet().eval()
    write_wts(tmp_path / "a.wts", a.state_dict())
    write_wts(tmp_path / "b.wts", b.state_dict())
    calib = [np.random.default_rng(i).random((16, 1, 16, 16)).astype(np.float32) for i in range(4)]
    calibrate_torch(a, "lenet", tmp_path / "a.wts", calib, tmp_path / "t.json", method="max", log=lambda m: None)
    opts = BuildOptions(precision="int8", batch=(1, 4, 8), opt_level=0, refittable=True,
                        calibration=str(tmp_path / "t.json"))
    path = build_engine("lenet", tmp_path / "a.wts", tmp_path / "l.engine", opts).path
    x = np.random.default_rng(0).random((4, 1, 16, 16)).astype(np.float32)
    out_a = Engine(path).infer(x, as_numpy=True)["logits"]
    meta = refit_file(path, tmp_path / "b.wts")
    out = Engine(path).infer(x, as_numpy=True)["logits"]
    ref_b = torch_reference(b, x)
    print(f"RESULT refit lenet int8: {meta['refit']['weights_set']} weights; cosine vs PyTorch(B) "
          f"{cosine(out, ref_b):.5f}, engine of A vs PyTorch(B) {cosine(out_a, ref_b):.5f}")
    assert cosine(out, ref_b) > cosine(out_a, ref_b) and cosine(out, ref_b) > 0.9
