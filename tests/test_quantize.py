"""INT8 through Q/DQ: network definition, table checks, calibration data and the calibration runner.

CPU tests inspect the network definitions (TensorRT-RTX here) and build Q/DQ engines with TensorRT-RTX;
GPU tests (`-m gpu`) calibrate with the FP32 engine and compare INT8 with FP32 engines.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from netdef import trt_api
from netdef.build import BuildOptions, build_engine, define_network
from netdef.int8.calibrate import (build_recording_engine, calibrate, calibrate_torch, calibration_batches,
                              quantization_points, recording_network)
from netdef.int8.calibration import CalibrationTable, RangeCollector, compute_amax, per_channel_weight_scales
from netdef.errors import NetdefError
from netdef.fileio import file_sha256
from netdef.network import fold_batchnorm
from netdef.int8.quantize import CALIB_PREFIX, fingerprint
from netdef.spec import load_spec
from netdef.wts import read_wts, write_wts

from helpers import synthetic_table

torch = pytest.importorskip("torch")
trt = trt_api.module()
LT = trt.LayerType


def gpu(test):
    """A GPU test: marked `gpu` (select with -m gpu), skipped without a CUDA GPU and full TensorRT."""
    skip = pytest.mark.skipif(not trt_api.can_run_engines(), reason="needs a CUDA GPU and full TensorRT")
    return pytest.mark.gpu(skip(test))


# ---------------------------------------------------------------- helpers

def _lenet(seed: int = 0):
    from netdef.examples.digits import LeNet

    torch.manual_seed(seed)
    model = LeNet().eval()
    from netdef.export import randomize_batchnorm

    randomize_batchnorm(model, seed)
    return model


@pytest.fixture(scope="module")
def lenet_wts(tmp_path_factory) -> tuple[object, Path]:
    from netdef.export import export_wts

    model = _lenet()
    path = tmp_path_factory.mktemp("lenet") / "lenet.wts"
    export_wts(model, path)
    return model, path


@pytest.fixture(scope="module")
def resnet18_wts(torchvision_wts) -> Path:
    return torchvision_wts("resnet18")[1]  # exported once per session (conftest.py)


def int8_network(arch: str, wts: Path, table: Path, **kw):
    return define_network(load_spec(arch), wts, BuildOptions(precision="int8", calibration=str(table), **kw),
                          lambda m: None)


class Graph:
    """Layers of a network definition by name, and each tensor's producing layer."""

    def __init__(self, definition):
        self.layers = [definition.get_layer(i) for i in range(definition.num_layers)]
        self.by_name = {layer.name: layer for layer in self.layers}
        self.producer = {layer.get_output(j).name: layer for layer in self.layers for j in range(layer.num_outputs)}

    def source(self, layer, index: int):
        return self.producer.get(layer.get_input(index).name)

    def constant(self, layer) -> np.ndarray:
        assert layer.type == LT.CONSTANT, layer.name
        layer.__class__ = trt.IConstantLayer
        w = layer.weights
        shape = tuple(layer.get_output(0).shape)
        return np.array(w.numpy() if hasattr(w, "numpy") else w, dtype=np.float64).reshape(shape)

    def dq_scale(self, tensor_layer) -> tuple[np.ndarray, int]:
        """(scale values, axis) of a DQ layer whose input comes from a Q layer with the same scale."""
        assert tensor_layer.type == LT.DEQUANTIZE, tensor_layer.name
        q = self.source(tensor_layer, 0)
        assert q.type == LT.QUANTIZE, q.name
        assert q.get_input(1).name == tensor_layer.get_input(1).name  # Q and DQ share one scale
        tensor_layer.__class__ = trt.IDequantizeLayer
        return self.constant(self.source(tensor_layer, 1)), tensor_layer.axis

    def of_type(self, kind):
        return [layer for layer in self.layers if layer.type == kind]


# ---------------------------------------------------------------- Q/DQ network definition

def test_a_table_range_beyond_fp16_names_the_table(lenet_wts, tmp_path):
    """An amax whose int8 scale passes fp16's range (an edited table: 1e30) is the table's error, naming its file
    and tensor; it used to be reported as the .wts's weight 'fc1/input_scale' to rescale."""
    from netdef.int8.calibration import CalibrationTable

    _, wts = lenet_wts
    table = synthetic_table("lenet", wts, tmp_path / "t.json")
    CalibrationTable(table.fingerprint, table.method, dict(table.amax, fc1=1e30), table.meta).save(tmp_path / "t.json")
    with pytest.raises(NetdefError, match=r"calibration table .*t\.json: tensor 'fc1' has amax 1e\+30, an int8 "
                                          r"scale of 7\.87\d*e\+27, beyond fp16's largest value 65504"):
        int8_network("lenet", wts, tmp_path / "t.json")


