"""YOLOv5 v7.0 segmentation (`yolov5*-seg`) and classification (`yolov5*-cls`) against the `yolov5` package's own
models (random weights, realistic BatchNorm statistics, as netdef.testing.yolov5_reference).

CPU: the networks consume exactly the reference state_dicts with YOLOv5's eval output shapes; small ones build.
GPU (`-m gpu`): engines vs the reference (seg: model(x)[0] and the prototypes model(x)[1]; cls: the logits).

Needs `pip install --no-deps yolov5==7.0.14`; without it these tests skip.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netdef.build import BuildOptions, build_engine, define_network
from netdef.errors import NetdefError
from netdef.testing import yolov5_reference as yv5
from netdef.wts import write_wts

pytestmark = pytest.mark.skipif(not yv5.yolov5_available(), reason="needs pip install --no-deps yolov5==7.0.14")
GPU_BOUND = {"fp32": 1e-3, "fp16": 1e-2}


def reference(name: str, seed: int = 0, tame: bool = False):
    """YOLOv5's SegmentationModel (models/segment/<name>.yaml) or ClassificationModel (the detection model's rows
    0-8 + Classify, as classify/train.py makes it) for `name` (yolov5s-seg, yolov5s-cls, ...) in eval mode, and
    its state_dict; `tame` as yolov5_reference.reference_model."""
    import torch
    import yaml

    from netdef.export import randomize_batchnorm

    yolo = yv5.import_yolov5()
    base, task = name.split("-")
    torch.manual_seed(seed)
    if task == "seg":
        cfg = yaml.safe_load((Path(yolo.__file__).parent / "segment" / f"{name}.yaml").read_text(encoding="utf-8"))
        model = yolo.SegmentationModel(cfg=cfg)
    else:
        model = yolo.ClassificationModel(model=yolo.DetectionModel(cfg=yv5.reference_cfg(base)), nc=1000, cutoff=10)
    randomize_batchnorm(model, seed)
    if tame:
        yv5.tame_batchnorm(model)
    yv5.calibrate_batchnorm(model, seed, size=256 if task == "seg" else 224)
    if task == "seg":
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():  # spread the objectness/class biases over the sigmoid
            for m in model.model[-1].m:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
                if tame:
                    m.weight.mul_(10.0)
    model.eval()
    return model, {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def define(name: str, sd: dict, **opts):
    return define_network(name, sd, BuildOptions(**opts), log=lambda msg: None)


def outputs(net) -> list[tuple[str, tuple]]:
    return [(t.name, tuple(t.shape)) for t in (net.definition.get_output(i) for i in range(net.definition.num_outputs))]


@pytest.mark.parametrize("name", ["yolov5n-seg", "yolov5m-seg"])
def test_segment_consumes_reference_state_dict(name):
    """Every key used; (B, N, 5 + nc + 32) and the prototypes (B, 32, H/4, W/4); the head's 1x1 convolutions are
    split into the decoded rows `model.24.m.i/det` and the raw mask-coefficient rows `model.24.m.i/masks`."""
    model, sd = reference(name)
    net = define(name, sd)
    assert net.key_report() == ({}, [])
    assert outputs(net) == [("output", (-1, 25200, 5 + 80 + 32)), ("proto", (-1, 32, 160, 160))]
    names = {net.definition.get_layer(i).name for i in range(net.definition.num_layers)}
    assert {"model.24.m.0/det", "model.24.m.2/masks", "model.24.proto.upsample"} <= names
    assert model.model[-1].proto.cv1.conv.out_channels == int(sd["model.24.proto.cv1.conv.weight"].shape[0])


@pytest.mark.parametrize("name", ["yolov5n-cls", "yolov5m-cls"])
def test_classifier_consumes_reference_state_dict(name):
    _, sd = reference(name)
    net = define(name, sd)
    assert net.key_report() == ({}, [])
    assert outputs(net) == [("output", (-1, 1000))]
    names = {net.definition.get_layer(i).name for i in range(net.definition.num_layers)}
    assert "model.9.linear" in names and not any("softmax" in n for n in names)  # YOLOv5 gives logits


def test_classifier_folds_each_batchnorm_with_its_own_eps():
    """YOLOv5 adds Classify after initialize_weights: its Conv's BatchNorm keeps eps 1e-5, the backbone's 1e-3.
    The folded convolution biases equal those of the model's own modules (each with its eps)."""
    from netdef import trt_api

    model, sd = reference("yolov5n-cls")
    weights = trt_api.layer_weights(define("yolov5n-cls", sd).definition)
    for row, layer in ((9, "model.9.conv.conv"), (0, "model.0.conv")):
        bn = (model.model[9].conv if row == 9 else model.model[0]).bn
        assert bn.eps == (1e-5 if row == 9 else 1e-3)
        folded = (bn.bias - bn.running_mean * bn.weight / (bn.running_var + bn.eps).sqrt()).detach().numpy()
        np.testing.assert_allclose(weights[(layer, "BIAS")], folded, rtol=1e-5, atol=1e-6)


