"""The model zoo: torchvision's MobileNetV2/V3, EfficientNet-B0, ResNeXt-50, Wide ResNet-50-2, ViT-B/16 and the
classic UNet (netdef.testing.unet_reference) rebuilt from their state_dicts.

CPU: strict key accounting, layer names, output shapes, fp32/fp16 builds with the installed TensorRT (RTX here),
and `netdef.verify` (the network definition evaluated in float64, layer by layer against PyTorch, max relative
error <= 1e-5). GPU (`-m gpu`): fp32 (TF32 off) and fp16 engines with a dynamic batch 1:7:32 against PyTorch fp32
at batches 1, 7 and 32; one RESULT line per case."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import misnamed_tensors

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from netdef import engine_file  # noqa: E402
from netdef.build import BuildOptions, build_engine, define_network  # noqa: E402
from netdef.cli import main  # noqa: E402
from netdef.errors import NetdefError, SpecError  # noqa: E402
from netdef.export import export_wts, load_source, randomize_batchnorm  # noqa: E402
from netdef.spec import load_spec  # noqa: E402
from netdef.verify import verify  # noqa: E402

UNET = "netdef.testing.unet_reference:UNet"
UNET_HW = (100, 75)  # not multiples of 16: the decoder pads (F.pad) on both axes
ZOO = ["mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnext50_32x4d", "wide_resnet50_2", "vit_b_16",
       "unet"]
CNNS = [n for n in ZOO if n != "vit_b_16"]
# verify's input size: smaller for the ResNets (float64 on 2 cores); ViT-B/16 needs 224 (its position embedding)
VERIFY_HW = {"resnext50_32x4d": (64, 64), "wide_resnet50_2": (64, 64), "unet": UNET_HW}
BOUND = {"fp32": 1e-3, "fp16": 2e-2}


def _source(name: str) -> str:
    return UNET if name == "unet" else f"torchvision:{name}"


def _input_hw(name: str) -> tuple[int, int] | None:
    return UNET_HW if name == "unet" else None


@pytest.fixture(scope="module")
def zoo_model(request, tmp_path_factory):
    """(model, wts path) of the zoo model named by the test's parameter (`indirect=True`): random weights, random
    BatchNorm statistics, and the parameters torchvision initialises to zero (ViT's class token and head, attention
    biases, ...) random too, so every key matters. Module-scoped and parametrized, so pytest runs the tests model by
    model and only one model and its .wts (up to 0.8 GB for ViT-B/16) exist at a time: the file is deleted after."""
    name = request.param
    torch.manual_seed(0)
    model = load_source(_source(name)).eval()
    randomize_batchnorm(model, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    path = tmp_path_factory.mktemp("zoo") / f"{name}.wts"
    export_wts(model, path)
    yield model, path
    path.unlink()


def models(names: list[str]):
    """Parametrize a test over zoo models, each handed in as `zoo_model`."""
    return pytest.mark.parametrize("zoo_model", names, indirect=True)


def _layers(net):
    return [net.definition.get_layer(i) for i in range(net.definition.num_layers)]


@models(ZOO)
def test_keys_names_and_output_shape(zoo_model):
    model, wts = zoo_model
    name = wts.stem
    net = define_network(load_spec(name), wts, BuildOptions(input_hw=_input_hw(name)), log=lambda m: None)
    assert net.check_keys() == []  # and define_network raised on missing keys
    assert net.used == set(k for k in model.state_dict() if not k.endswith("num_batches_tracked"))
    hw = _input_hw(name) or (224, 224)
    with torch.no_grad():
        ref = model.float()(torch.zeros(2, 3, *hw))
    out = net.definition.get_output(0)
    assert (out.name, tuple(out.shape)) == ("logits", (-1, *ref.shape[1:]))
    # convolutions and linear layers are named after their PyTorch modules, one layer per module
    L = net.trt.LayerType
    modules = dict(model.named_modules())
    weighted = {m for m, mod in modules.items() if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d,
                                                                     torch.nn.Linear))}
    layers = _layers(net)
    named = {lay.name for lay in layers if lay.type in (L.CONVOLUTION, L.DECONVOLUTION)
             or (lay.type == L.MATRIX_MULTIPLY and lay.name in modules)}
    assert named == weighted
    # every other layer points back to a module or a parameter: `<module>/<kind>` or the key itself
    keys = {k.rpartition(".")[0] for k in model.state_dict()} | set(model.state_dict())
    for lay in layers:
        base = lay.name.split("/")[0].split("#")[0]
        assert base in modules or base in keys, lay.name
    assert len({lay.name for lay in layers}) == len(layers)
    assert misnamed_tensors(net.definition) == []


@models(ZOO)
def test_verify_cpu_matches_pytorch(zoo_model):
    """Every matched layer and the output within 1e-5 (max relative error) of PyTorch in float64."""
    model, wts = zoo_model
    name = wts.stem
    hw = VERIFY_HW.get(name)
    report = verify(name, wts, model, cpu=True, opts=BuildOptions(input_hw=hw), log=lambda m: None)
    assert report.ok, report.summary() + "\n" + report.table()
    compared = [r for r in report.rows if r.error is not None]
    assert compared[-1].module == "(model output)" and compared[-1].error <= 1e-5
    assert max(r.error for r in compared) <= 1e-5
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len(compared) >= min(n_convs, 60)  # the layers are compared, not only the output
    print(f"RESULT {name} verify --cpu fp32: {len(compared)} layers, max rel err "
          f"{max(r.error for r in compared):.2e}")


ODD_HW = (97, 75)  # (H, W), as `--input-shape 97x75`: neither a multiple of 16 (nor of 2)


@models(["mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnext50_32x4d", "wide_resnet50_2"])
def test_verify_cpu_at_odd_size(zoo_model):
    """At 97x75 (H x W) every stride-2 stage rounds up (97 -> 49 -> 25 -> 13 -> 7 -> 4, 75 -> 38 -> 19 -> 10 -> 5
    -> 3) and the classifier pools a non-square map: every matched layer and the output within 1e-5 of PyTorch in
    float64, as at 224 (test_verify_cpu_matches_pytorch). The UNet is verified at 100x75 there; ViT-B/16 takes
    only 224."""
    model, wts = zoo_model
    name = wts.stem
    report = verify(name, wts, model, cpu=True, opts=BuildOptions(input_hw=ODD_HW), log=lambda m: None)
    assert report.ok, report.summary() + "\n" + report.table()
    compared = [r for r in report.rows if r.error is not None]
    assert compared[0].shape[-2:] == (49, 38)  # the stem's stride-2 output: H and W not swapped
    assert compared[-1].module == "(model output)" and compared[-1].shape == (1, 1000)
    assert max(r.error for r in compared) <= 1e-5
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len(compared) >= min(n_convs, 60)
    print(f"RESULT {name} verify --cpu fp32 {ODD_HW[0]}x{ODD_HW[1]}: {len(compared)} layers, max rel err "
          f"{max(r.error for r in compared):.2e}")


@models(["efficientnet_b0", "vit_b_16", "unet"])
def test_fp16_definition_within_fp16_tolerance(zoo_model):
    """The fp16 network evaluated with float16 rounding (SiLU/squeeze-excitation; attention scores, softmax and
    LayerNorm kept in float32; transposed convolution and padding): every layer within 1e-2 of PyTorch."""
    model, wts = zoo_model
    name = wts.stem
    opts = BuildOptions(precision="fp16", input_hw=VERIFY_HW.get(name))
    report = verify(name, wts, model, cpu=True, opts=opts, log=lambda m: None)
    assert report.ok, report.summary()
    final = report.rows[-1]
    assert final.module == "(model output)" and final.error <= 1e-2
    print(f"RESULT {name} verify --cpu fp16: output max rel err {final.error:.2e}")


@models(CNNS)
def test_builds_fp32_and_fp16(zoo_model, tmp_path):
    _, wts = zoo_model
    name = wts.stem
    for precision in ("fp32", "fp16"):
        out = tmp_path / f"{name}_{precision}.engine"
        opts = BuildOptions(precision=precision, batch=(1, 4, 8), opt_level=0, input_hw=_input_hw(name))
        res = build_engine(name, wts, out, opts, log=lambda m: None)
        assert res.built
        meta = engine_file.read_meta(out)
        hw = list(_input_hw(name) or (224, 224))
        assert meta["inputs"] == [{"name": "input", "shape": [-1, 3, *hw], "dtype": "float32"}]
        shape = [-1, 2, *hw] if name == "unet" else [-1, 1000]
        assert meta["outputs"] == [{"name": "logits", "shape": shape, "dtype": "float32"}]
        assert meta["precision"] == precision and len(engine_file.read_plan(out)[1]) > 1000


@models(["vit_b_16"])
def test_vit_builds_fp32_and_fp16(zoo_model, tmp_path):
    """ViT-B/16 (fp16: the typed attention path); each engine deleted once checked (0.35 GB in fp32)."""
    _, wts = zoo_model
    for precision in ("fp32", "fp16"):
        out = tmp_path / f"vit_{precision}.engine"
        res = build_engine("vit_b_16", wts, out, BuildOptions(precision=precision, batch=(1, 4, 8), opt_level=0),
                           log=lambda m: None)
        assert res.built
        meta = engine_file.read_meta(out)
        assert meta["precision"] == precision
        assert meta["outputs"] == [{"name": "logits", "shape": [-1, 1000], "dtype": "float32"}]
        out.unlink()


@models(["unet"])
def test_unet_pads_like_f_pad_at_odd_sizes(zoo_model):
    """At 100x75 the decoder pads (1 row or column) where floor division lost one; at 96x128 nothing is padded."""
    _, wts = zoo_model
    names = {lay.name for lay in _layers(define_network("unet", wts, BuildOptions(input_hw=UNET_HW),
                                                         log=lambda m: None))}
    assert {"up1/pad", "up2/pad", "up3/pad", "up4/pad"} <= names  # width: 9->8, 37->36, 75->74; height: 25->24
    names = {lay.name for lay in _layers(define_network("unet", wts, BuildOptions(input_hw=(96, 128)),
                                                         log=lambda m: None))}
    assert not any(n.endswith("/pad") for n in names)


def test_unet_bilinear_variant_matches(tmp_path):
    """Up with bilinear upsampling (align_corners) and DoubleConv's mid channels, at 57x83."""
    from netdef.testing.unet_reference import UNet

    torch.manual_seed(0)
    model = UNet(bilinear=True).eval()
    randomize_batchnorm(model, seed=4)
    export_wts(model, tmp_path / "ub.wts")
    rows = ["[-1, 1, DoubleConv, {c2: 64}, inc]"] + [f"[-1, 1, Down, {{c2: {c}}}, down{i}]" for i, c in
                                                     enumerate((128, 256, 512, 512), 1)]
    rows += [f"[[-1, {3 - i}], 1, Up, {{c2: {c}, bilinear: true}}, up{i + 1}]"
             for i, c in enumerate((256, 128, 64, 64))]
    rows += ["[-1, 1, Conv2d, {c2: 2, k: 1}, outc.conv]"]
    yaml = tmp_path / "unet_bilinear.yaml"
    yaml.write_text("name: unet_bilinear\ninput: {name: input, shape: [3, 57, 83]}\noutput: logits\nlayers:\n"
                    + "".join(f"  - {r}\n" for r in rows))
    report = verify(yaml, tmp_path / "ub.wts", model, cpu=True, log=lambda m: None)
    assert report.ok, report.summary() + "\n" + report.table()
    assert {"up1.up", "(model output)"} <= {r.module for r in report.rows if r.status == "pass"}