def test_lenet_qdq_definition(lenet_wts, tmp_path):
    model, wts = lenet_wts
    table = synthetic_table("lenet", wts, tmp_path / "t.json")
    net = int8_network("lenet", wts, tmp_path / "t.json")
    g = Graph(net.definition)
    weights = read_wts(wts)
    assert list(table.amax) == ["conv1", "conv2", "fc1", "fc2"]
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        layer = g.by_name[conv]
        assert layer.type == LT.CONVOLUTION
        x_scale, _ = g.dq_scale(g.source(layer, 0))
        np.testing.assert_allclose(x_scale, table.amax[conv] / 127, rtol=1e-6)
        assert x_scale.shape == ()  # per tensor
        dq_w = g.source(layer, 1)
        assert dq_w is not None and dq_w.name == f"{conv}/weight_dequantize"  # the kernel is a DQ output
        w_scale, axis = g.dq_scale(dq_w)
        c2 = w_scale.size
        w = weights[f"{conv}.weight"].reshape(c2, -1, 3, 3)
        folded, _ = fold_batchnorm(w, None, *(weights[f"{bn}.{n}"] for n in
                                              ("weight", "bias", "running_mean", "running_var")), eps=1e-5)
        assert axis == 0
        np.testing.assert_allclose(w_scale, per_channel_weight_scales(folded), rtol=1e-6)
        np.testing.assert_allclose(g.constant(g.source(g.source(dq_w, 0), 0)).ravel(), folded.ravel(), rtol=1e-6)
    for fc in ("fc1", "fc2"):
        mm = g.by_name[fc]
        assert mm.type == LT.MATRIX_MULTIPLY
        x_scale, _ = g.dq_scale(g.source(mm, 0))
        np.testing.assert_allclose(x_scale, table.amax[fc] / 127, rtol=1e-6)
        w_scale, axis = g.dq_scale(g.source(mm, 1))
        assert axis == 0
        np.testing.assert_allclose(w_scale, per_channel_weight_scales(weights[f"{fc}.weight"].reshape(w_scale.size, -1)),
                                   rtol=1e-6)
    # 4 activations + 4 weights, each one Q and one DQ
    assert len(g.of_type(LT.QUANTIZE)) == len(g.of_type(LT.DEQUANTIZE)) == 8


def test_resnet18_qdq_definition(resnet18_wts, tmp_path):
    table = synthetic_table("resnet18", resnet18_wts, tmp_path / "t.json")
    points = quantization_points("resnet18", resnet18_wts)
    convs = [k for k, kind in points.items() if kind == "conv"]
    residuals = [k for k, kind in points.items() if kind == "residual"]
    # 20 convolutions + fc (a 1x1 convolution on the pooled features); layer2/3/4.0.downsample.0 share conv1's
    # input, so only 18 activation points of kind conv
    assert len(convs) == 18 and "layer2.0.downsample.0" not in convs and {"conv1", "fc"} <= set(convs)
    # identity shortcuts reuse the block input's Q/DQ (made for conv1): only downsample outputs are new points
    assert residuals == ["layer2.0/add", "layer3.0/add", "layer4.0/add"]
    net = int8_network("resnet18", resnet18_wts, tmp_path / "t.json")
    g = Graph(net.definition)
    conv_layers = g.of_type(LT.CONVOLUTION)
    assert len(conv_layers) == 21
    for layer in conv_layers:  # every kernel is a per-channel DQ output, every input a per-tensor DQ output
        w_scale, axis = g.dq_scale(g.source(layer, 1))
        assert axis == 0 and w_scale.shape == (layer.get_output(0).shape[1],)
        x_scale, _ = g.dq_scale(g.source(layer, 0))
        assert x_scale.shape == ()
    ds = g.by_name["layer2.0.downsample.0"]
    assert g.source(ds, 0).name == "layer2.0.conv1/input_dequantize"  # shared with conv1
    for key in [f"layer{i}.{j}/add" for i in range(1, 5) for j in range(2)]:
        add = g.by_name[key]
        main, shortcut = g.source(add, 0), g.source(add, 1)
        assert main.type == LT.CONVOLUTION and main.name.endswith(("conv2", "conv3"))  # fusable, unquantized
        assert shortcut.type == LT.DEQUANTIZE  # the shortcut input is quantized
        scale, _ = g.dq_scale(shortcut)
        expected = table.amax.get(key, None)
        if shortcut.name == f"{key}/input_dequantize":
            np.testing.assert_allclose(scale, expected / 127, rtol=1e-6)
        else:  # the shortcut is the block input, already quantized for the block's first convolution
            assert key not in table.amax and shortcut.name.endswith("conv1/input_dequantize")
    # layer1.0: identity shortcut shares conv1's Q/DQ; layer2.0: the downsample conv output gets its own
    assert g.source(g.by_name["layer1.0/add"], 1).name == "layer1.0.conv1/input_dequantize"
    assert g.source(g.source(g.by_name["layer2.0/add"], 1), 0).type == LT.QUANTIZE
    assert g.source(g.source(g.source(g.by_name["layer2.0/add"], 1), 0), 0).name == "layer2.0.downsample.0"


