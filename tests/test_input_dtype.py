"""Engines whose input is uint8 images (normalized inside the network) or float16 (`--input-dtype`): options,
the network definition against PyTorch in float64 (CPU), the header, `netdef info`, the feeds an engine takes,
the serving types and random inputs. The engines' own numbers against PyTorch: tests/test_resnet_gpu.py."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import run_cli
from netdef import engine_file
from netdef.build import BuildOptions, define_network
from netdef.errors import NetdefError, OptionError
from netdef.options import options_dict
from netdef.spec import load_spec

IMAGENET = {"input_mean": (0.485, 0.456, 0.406), "input_std": (0.229, 0.224, 0.225)}


@pytest.mark.parametrize("opts, message", [
    (dict(input_dtype="int8"), "--input-dtype 'int8': use float32, float16, uint8"),
    (dict(input_mean=(0.5,)), "--input-mean normalizes a uint8 input inside the network: it goes with --input-dtype "
                              "uint8"),
    (dict(input_dtype="float16", input_std=(0.5,)), "--input-std normalizes a uint8 input"),
    (dict(input_dtype="uint8", input_std=(0.2, 0.0, 0.2)), "--input-std 0.2,0.0,0.2: standard deviations must be > 0"),
    (dict(input_dtype="uint8", input_mean=()), "--input-mean '': expected one number per input channel"),
    (dict(input_dtype="uint8", input_mean=("a",)), "--input-mean 'a': expected one number per input channel"),
    (dict(input_dtype="uint8", input_mean=(float("nan"), 0.5)), "--input-mean 'nan,0.5': expected one number"),
    (dict(input_dtype="uint8", input_mean="0.5"), "--input-mean '0.5': expected one number per input channel"),
    (dict(input_dtype="uint8", input_mean=(123.675, 116.28, 103.53)), "--input-mean 123.675,116.28,103.53: the "
     "images are scaled to [0, 1] before they are normalized, so means lie in [0, 1]; for values of the 0..255 scale "
     "divide them by 255"),
    (dict(input_dtype="uint8", input_std=(58.395, 57.12, 57.375)), "--input-std 58.395,57.12,57.375: the images are "
     "scaled to [0, 1] before they are normalized, so standard deviations lie in [0, 1]"),
    (dict(input_dtype="uint8", input_mean=(-0.1,)), "--input-mean -0.1: the images are scaled to [0, 1]"),
    (dict(input_dtype="uint8", input_std=(1e-5, 0.2, 0.2), precision="fp16"), "--input-std 1e-05,0.2,0.2: the "
     "normalization reaches 1e+05, beyond float16's range (65504) in an fp16 build"),
    (dict(input_dtype="uint8", input_std=(1e-300,)), "--input-std 1e-300: the normalization reaches 1e+300, beyond "
     "float32's range"),
    (dict(input_dtype="uint8", precision="int8"), "--input-dtype uint8 with --precision int8 is not supported"),
])
def test_input_options_are_checked(opts, message):
    with pytest.raises(OptionError, match=rf"^{re.escape(message)}"):
        BuildOptions(**opts).validate()


@pytest.mark.parametrize("mean, std", [((np.float32(0.5),), [1]), (0.5, np.float64(1)),
                                       (np.array([0.5]), np.array(1.0))])  # numpy scalars, a number, arrays
def test_any_real_numbers_normalize_and_are_kept_as_floats(mean, std):
    given = BuildOptions(input_dtype="uint8", input_mean=mean, input_std=std)
    given.validate()
    assert given.input_normalization == ((0.5,), (1.0,))
    assert json.dumps(options_dict(given))  # the header is JSON


def test_a_small_std_fits_float32():
    assert BuildOptions(input_dtype="uint8", input_std=(1e-5,), precision="fp32").validate() is None


def test_a_float32_input_leaves_the_options_as_before():
    """options_dict (the header and the build key) leaves the input type out where it is float32, so engines built
    before input types existed stay up to date; a uint8 input's type and normalization are recorded, and read
    back."""
    assert not {"input_dtype", "input_mean", "input_std"} & set(options_dict(BuildOptions()))
    d = options_dict(BuildOptions(input_dtype="uint8", **IMAGENET))
    assert (d["input_dtype"], d["input_mean"], d["input_std"]) == ("uint8", IMAGENET["input_mean"],
                                                                   IMAGENET["input_std"])
    back = BuildOptions.from_meta({k: list(v) if isinstance(v, tuple) else v for k, v in d.items()})
    assert back == BuildOptions(input_dtype="uint8", **IMAGENET)
    assert "input_std" not in options_dict(BuildOptions(input_dtype="uint8", input_mean=(0.5,)))


def test_uint8_images_normalized_inside_equal_pytorch_on_normalized_images(torchvision_wts):
    """The network definition of a uint8 input (cast, then (x / 255 - mean) / std in one scale layer named
    input/normalize), evaluated in float64, equals torchvision's ResNet-18 in float64 on the images normalized here;
    `verify --cpu` of such a build feeds the model what the network computes from the images and passes."""
    import copy

    import torch

    from netdef import trt_api
    from netdef.verify import verify
    from netdef.verify.evaluate import evaluate

    model, wts = torchvision_wts("resnet18")
    net = define_network(load_spec("resnet18"), wts, BuildOptions(input_dtype="uint8", **IMAGENET))
    raw = net.definition.raw
    assert raw.get_input(0).dtype == net.trt.uint8
    assert [raw.get_layer(i).name for i in range(3)] == ["input/cast", "input/normalize", "conv1"]
    x = np.random.default_rng(3).integers(0, 256, (2, 3, 224, 224), dtype=np.uint8)
    got = evaluate(trt_api.describe_layers(net.definition), {"input": x})["logits"].numpy()
    mean, std = (np.reshape(IMAGENET[k], (1, 3, 1, 1)) for k in ("input_mean", "input_std"))
    with torch.no_grad():
        want = copy.deepcopy(model).double().eval()(torch.from_numpy((x / 255.0 - mean) / std)).numpy()
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()  # the float32 constants' rounding (7e-8 here)
    report = verify("resnet18", wts, model, opts=BuildOptions(input_dtype="uint8", **IMAGENET), cpu=True,
                    log=lambda m: None)
    assert report.ok, report.table()


def test_uint8_input_needs_an_image_input_and_a_value_per_channel(torchvision_wts, tmp_path):
    _, wts = torchvision_wts("resnet18")
    with pytest.raises(OptionError, match="--input-std has 2 values; input 'input' has 3 channels: give 3, or one "
                                          "for all"):
        define_network(load_spec("resnet18"), wts, BuildOptions(input_dtype="uint8", input_std=(0.2, 0.3)))
    yaml = tmp_path / "flat.yaml"
    yaml.write_text("name: flat\ninput: {name: x, shape: [4]}\noutput: y\nlayers:\n"
                    "  - [-1, 1, Linear, {c2: 2}, fc]\n")
    weights = {"fc.weight": np.ones((2, 4), np.float32), "fc.bias": np.zeros(2, np.float32)}
    with pytest.raises(OptionError, match=r"--input-dtype uint8 is for image inputs \(B, C, H, W\); input 'x' is "
                                          r"\[-1, 4\]"):
        define_network(yaml, weights, BuildOptions(input_dtype="uint8"))
    net = define_network(yaml, weights, BuildOptions(input_dtype="float16"))  # any input may be float16
    assert net.definition.raw.get_input(0).dtype == net.trt.float16


def test_a_uint8_engine_s_header_info_and_feeds(torchvision_wts, tmp_path):
    """Built with the command line: the header's input is uint8 and records the normalization, `netdef info`
    shows it, and the engine refuses float feeds (a cast would wrap them) where a shape alone is fine."""
    from netdef.runtime import Engine

    _, wts = torchvision_wts("resnet18")
    out = tmp_path / "u8.engine"
    r = run_cli("build", "resnet18", "-w", str(wts), "-o", str(out), "--batch", "1:2:4", "--opt-level", "0",
                "--input-dtype", "uint8", "--input-mean", "0.485,0.456,0.406", "--input-std", "0.229,0.224,0.225")
    assert r.returncode == 0, r.stderr
    meta = engine_file.read_meta(out)
    assert meta["inputs"] == [{"name": "input", "shape": [-1, 3, 224, 224], "dtype": "uint8"}]
    assert meta["options"]["input_mean"] == [0.485, 0.456, 0.406]
    info = run_cli("info", str(out)).stdout
    assert "input  input        uint8    [-1, 3, 224, 224]  (x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, " \
           "0.225] inside" in info, info
    described = Engine.described(out)
    described.check_feeds({"input": np.zeros((2, 3, 224, 224), np.uint8)})
    described.check_feeds({"input": SimpleNamespace(shape=(2, 3, 224, 224))})
    with pytest.raises(OptionError, match="input 'input' takes uint8 images .* got float32: pass the images "
                                          "themselves, not scaled or normalized"):
        described.check_feeds({"input": np.zeros((2, 3, 224, 224), np.float32)})
    from netdef.tools.detect import engine_detector

    with pytest.raises(NetdefError, match="input input is uint8; netdef detect letterboxes and scales the images on "
                                          "the GPU and feeds floats"):
        engine_detector(out)  # its header, before a GPU is needed
    r = run_cli("build", "resnet18", "-w", str(wts), "-o", str(tmp_path / "x.engine"), "--input-mean", "0.5")
    assert r.returncode == 1 and "--input-mean normalizes a uint8 input" in r.stderr and "Traceback" not in r.stderr


def test_a_uint8_engine_is_served_as_uint8():
    """`netdef serve` serves a uint8 input as TYPE_UINT8 (bench_serve's random inputs cover 0..255), and a YOLO
    engine of uint8 input as raw tensors alone by default (netdef detect feeds floats: no NAME_detect)."""
    from test_serve import toy_meta

    from netdef.deploy.serve import binding, serves_detections
    from netdef.runtime import random_input

    yolo = toy_meta()
    assert serves_detections(yolo, None)
    yolo["inputs"][0]["dtype"] = "uint8"
    assert not serves_detections(yolo, None)
    with pytest.raises(NetdefError, match="yolov5s: input images is uint8; netdef detect letterboxes"):
        serves_detections(yolo, True)

    meta = {"arch": {"name": "toy"}, "options": {"batch": [1, 4, 8], "profiles": None, "input_dtype": "uint8"},
            "inputs": [{"name": "images", "shape": [-1, 3, 8, 8], "dtype": "uint8"}],
            "outputs": [{"name": "y", "shape": [-1, 2], "dtype": "float32"}]}
    spec = binding(meta)
    assert spec.inputs[0].dtype == "uint8"
    x = random_input((64, 3, 8, 8), "uint8", np.random.default_rng(0))
    assert x.dtype == np.uint8 and x.min() < 10 and x.max() > 245  # the whole range of an image
    assert random_input((4,), "float16", np.random.default_rng(0)).dtype == np.float16


def test_netdef_triton_writes_a_uint8_input_for_triton_s_tensorrt_backend(torchvision_wts, tmp_path):
    """`netdef triton` of a uint8-input engine: the repository's config.pbtxt declares TYPE_UINT8 (Triton's own
    schema parses it), so Triton's TensorRT backend takes the images as the engine does."""
    pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs pip install 'tritonclient[grpc]'")
    from google.protobuf import text_format

    _, wts = torchvision_wts("resnet18")
    engine = tmp_path / "u8.engine"
    assert run_cli("build", "resnet18", "-w", str(wts), "-o", str(engine), "--batch", "1:2:4", "--opt-level", "0",
                   "--input-dtype", "uint8").returncode == 0
    r = run_cli("triton", str(engine), "--repo", str(tmp_path / "repo"))
    assert r.returncode == 0, r.stderr
    config = text_format.Parse((tmp_path / "repo" / "resnet18" / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert [(t.name, pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("input", "TYPE_UINT8", [3, 224, 224])]