def test_segment_counts_disagreeing_with_weights_are_named(tmp_path):
    _, sd = reference("yolov5n-seg")
    text = (Path(__file__).resolve().parents[1] / "netdef" / "architectures" / "yolov5-seg.yaml").read_text("utf-8")
    (tmp_path / "yolov5-seg16.yaml").write_text(text.replace("nm: 32", "nm: 16"), "utf-8")
    with pytest.raises(NetdefError, match=r"nm=16 mask coefficients, but the weights' 'model\.24\.proto\.cv3\.bn\."
                                          r"weight' has 32"):
        define(str(tmp_path / "yolov5n-seg16.yaml"), sd)
    with pytest.raises(NetdefError, match=r"--set nc=3, but the weights were trained with nc=80 \('model\.24\.m\.0"
                                          r"\.bias' has 351 outputs = 3 anchors x \(5 \+ nc \+ nm=32\)\)"):
        define("yolov5n-seg", sd, params={"nc": 3})


@pytest.mark.parametrize("name", ["yolov5n-seg", "yolov5n-cls"])
def test_small_models_build_fp32_and_fp16(name, tmp_path):
    write_wts(tmp_path / f"{name}.wts", reference(name)[1])
    for precision in ("fp32", "fp16"):
        res = build_engine(name, tmp_path / f"{name}.wts", tmp_path / f"{name}_{precision}.engine",
                           BuildOptions(precision=precision, batch=(1, 2, 4), opt_level=0), log=lambda m: None)
        assert res.built and res.meta["precision"] == precision
        assert [o["name"] for o in res.meta["outputs"]] == (["output", "proto"] if name.endswith("-seg")
                                                            else ["output"])


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["yolov5s-seg", "yolov5s-cls"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_yolov5(name, precision, tmp_path):
    """Each output vs YOLOv5's fp32 model (TF32 off); fp16 on the tamed model."""
    import torch

    from netdef.runtime import Engine
    from netdef.tools.verify import cosine, max_rel_error

    tame = precision == "fp16"
    model, sd = reference(name, tame=tame)
    write_wts(tmp_path / f"{name}.wts", sd)
    res = build_engine(name, tmp_path / f"{name}.wts", tmp_path / f"{name}.engine",
                       BuildOptions(precision=precision, batch=(1, 2, 2), opt_level=0, tf32=False))
    size = 224 if name.endswith("-cls") else 640
    x = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            y = model.cuda().eval()(torch.from_numpy(x).cuda())
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev
    expected = {"output": y[0], "proto": y[1]} if name.endswith("-seg") else {"output": y}
    expected = {k: v.float().cpu().numpy() for k, v in expected.items()}
    model.cpu()
    torch.cuda.empty_cache()
    got = Engine(res.path).infer(x, as_numpy=True)
    for key, ref in expected.items():
        assert got[key].shape == ref.shape
        err = max_rel_error(got[key], ref)
        print(f"RESULT {name} {size}x{size} {precision}{' tamed model' if tame else ''} (tf32 off) {key} "
              f"max-rel-err {err:.2e} cosine {cosine(got[key], ref):.8f} build {res.meta['build_seconds']} s")
        assert err <= GPU_BOUND[precision]