def test_int8_exclude_leaves_matching_layers_in_floating_point(resnet18_wts, tmp_path):
    """--int8-exclude 'layer4.*': those convolutions and the layer4 residual joins get no Q/DQ; the rest do."""
    synthetic_table("resnet18", resnet18_wts, tmp_path / "t.json")
    net = int8_network("resnet18", resnet18_wts, tmp_path / "t.json", int8_exclude=("layer4.*", "fc"))
    g = Graph(net.definition)
    for layer in g.of_type(LT.CONVOLUTION):
        excluded = layer.name.startswith("layer4.") or layer.name == "fc"
        assert (layer.get_input(1) is None) == excluded, layer.name  # an unquantized kernel stays a weight
        assert (g.source(layer, 0).type == LT.DEQUANTIZE) != excluded or layer.name == "layer4.0.downsample.0"
    assert g.source(g.by_name["layer4.0/add"], 1).type != LT.DEQUANTIZE
    assert g.source(g.by_name["layer3.0/add"], 1).type == LT.DEQUANTIZE
    names = [layer.name for layer in g.layers if layer.type in (LT.QUANTIZE, LT.DEQUANTIZE)]
    assert names and not [n for n in names if n.startswith(("layer4.", "fc/"))]


def test_int8_exclude_keeps_the_tables_ranges(resnet18_wts, tmp_path):
    """An excluded layer's input keeps the key the calibration network gave it: layer2.0.conv1 excluded, the
    downsample convolution reading the same tensor gets layer2.0.conv1's range (not "no range ... recalibrate");
    layer2.0.conv2 excluded, the add still quantizes the shortcut with the add's range, not conv2's output."""
    table = synthetic_table("resnet18", resnet18_wts, tmp_path / "t.json")
    g = Graph(int8_network("resnet18", resnet18_wts, tmp_path / "t.json", int8_exclude=("layer2.0.conv1",)).definition)
    assert g.source(g.by_name["layer2.0.conv1"], 0).type != LT.DEQUANTIZE
    scale, _ = g.dq_scale(g.source(g.by_name["layer2.0.downsample.0"], 0))
    assert np.allclose(scale, table.amax["layer2.0.conv1"] / 127)
    g = Graph(int8_network("resnet18", resnet18_wts, tmp_path / "t.json", int8_exclude=("layer2.0.conv2",)).definition)
    add = g.by_name["layer2.0/add"]
    assert g.source(add, 0).name == "layer2.0.conv2"
    assert g.source(g.source(g.source(add, 1), 0), 0).name == "layer2.0.downsample.0"
    assert np.allclose(g.dq_scale(g.source(add, 1))[0], table.amax["layer2.0/add"] / 127)


def test_int8_exclude_that_names_no_layer_is_an_error(resnet18_wts, tmp_path):
    """A pattern that matches nothing (a typo, a module name instead of a layer's) would leave quantized the
    layers it meant: refused, naming the pattern and the layers there are."""
    synthetic_table("resnet18", resnet18_wts, tmp_path / "t.json")
    with pytest.raises(NetdefError, match=r"--int8-exclude 'layer9\.\*' matches no layer of resnet18 .*layer1\.0\.conv1"):
        int8_network("resnet18", resnet18_wts, tmp_path / "t.json", int8_exclude=("layer1.*", "layer9.*"))


def test_an_add_int8_does_not_quantize_is_no_layer_to_exclude(yolov5_wts, tmp_path):
    """YOLOv5's bottleneck adds take a SiLU's output, not a convolution's: they stay in floating point, so they are
    neither listed among the layers int8 quantizes nor excludable (a pattern naming only them is an error, not an
    option that changes nothing); a comma-separated pattern is told to repeat the option."""
    wts = yolov5_wts("yolov5n")
    synthetic_table("yolov5n", wts, tmp_path / "t.json", input_hw=(64, 64))
    g = Graph(int8_network("yolov5n", wts, tmp_path / "t.json", input_hw=(64, 64)).definition)
    add = g.by_name["model.2.m.0/add"]
    assert all(g.source(add, i).type != LT.DEQUANTIZE for i in (0, 1))
    with pytest.raises(NetdefError, match=r"--int8-exclude '\*/add' matches no layer of yolov5n that int8 quantizes"):
        int8_network("yolov5n", wts, tmp_path / "t.json", input_hw=(64, 64), int8_exclude=("*/add",))
    with pytest.raises(NetdefError, match=r"'model\.0,model\.24\.\*' matches no layer .*; give each pattern its own "
                                          r"--int8-exclude: model\.0\.conv"):
        int8_network("yolov5n", wts, tmp_path / "t.json", input_hw=(64, 64), int8_exclude=("model.0,model.24.*",))


