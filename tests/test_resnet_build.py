"""Every ResNet builds and serializes with the installed builder (TensorRT-RTX in CI), fp32 and fp16."""
from __future__ import annotations

import pytest

from netdef import engine_file
from netdef.build import BuildOptions, build_engine, define_network
from netdef.spec import load_spec

RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_builds_fp32_and_fp16(name, torchvision_wts, tmp_path):
    model, wts = torchvision_wts(name)
    for precision in ("fp32", "fp16"):
        out = tmp_path / f"{name}_{precision}.engine"
        res = build_engine(name, wts, out, BuildOptions(precision=precision, batch=(1, 4, 8), opt_level=0),
                           log=lambda m: None)
        assert res.built and out.stat().st_size > 1000
        meta = engine_file.read_meta(out)
        assert meta["inputs"] == [{"name": "input", "shape": [-1, 3, 224, 224], "dtype": "float32"}]
        assert meta["outputs"] == [{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}]
        assert meta["precision"] == precision and meta["options"]["batch"] == [1, 4, 8]
        _, plan = engine_file.read_plan(out)
        assert len(plan) > 1000


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_layer_names_are_weight_prefixes(name, torchvision_wts):
    model, wts = torchvision_wts(name)
    net = define_network(load_spec(name), wts, BuildOptions(), log=lambda m: None)
    layers = [net.definition.get_layer(i) for i in range(net.definition.num_layers)]
    conv_names = {l.name for l in layers if l.type == net.trt.LayerType.CONVOLUTION}
    torch_convs = {n for n, m in model.named_modules() if type(m).__name__ == "Conv2d"}
    assert conv_names == torch_convs  # each convolution is named exactly after its PyTorch module
    matmul = [l.name for l in layers if l.type == net.trt.LayerType.MATRIX_MULTIPLY]
    assert matmul == ["fc"]
    # weightless layers carry the module prefix before '/', so they still point at a PyTorch module
    modules = {n for n, _ in model.named_modules()}
    for l in layers:
        base = l.name.split("/")[0].split("#")[0]
        assert base in modules or base == "input", l.name
    # every layer name is unique
    assert len({l.name for l in layers}) == len(layers)