def test_cli_export_and_verify(tmp_path, capsys):
    """`netdef export SOURCE --randomize-bn --seed N` and `netdef verify --cpu`, for a torchvision model and UNet."""
    for name, extra in (("mobilenet_v3_large", []), ("unet", ["--input-shape", "64,48"])):
        wts = tmp_path / f"{name}.wts"
        assert main(["export", _source(name), "-o", str(wts), "--randomize-bn", "--seed", "5"]) == 0
        assert main(["verify", name, "-w", str(wts), "--model", _source(name), "--cpu", *extra]) == 0
        assert "PASS" in capsys.readouterr().out


SEGMENTATION = Path(__file__).resolve().parent.parent / "docs" / "examples" / "segmentation"


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_segmentation_examples_verify(name, tmp_path, capsys):
    """docs/examples/segmentation (a researcher's own block module and YAMLs, outside netdef/): torchvision's
    LRASPP and DeepLabV3 on dilated MobileNetV3 backbones pass `verify --cpu` at a size that is not a multiple of
    32 (deeplabv3_resnet50.yaml, 357 MB of .wts, is checked the same way by hand: docs/writing-blocks.md)."""
    wts, source = tmp_path / f"{name}.wts", f"torchvision:{name}"
    assert main(["export", source, "-o", str(wts), "--randomize-bn"]) == 0
    assert main(["verify", str(SEGMENTATION / f"{name}.yaml"), "-w", str(wts), "--model", source, "--cpu",
                 "--blocks", str(SEGMENTATION / "blocks.py"), "--input-shape", "131x197"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and " 0 skipped" in out, out


CLASSIFICATION = Path(__file__).resolve().parent.parent / "docs" / "examples" / "classification"


@pytest.mark.parametrize("name, hw", [("shufflenet_v2_x1_0", "97x75"), ("convnext_tiny", "64x70"),
                                      ("googlenet", "97x75"), ("densenet121", "97x75"), ("squeezenet1_1", "97x75"),
                                      ("regnet_y_400mf", "64x70")])
def test_classification_examples_verify(name, hw, tmp_path, capsys):
    """docs/examples/classification (a researcher's own block module and YAMLs): torchvision's ShuffleNetV2,
    ConvNeXt-T (its 1e-6 layer scales randomized), GoogLeNet (max-pools with ceil_mode, which matters at odd
    sizes; its auxiliary heads skipped, not named as never compared), DenseNet-121 (BatchNorm before the
    convolutions; F.relu in forward() an Act row compared with no module), SqueezeNet 1.1 (ceil_mode max-pools,
    a 1x1 convolution classifier; its zero biases randomized) and RegNetY-400MF (grouped convolutions,
    squeeze-excitation, units named blockK-i) pass `verify --cpu`."""
    wts, source = tmp_path / f"{name}.wts", f"torchvision:{name}"
    assert main(["export", source, "-o", str(wts), "--randomize-bn", "--randomize-constants"]) == 0
    assert main(["verify", str(CLASSIFICATION / f"{name}.yaml"), "-w", str(wts), "--model", source, "--cpu",
                 "--blocks", str(CLASSIFICATION / "blocks.py"), "--input-shape", hw]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and " 0 skipped" in out and "never compared" not in out, out


def test_googlenet_example_transform_input(tmp_path):
    """`--set transform_input=true` is GoogLeNet's transform_input (torchvision's ImageNet weights): the model
    built with it matches only the network built with it."""
    import torchvision

    from netdef.block_modules import load_blocks

    load_blocks([str(CLASSIFICATION / "blocks.py")])
    torch.manual_seed(0)
    model = torchvision.models.googlenet(transform_input=True, aux_logits=False, init_weights=True).eval()
    randomize_batchnorm(model, seed=1)
    export_wts(model, tmp_path / "g.wts")
    ok = {ti: verify(CLASSIFICATION / "googlenet.yaml", tmp_path / "g.wts", model, cpu=True, log=lambda m: None,
                     opts=BuildOptions(input_hw=(40, 48), params={"transform_input": ti})).ok for ti in (True, False)}
    assert ok == {True: True, False: False}


@models(["vit_b_16"])
def test_bad_inputs_are_named(zoo_model, tmp_path):
    model, _ = zoo_model
    sd = {k: v.float().numpy() for k, v in model.state_dict().items()}
    with pytest.raises(NetdefError, match=r"encoder\.pos_embedding"):  # a 160x160 input has 101 tokens, not 197
        define_network("vit_b_16", sd, BuildOptions(input_hw=(160, 160)), log=lambda m: None)
    yaml = tmp_path / "bad.yaml"
    for row, message in (("[-1, 1, Up, {c2: 8}, up1]", "Up takes a list of inputs, and .from. -1 gives one tensor"),
                         ("[-1, 1, InvertedResidualV3, {c2: 8, act: gelu}, features.1]", "act 'gelu'"),
                         ("[-1, 2, MBConv, {c2: 8, s: 3}, features.1]", "stride must be 1 or 2")):
        yaml.write_text("name: bad\ninput: {name: input, shape: [3, 32, 32]}\noutput: y\nlayers:\n"
                        f"  - [-1, 1, Conv2d, {{c2: 8, k: 3}}, stem]\n  - {row}\n")
        with pytest.raises(SpecError, match=rf"bad\.yaml:6: .*{message}"):
            define_network(yaml, {}, BuildOptions(), log=lambda m: None)


# ---------------------------------------------------------------- GPU: engines against PyTorch

@pytest.mark.gpu
@models(ZOO)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_engine_matches_pytorch(zoo_model, precision, tmp_path):
    from netdef.runtime import Engine
    from netdef.tools.verify import max_rel_error, torch_reference

    model, wts = zoo_model
    name = wts.stem
    model = model.float()  # verify may have left it in float64
    hw = _input_hw(name) or (224, 224)
    rng = np.random.default_rng(0)
    opts = BuildOptions(precision=precision, batch=(1, 7, 32), opt_level=0, tf32=False, input_hw=_input_hw(name))
    res = build_engine(name, wts, tmp_path / f"{name}_{precision}.engine", opts, log=lambda m: None)
    engine = Engine(res.path, backend="torch")
    errors = {}
    for b in (1, 7, 32):
        x = rng.standard_normal((b, 3, *hw)).astype(np.float32)
        errors[b] = max_rel_error(engine.infer(x, as_numpy=True)["logits"], torch_reference(model, x))
    print(f"RESULT zoo {name} {precision}{' no-tf32' if precision == 'fp32' else ''} build "
          f"{res.meta['build_seconds']} s max-rel-err " + " ".join(f"b{k}={v:.2e}" for k, v in errors.items()))
    assert max(errors.values()) <= BOUND[precision], errors


def test_dilated_inverted_residual_v3():
    """InvertedResidualV3 with `d: 2` is torchvision's dilated block (the segmentation backbones' last stage):
    the depthwise convolution dilated and padded d * (k - 1) // 2, its stride 1 though the config says 2."""
    from functools import partial

    from netdef.testing.check_block import check_block
    from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig

    torch.manual_seed(0)
    cnf = InvertedResidualConfig(40, 5, 120, 48, True, "HS", 2, 2, 1.0)
    module = InvertedResidual(cnf, partial(torch.nn.BatchNorm2d, eps=0.001, momentum=0.01)).eval()
    randomize_batchnorm(module, seed=3)
    kwargs = {"c2": 48, "k": 5, "exp": 120, "se": True, "act": "hardswish", "s": 2, "d": 2}
    assert check_block("InvertedResidualV3", module, (1, 40, 19, 13), kwargs=kwargs, cpu=True) <= 1e-5


def test_torchvision_segmentation_model_downloads_nothing(monkeypatch):
    """`torchvision:NAME` is torchvision's random init also for a segmentation model, whose builder defaults
    `weights_backbone` to ImageNet weights: nothing is downloaded (offline, that was a bare urlopen error)."""
    import torchvision.models._api as api

    def no_download(*args, **kwargs):
        raise AssertionError("netdef export torchvision:NAME downloaded weights")

    monkeypatch.setattr(api, "load_state_dict_from_url", no_download)
    model = load_source("torchvision:lraspp_mobilenet_v3_large")
    assert not model.training and "classifier.low_classifier.weight" in model.state_dict()
    with pytest.raises(NetdefError, match="torchvision has no model 'resnet17'"):
        load_source("torchvision:resnet17")


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_torchvision_model_without_init_weights_warns_nothing(name):
    """GoogLeNet and Inception-v3 built without `init_weights` warn (FutureWarning) that its default will change,
    advice for a caller of torchvision the `netdef export` user is not: netdef passes the default, True."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "fc.weight" in load_source(f"torchvision:{name}").state_dict()


def test_dilated_res_layer():
    """ResLayer with `d`, `d_first` is a torchvision layer of `replace_stride_with_dilation` (DeepLabV3's ResNet
    backbone): the first unit's 3x3 dilated by the previous dilation, the others by `d`, the stride 1."""
    from netdef.testing.check_block import check_block
    from torchvision.models.resnet import Bottleneck

    torch.manual_seed(0)
    down = torch.nn.Sequential(torch.nn.Conv2d(32, 64, 1, bias=False), torch.nn.BatchNorm2d(64))
    module = torch.nn.Sequential(Bottleneck(32, 16, 1, down, dilation=2), Bottleneck(64, 16, dilation=4),
                                 Bottleneck(64, 16, dilation=4)).eval()
    randomize_batchnorm(module, seed=3)
    kwargs = {"planes": 16, "n": 3, "s": 1, "d": 4, "d_first": 2}
    assert check_block("ResLayer", module, (1, 32, 11, 9), kwargs=kwargs, cpu=True) <= 1e-5
    with pytest.raises(SpecError, match="basic ResLayer has no dilation"):
        check_block("ResLayer", module, (1, 32, 11, 9), kwargs={**kwargs, "kind": "basic"}, cpu=True)