def test_int8_rows_kept_in_fp32_get_no_qdq_and_the_rest_keep_their_ranges(resnet18_wts, tmp_path):
    """--fp32-rows layer2 in an int8 build: no Q/DQ inside that row, the layers after it quantized with the
    table's ranges (the same table serves); a build without exclusions quantizes exactly the points the
    recording (calibration) network marks."""
    table = synthetic_table("resnet18", resnet18_wts, tmp_path / "t.json")
    g = Graph(int8_network("resnet18", resnet18_wts, tmp_path / "t.json", fp32_rows=("layer2",)).definition)
    qdq = [layer.name for layer in g.layers if layer.type in (LT.QUANTIZE, LT.DEQUANTIZE)]
    assert qdq and not [n for n in qdq if n.startswith("layer2.")]
    assert np.allclose(g.dq_scale(g.source(g.by_name["layer3.0.conv1"], 0))[0], table.amax["layer3.0.conv1"] / 127)
    plain = int8_network("resnet18", resnet18_wts, tmp_path / "t.json")
    assert plain.quantizer.points == quantization_points("resnet18", resnet18_wts)


def test_a_dynamic_size_build_takes_a_table_made_within_its_range(resnet18_wts, tmp_path):
    """An int8 build of --input-shape 64x64:96x96:128x128 checks the table against the size it was made at, which
    must lie within the range (not the YAML's 224x224); a table made outside it says so, with the OPT size."""
    synthetic_table("resnet18", resnet18_wts, tmp_path / "t96.json", input_hw=(96, 96))
    synthetic_table("resnet18", resnet18_wts, tmp_path / "t64.json", input_hw=(64, 64))
    synthetic_table("resnet18", resnet18_wts, tmp_path / "t224.json")
    hw_range = ((64, 64), (96, 96), (128, 128))
    for table in ("t96.json", "t64.json"):
        net = int8_network("resnet18", resnet18_wts, tmp_path / table, input_range=hw_range)
        assert net.quantizer.points  # defined, quantized
    with pytest.raises(NetdefError, match=r"t224\.json was made at input 224x224, outside this build's --input-shape "
                                          r"64x64:96x96:128x128: calibrate at a size within it, e\.g\. its OPT size "
                                          r"\(--input-shape 96x96\)"):
        int8_network("resnet18", resnet18_wts, tmp_path / "t224.json", input_range=hw_range)
    # a table that does not record its size (hand-made) is checked at the OPT size: 96x96 holds, 64x64 does not
    for table in ("t96.json", "t64.json"):
        doc = json.loads((tmp_path / table).read_text())
        del doc["meta"]["input_shape"]
        (tmp_path / f"bare_{table}").write_text(json.dumps(doc))
    assert int8_network("resnet18", resnet18_wts, tmp_path / "bare_t96.json", input_range=hw_range).quantizer.points
    with pytest.raises(NetdefError, match=r"bare_t64\.json was made for a different network"):
        int8_network("resnet18", resnet18_wts, tmp_path / "bare_t64.json", input_range=hw_range)


def test_int8_leaves_fp32_block_layers_unquantized():
    """A convolution a block keeps in float32 (`with net.fp32(name):`) gets no Q/DQ in an int8 build (it was
    quantized to int8 anyway); the next one, outside, is quantized with its own range."""
    from netdef.int8.quantize import Quantizer
    from netdef.network import Network

    rng = np.random.default_rng(0)
    weights = {"a.weight": rng.normal(size=(4, 3, 3, 3)), "b.weight": rng.normal(size=(4, 4, 3, 3))}
    net = Network({k: v.astype(np.float32) for k, v in weights.items()}, precision="int8")
    net.quantizer = Quantizer({"a": 2.0, "b": 3.0})
    x = net.input("x", (-1, 3, 8, 8))
    with net.fp32("a"):
        y = net.conv(x, "a", 4, 3, p=1, bias=False)
    net.output(net.conv(y, "b", 4, 3, p=1, bias=False), "y")
    net.check_layers()
    g = Graph(net.definition)
    assert g.by_name["a"].get_input(1) is None and g.source(g.by_name["a"], 0).type != LT.DEQUANTIZE
    assert not [layer.name for layer in g.layers if layer.name.startswith("a/") and "quantize" in layer.name]
    assert np.allclose(g.dq_scale(g.source(g.by_name["b"], 0))[0], 3.0 / 127)


def test_recording_network_marks_points(resnet18_wts):
    net, points = recording_network(load_spec("resnet18"), resnet18_wts)
    d = net.definition
    outputs = [d.get_output(i).name for i in range(d.num_outputs)]
    assert outputs[-1] == "logits" and sorted(outputs[:-1]) == sorted(CALIB_PREFIX + k for k in points)
    g = Graph(d)
    assert not g.of_type(LT.QUANTIZE)
    assert all(layer.get_input(1) is None for layer in g.of_type(LT.CONVOLUTION))  # plain weights
    assert g.source(g.by_name["layer2.0/add/calib"], 0).name == "layer2.0.downsample.0"


def test_build_int8_engine(lenet_wts, tmp_path):
    """TensorRT-RTX (CPU) and full TensorRT both build Q/DQ networks."""
    _, wts = lenet_wts
    synthetic_table("lenet", wts, tmp_path / "t.json")
    opts = BuildOptions(precision="int8", calibration=str(tmp_path / "t.json"), batch=(1, 4, 8), opt_level=0)
    res = build_engine("lenet", wts, tmp_path / "lenet_int8.engine", opts, log=lambda m: None)
    assert res.built and res.path.stat().st_size > 10_000 and res.meta["precision"] == "int8"
    assert res.meta["outputs"][0]["name"] == "logits" and res.meta["outputs"][0]["dtype"] == "float32"
    # a changed table changes the build key: the engine is rebuilt, not kept
    t = json.loads((tmp_path / "t.json").read_text())
    t["amax"]["conv2"] *= 2
    (tmp_path / "t.json").write_text(json.dumps(t))
    assert build_engine("lenet", wts, tmp_path / "lenet_int8.engine", opts, log=lambda m: None).built


def test_build_int8_resnet18(resnet18_wts, tmp_path):
    synthetic_table("resnet18", resnet18_wts, tmp_path / "t.json")
    opts = BuildOptions(precision="int8", calibration=str(tmp_path / "t.json"), opt_level=0)
    res = build_engine("resnet18", resnet18_wts, tmp_path / "r18.engine", opts, log=lambda m: None)
    assert res.built and res.path.is_file()


def test_int8_linear_after_an_fp32_block_is_defined(tmp_path):
    """ViT-B/16's MLP Linear reads a LayerNorm computed in float32 (an `fp32` block): its input Q/DQ dequantizes
    to the compute dtype, as its weights do (strongly typed TensorRT rejected the matmul: float32 by float16)."""
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    weights = {k: v.numpy() for k, v in tv.models.vit_b_16().state_dict().items()}
    synthetic_table("vit_b_16", weights, tmp_path / "t.json")
    net = define_network(load_spec("vit_b_16"), weights, BuildOptions(precision="int8", calibration=str(tmp_path / "t.json")),
                         lambda m: None)
    g = Graph(net.definition)
    mlp = g.by_name["encoder.layers.encoder_layer_0.mlp.0"]
    assert g.source(mlp, 0).type == LT.DEQUANTIZE
    assert mlp.get_input(0).dtype == mlp.get_input(1).dtype == trt_api.trt_dtype(net.dtype)


# ---------------------------------------------------------------- table errors

def test_missing_table_says_how_to_calibrate(lenet_wts, tmp_path):
    _, wts = lenet_wts
    with pytest.raises(NetdefError, match="needs a calibration table.*netdef calibrate"):
        define_network(load_spec("lenet"), wts, BuildOptions(precision="int8"), lambda m: None)
    with pytest.raises(NetdefError, match="not found"):
        int8_network("lenet", wts, tmp_path / "nope.json")
    logged = []  # a build says so before it reads the weights (a 500 MB .wts: minutes)
    with pytest.raises(NetdefError, match="needs a calibration table.*netdef calibrate"):
        build_engine("lenet", wts, tmp_path / "e.engine", BuildOptions(precision="int8"), log=logged.append)
    assert not any("reading" in m for m in logged), logged


def test_info_shows_a_table_and_a_tensorrt_calibration_cache_is_named_where_a_table_or_weights_go(
        lenet_wts, tmp_path, capsys):
    """`netdef info TABLE` says what the table was made for; tensorrtx's int8calib.table (a TensorRT cache, which
    TensorRT 11 has no calibrator to read) is named as such by info, build's -w and --calibration."""
    from netdef.cli import main

    _, wts = lenet_wts
    table = synthetic_table("lenet", wts, tmp_path / "t.json")
    assert main(["info", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"calibration table {tmp_path / 't.json'}: {len(table.amax)} activation ranges (max) for "
                          f"input {list(load_spec('lenet').input_shape_for(None))}"), out
    assert main(["info", str(tmp_path / "t.json"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "calibration_table" and doc["ranges"] == len(table.amax)
    cache = tmp_path / "int8calib.table"
    cache.write_text("TRT-8601-EntropyCalibration2\ndata: 3c010a14\n")
    assert main(["info", str(cache)]) == 1
    assert re.search(r"int8calib\.table:1: line 1 must be the tensor count.*a TensorRT calibration cache "
                     r"\(tensorrtx's int8calib\.table\), not netdef's JSON", capsys.readouterr().err)
    with pytest.raises(NetdefError, match=r"is a TensorRT calibration cache .*`netdef calibrate` writes from images"):
        int8_network("lenet", wts, cache)


def test_fingerprint_mismatch(lenet_wts, tmp_path):
    _, wts = lenet_wts
    synthetic_table("lenet", wts, tmp_path / "t.json")
    with pytest.raises(NetdefError, match=r"different network \(made for input 1x16x16 where this build's is "
                                          r"1x32x32\)"):  # other input size
        int8_network("lenet", wts, tmp_path / "t.json", input_hw=(32, 32))
    other = tmp_path / "other.wts"
    tensors = read_wts(wts)
    tensors["fc2.bias"] = tensors["fc2.bias"] + 1e-3  # retrained weights, same architecture
    write_wts(other, tensors)
    with pytest.raises(NetdefError, match=r"different network \(made for other weights \(another \.wts file"):
        int8_network("lenet", other, tmp_path / "t.json")
    spec = load_spec("lenet")
    assert fingerprint(spec, file_sha256(wts), (1, 16, 16)) != fingerprint(spec, file_sha256(wts), (1, 32, 32))
    assert fingerprint(spec, file_sha256(wts), (1, 16, 16)) == fingerprint(spec, file_sha256(wts), [1, 16, 16])


def test_fingerprint_mismatch_of_in_memory_weights_names_no_other_file(lenet_wts, tmp_path):
    """The same weights given in memory never match a table made from their .wts (its bytes are fingerprinted): the
    refusal says so and names the file the table was made from, instead of 'another .wts file'."""
    _, wts = lenet_wts
    table = synthetic_table("lenet", wts, tmp_path / "t.json")
    table.meta["weights"] = str(wts)  # as `netdef calibrate` records it
    table.save(tmp_path / "t.json")
    with pytest.raises(NetdefError) as ei:
        int8_network("lenet", read_wts(wts), tmp_path / "t.json")
    msg = str(ei.value)
    assert "another .wts file" not in msg and ("other weights (this build's are in memory, fingerprinted by their "
                                               "keys and values") in msg and f"build from {wts})" in msg, msg
    synthetic_table("lenet", wts, tmp_path / "t.json")  # no record of its weights
    with pytest.raises(NetdefError, match=r"never matches them: build from the \.wts it was made from\)"):
        int8_network("lenet", read_wts(wts), tmp_path / "t.json")


def test_table_without_a_point(lenet_wts, tmp_path):
    _, wts = lenet_wts
    table = synthetic_table("lenet", wts, tmp_path / "t.json")
    del table.amax["fc1"]
    table.save(tmp_path / "t.json")
    with pytest.raises(NetdefError, match="no range for 'fc1'.*recalibrate"):
        int8_network("lenet", wts, tmp_path / "t.json")


# ---------------------------------------------------------------- calibration without a GPU

def test_calibration_from_known_arrays_reaches_the_network(lenet_wts, tmp_path):
    """Synthetic collectors -> compute_amax -> table -> the Q/DQ scales in the network."""
    _, wts = lenet_wts
    spec = load_spec("lenet")
    points = quantization_points("lenet", wts)
    rng = np.random.default_rng(0)
    known = {k: (i + 1) * 0.5 for i, k in enumerate(points)}
    batches = [{k: rng.uniform(-m, m, 1000) * (0.9 if b else 1.0) for k, m in known.items()} for b in range(3)]
    for k, m in known.items():
        batches[1][k][7] = m  # the exact maximum, in the middle batch
    collectors = {k: RangeCollector(name=k) for k in points}
    for batch in batches:
        for k, x in batch.items():
            collectors[k].update(x)
    amax = compute_amax(collectors, "max")
    assert amax == pytest.approx(known)
    CalibrationTable(fingerprint(spec, file_sha256(wts), spec.input_shape), "max", amax).save(tmp_path / "t.json")
    g = Graph(int8_network("lenet", wts, tmp_path / "t.json").definition)
    for k, m in known.items():
        np.testing.assert_allclose(g.dq_scale(g.by_name[f"{k}/input_dequantize"])[0], m / 127, rtol=1e-6)


def test_calibrate_torch_ranges_are_module_inputs(lenet_wts, tmp_path):
    model, wts = lenet_wts
    x = np.random.default_rng(1).uniform(0, 1, (40, 1, 16, 16)).astype(np.float32)
    x[3, 0, 5, 5] = 1.5
    seen = {}
    hooks = [getattr(model, n).register_forward_pre_hook(lambda m, i, n=n: seen.setdefault(n, []).append(i[0]))
             for n in ("conv1", "conv2", "fc1", "fc2")]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    table = calibrate_torch(model, "lenet", wts, [x[:16], x[16:]], tmp_path / "t.json", method="max",
                            log=lambda m: None)
    assert table.amax["conv1"] == pytest.approx(1.5)
    for n in ("conv2", "fc1", "fc2"):
        assert table.amax[n] == pytest.approx(float(torch.cat(seen[n]).abs().max()), rel=1e-6)
    assert table.meta["images"] == 40 and table.meta["batches"] == 2
    loaded = CalibrationTable.load(tmp_path / "t.json").check_made_for(
        tmp_path / "t.json", fingerprint(load_spec("lenet"), file_sha256(wts), (1, 16, 16)))
    assert loaded.amax == pytest.approx(table.amax)
    entropy = calibrate_torch(model, "lenet", wts, [x], tmp_path / "e.json", log=lambda m: None)
    assert entropy.method == "entropy" and all(0 < entropy.amax[k] <= table.amax[k] + 1e-9 for k in table.amax)


def test_calibrate_torch_refuses_batches_of_another_size_than_the_tables(lenet_wts, tmp_path):
    """Batches of 20x20 for a table of LeNet's 16x16 input would stamp ranges of one size with another's."""
    model, wts = lenet_wts
    x = np.zeros((2, 1, 20, 20), np.float32)
    with pytest.raises(NetdefError, match=r"batch 0 has shape \(2, 1, 20, 20\), the table is made for input "
                                          r"\(1, 16, 16\) .*or input_hw=\(20, 20\)"):
        calibrate_torch(model, "lenet", wts, [x], tmp_path / "t.json", log=lambda m: None)
    assert not (tmp_path / "t.json").exists()


def test_calibrate_torch_checks_the_models_weights_and_runs_it_in_eval_mode(lenet_wts, tmp_path):
    """A model that does not hold the .wts (a fresh one) is refused: its ranges would carry that file's
    fingerprint. The model runs in eval mode for calibration and gets its own mode back."""
    from netdef.examples.digits import LeNet

    model, wts = lenet_wts
    x = np.random.default_rng(1).uniform(0, 1, (8, 1, 16, 16)).astype(np.float32)
    torch.manual_seed(5)
    with pytest.raises(NetdefError, match=r"the model's 'conv1\.weight' differs from .*load those weights into"):
        calibrate_torch(LeNet(), "lenet", wts, [x], tmp_path / "t.json", log=lambda m: None)
    assert not (tmp_path / "t.json").exists()
    modes = []
    hook = model.register_forward_pre_hook(lambda m, i: modes.append(m.training))
    model.train()
    frozen = next(m for m in model.modules() if m is not model)
    frozen.eval()  # a submodule the user froze keeps its own mode
    try:
        calibrate_torch(model, "lenet", wts, [x], tmp_path / "t.json", method="max", log=lambda m: None)
    finally:
        hook.remove()
    assert modes == [False] and model.training and not frozen.training
    assert all(m.training for m in model.modules() if m is not frozen)
    model.eval()


def test_calibrate_torch_refuses_residual_points(resnet18_wts, tmp_path):
    from netdef.export import load_source

    with pytest.raises(NetdefError, match="residual.*netdef calibrate"):
        calibrate_torch(load_source("torchvision:resnet18"), "resnet18", resnet18_wts, [], tmp_path / "t.json")


@pytest.mark.skipif(trt_api.can_run_engines(), reason="checks the error on a machine without a GPU")
def test_calibrate_needs_a_gpu(lenet_wts, tmp_path):
    _, wts = lenet_wts
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 16, 16), np.float32))
    with pytest.raises(NetdefError, match="CUDA GPU.*calibrate_torch"):
        calibrate("lenet", wts, tmp_path / "x.npy", tmp_path / "t.json", log=lambda m: None)
    assert not (tmp_path / "t.json").exists()


def test_recording_engine_builds(lenet_wts, tmp_path):
    from netdef.engine_file import read_meta

    _, wts = lenet_wts
    points = build_recording_engine(load_spec("lenet"), wts, tmp_path / "c.engine", batch=4)
    meta = read_meta(tmp_path / "c.engine")
    assert meta["calibration_points"] == points and meta["options"]["batch"] == [1, 4, 4]


# ---------------------------------------------------------------- calibration data

def test_image_folder(tmp_path):
    from PIL import Image

    (tmp_path / "imgs" / "cls_a").mkdir(parents=True)
    red = np.zeros((10, 20, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "imgs" / "cls_a" / "a.png")
    Image.fromarray(np.full((7, 7, 3), 51, np.uint8)).save(tmp_path / "imgs" / "b.jpg", quality=100)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    n, it = calibration_batches(tmp_path / "imgs", (3, 4, 6), 1)
    batches = list(it)
    assert n == 2 and [b.shape for b in batches] == [(1, 3, 4, 6)] * 2 and batches[0].dtype == np.float32
    np.testing.assert_allclose(batches[1][0, :, 0, 0], [1, 0, 0], atol=1e-6)  # a.png (sorted: b.jpg first)
    np.testing.assert_allclose(batches[0], 0.2, atol=0.01)
    n, it = calibration_batches(tmp_path / "imgs", (3, 4, 6), 8, mean=[0.5], std=[0.5, 0.25, 0.5])
    b = next(it)
    np.testing.assert_allclose(b[1, :, 0, 0], [1.0, -2.0, -1.0], atol=1e-5)
    n, it = calibration_batches(tmp_path / "imgs", (1, 4, 4), 8)
    assert next(it).shape == (2, 1, 4, 4)  # grayscale for a 1-channel input
    with pytest.raises(NetdefError, match="--std has 2 values"):
        calibration_batches(tmp_path / "imgs", (3, 4, 6), 8, std=[1, 2])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NetdefError, match="no images"):
        calibration_batches(tmp_path / "empty", (3, 4, 6), 8)


def test_arrays(tmp_path):
    x = np.arange(5 * 2 * 3 * 3, dtype=np.float32).reshape(5, 2, 3, 3)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x, y=np.zeros(5))
    torch.save(torch.from_numpy(x), tmp_path / "x.pt")
    for name in ("x.npy", "x.npz", "x.pt"):
        n, it = calibration_batches(tmp_path / name, (2, 3, 3), 2)
        got = list(it)
        assert n == 5 and [len(b) for b in got] == [2, 2, 1]
        np.testing.assert_array_equal(np.concatenate(got), x)
    n, it = calibration_batches(tmp_path / "x.npy", (2, 3, 3), 16, max_images=3)
    sub = next(it)
    assert n == 3 and len(sub) == 3 and len({float(s[0, 0, 0]) for s in sub}) == 3
    with pytest.raises(NetdefError, match=r"has shape \(5, 2, 3, 3\).*\(N, 3, 3, 3\)"):
        calibration_batches(tmp_path / "x.npy", (3, 3, 3), 2)
    with pytest.raises(NetdefError, match="used as given"):
        calibration_batches(tmp_path / "x.npy", (2, 3, 3), 2, mean=[0.5])
    with pytest.raises(NetdefError, match="not found"):
        calibration_batches(tmp_path / "missing.npy", (2, 3, 3), 2)


# ---------------------------------------------------------------- GPU

@gpu
def test_resnet50_int8_vs_fp32(tmp_path):
    """ResNet-50 (random weights, random BN) calibrated on 64 random images: INT8 output cosine >= 0.99."""
    import time

    from netdef.export import export_wts, load_source, randomize_batchnorm
    from netdef.runtime import Engine
    from netdef.tools.verify import cosine

    t0 = time.perf_counter()
    torch.manual_seed(0)  # the same random model in every run (top-1 agreement depends on it)
    model = load_source("torchvision:resnet50")
    randomize_batchnorm(model, 0)
    wts = tmp_path / "resnet50.wts"
    export_wts(model, wts)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "calib.npy", rng.standard_normal((64, 3, 224, 224)).astype(np.float32))
    table = calibrate("resnet50", wts, tmp_path / "calib.npy", tmp_path / "table.json", method="entropy", batch=16)
    assert table.meta["images"] == 64 and len(table.amax) == len(quantization_points("resnet50", wts))
    outs = {}
    x = rng.standard_normal((8, 3, 224, 224)).astype(np.float32)
    for precision in ("fp32", "int8"):
        opts = BuildOptions(precision=precision, batch=(1, 8, 8), opt_level=0, tf32=False,
                            calibration=str(tmp_path / "table.json") if precision == "int8" else None)
        res = build_engine("resnet50", wts, tmp_path / f"r50_{precision}.engine", opts)
        outs[precision] = Engine(res.path).infer(x, as_numpy=True)["logits"]
    cos = cosine(outs["int8"], outs["fp32"])
    top1 = float((outs["int8"].argmax(1) == outs["fp32"].argmax(1)).mean())
    print(f"RESULT resnet50 int8 vs fp32 engine: cosine {cos:.5f}, top-1 agreement {top1:.3f} "
          f"({len(table.amax)} calibrated tensors, {time.perf_counter() - t0:.0f} s)")
    assert cos >= 0.99
