"""YOLOv5 architectures against Ultralytics' own model definition (random weights, random BatchNorm).

CPU: every architectures/yolov5*.yaml defines a network that consumes exactly the reference state_dict
(strict key accounting, shapes checked), the small ones build and serialize (fp32, fp16, 640x480, nc=3),
the Detect constants (anchors, strides, grids) and the plugin hand-off are checked, and an Ultralytics-style
checkpoint exports. GPU (`-m gpu`): engines vs the reference's `model(x)[0]`; prints RESULT lines.

Needs `pip install --no-deps yolov5==7.0.14` (the reference); without it these tests skip.
"""
from __future__ import annotations

import gc
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from netdef.testing import yolov5_reference as ref
from helpers import misnamed_tensors, photos, synthetic_table
from netdef.build import BuildOptions, build_engine, define_network
from netdef.errors import NetdefError
from netdef.network import Network
from netdef.registry import get_block
from netdef.spec import load_spec
from netdef.wts import read_wts, write_wts

pytestmark = pytest.mark.skipif(not ref.yolov5_available(),
                                reason="needs the reference: pip install --no-deps yolov5==7.0.14")

SIZES = "nsmlx"
ALL = [f"yolov5{s}{v}" for v in ("", "6", "-v5") for s in SIZES]
BUILT = {"yolov5n", "yolov5s", "yolov5n6", "yolov5s6", "yolov5n-v5", "yolov5s-v5"}  # others: define only


def n_boxes(na: int, hw: tuple[int, int], strides: list[int]) -> int:
    return na * sum((hw[0] // s) * (hw[1] // s) for s in strides)


def strides_of(name: str) -> list[int]:
    return [8, 16, 32, 64] if name.endswith("6") else [8, 16, 32]


def define(arch, sd: dict, precision: str = "fp32", input_hw=None, **params) -> tuple[Network, list[str]]:
    """define_network with the reference state_dict as the weights (no .wts file)."""
    net = define_network(arch, sd, BuildOptions(precision=precision, input_hw=input_hw, params=dict(params)),
                         log=lambda msg: None)
    d = net.definition
    return net, [d.get_output(i).name for i in range(d.num_outputs)]


@pytest.fixture(scope="module")
def models(yolov5_models):
    """name -> (reference model, state_dict), shared with other modules (conftest.py)."""

    def get(name: str, nc: int | None = None, v5_buffers: bool = False, tame: bool = False):
        # the large ones are used once: not kept (memory)
        return yolov5_models(name, nc=nc, v5_buffers=v5_buffers, tame=tame, keep=name in BUILT or name == "yolov5m")

    return get


@pytest.fixture(scope="module")
def wts(yolov5_wts):
    """(name, tame=False) -> the reference model's .wts (conftest.py)."""
    return yolov5_wts


# ---------------------------------------------------------------- blocks and YAMLs

def test_blocks_registered_under_ultralytics_names():
    from netdef.blocks import common, yolo

    assert get_block("nn.Upsample").fn is common.upsample is get_block("Upsample").fn
    assert get_block("Concat").fn is common.concat
    for name in ("Conv", "Bottleneck", "C3", "SPP", "SPPF", "Focus"):
        assert get_block(name).width_args == ("c2",), name
    assert get_block("C3").repeat_arg == "n" and get_block("Detect").fn is yolo.detect


@pytest.mark.parametrize("name", ALL)
def test_yaml_rows_scale_like_parse_model(name):
    """Our rows after depth/width scaling == the arguments Ultralytics' parse_model gives each module."""
    spec = load_spec(name)
    cfg = ref.reference_cfg(name)
    ours = yaml.safe_load(spec.text)
    for key in ("nc", "anchors"):
        assert ours[key] == cfg[key], key
    assert ours["scales"][spec.scale] == [cfg["depth_multiple"], cfg["width_multiple"]]
    assert spec.name == name
    assert spec.input_shape == ((3, 1280, 1280) if name.endswith("6") else (3, 640, 640))
    rows = cfg["backbone"] + cfg["head"]
    assert len(spec.rows) == len(rows)
    gd, gw = cfg["depth_multiple"], cfg["width_multiple"]
    for row, (frm, n, module, args) in zip(spec.rows, rows):
        assert row.block.name == module
        assert row.sources == [row.index + f if f < 0 else f for f in (frm if isinstance(frm, list) else [frm])]
        n = max(round(n * gd), 1) if n > 1 else n
        if module in ("Conv", "C3", "SPP", "SPPF", "Focus", "Bottleneck"):
            c2 = int(np.ceil(args[0] * gw / 8) * 8)
            expected = [c2, n, *args[1:]] if module == "C3" else [c2, *args[1:]]
            assert (row.args, row.number) == (expected, 1 if module == "C3" else n), row.index
        elif module == "Detect":
            assert row.args == [cfg["nc"], cfg["anchors"]]


# ---------------------------------------------------------------- key accounting and shapes (CPU)

@pytest.mark.parametrize("name", ALL)
def test_network_consumes_exactly_the_reference_state_dict(name, models):
    model, sd = models(name)
    net, outputs = define(name, sd)
    assert net.check_keys(strict=True) == []
    assert net.used == set(sd), (set(sd) ^ net.used)
    assert misnamed_tensors(net.definition) == []  # e.g. the upsample's output, which TensorRT copies
    hw = (1280, 1280) if name.endswith("6") else (640, 640)
    assert outputs == ["output"]
    assert tuple(net.definition.get_output(0).shape) == (-1, n_boxes(3, hw, strides_of(name)), 85)
    assert [float(s) for s in model.stride] == strides_of(name)
    del model, sd, net
    gc.collect()


@pytest.mark.parametrize("name", sorted(BUILT))
def test_build_serializes(name, wts, tmp_path):
    res = build_engine(name, wts(name), tmp_path / f"{name}.engine", BuildOptions(opt_level=0, batch=(1, 1, 2)))
    hw = (1280, 1280) if name.endswith("6") else (640, 640)
    assert res.meta["outputs"] == [{"name": "output", "shape": [-1, n_boxes(3, hw, strides_of(name)), 85],
                                    "dtype": "float32"}]
    assert res.meta["inputs"][0]["name"] == "images" and res.path.stat().st_size > 1e6


@pytest.mark.parametrize("name, hw", [("yolov5s", (480, 640)), ("yolov5s-v5", (480, 640)), ("yolov5s6", (768, 1280))])
def test_non_square_input(name, hw, wts, tmp_path):
    res = build_engine(name, wts(name), tmp_path / "e.engine", BuildOptions(opt_level=0, input_hw=hw))
    assert res.meta["inputs"][0]["shape"] == [-1, 3, *hw]
    assert res.meta["outputs"][0]["shape"] == [-1, n_boxes(3, hw, strides_of(name)), 85]


@pytest.mark.parametrize("name", ["yolov5s", "yolov5n6", "yolov5n-v5"])  # each layout (v6/v7, P6, v5.0) in fp16 too
def test_fp16_build(name, wts, tmp_path):
    res = build_engine(name, wts(name), tmp_path / "e.engine", BuildOptions(precision="fp16", opt_level=0))
    assert res.meta["precision"] == "fp16" and res.meta["outputs"][0]["dtype"] == "float32"
    hw = (1280, 1280) if name.endswith("6") else (640, 640)
    assert res.meta["outputs"][0]["shape"] == [-1, n_boxes(3, hw, strides_of(name)), 85]


def custom_nc_yaml(tmp_path, name: str = "yolov5s", nc: int = 3) -> Path:
    """A copy of the family file with `nc`, named as Ultralytics would: yolov5s-nc3.yaml -> yolov5-nc3.yaml, scale s."""
    family = load_spec(name).path
    text = family.read_text()
    assert "\nnc: 80 " in text
    (tmp_path / f"{family.stem}-nc{nc}.yaml").write_text(text.replace("\nnc: 80 ", f"\nnc: {nc} "))
    return tmp_path / f"{name}-nc{nc}.yaml"


def test_custom_class_count_from_yaml_alone(models, tmp_path):
    arch = custom_nc_yaml(tmp_path)
    _, sd = models("yolov5s", nc=3)
    write_wts(tmp_path / "nc3.wts", sd)
    res = build_engine(arch, tmp_path / "nc3.wts", tmp_path / "nc3.engine", BuildOptions(opt_level=0))
    assert res.meta["outputs"][0]["shape"] == [-1, 25200, 8]


def test_class_count_from_the_weights(models):
    """The nc: 80 YAML with nc=3 weights: the weights' count wins (no copied YAML needed); `--set nc` is checked
    against them."""
    _, sd = models("yolov5s", nc=3)
    net, names = define("yolov5s", sd)
    assert tuple(net.definition.get_output(0).shape) == (-1, 25200, 8)
    assert tuple(define("yolov5s", sd, nc=3)[0].definition.get_output(0).shape) == (-1, 25200, 8)
    with pytest.raises(NetdefError, match=r"--set nc=80, but the weights were trained with nc=3 \('model\.24\.m\.0\.bias'"):
        define("yolov5s", sd, nc=80)


# ---------------------------------------------------------------- Detect constants, anchors, plugin hand-off

def recorded_constants(monkeypatch) -> dict[str, np.ndarray]:
    seen: dict[str, np.ndarray] = {}
    original = Network.constant

    def constant(self, arr, name, dtype=None):
        seen[name] = np.asarray(arr)
        return original(self, arr, name, dtype)

    monkeypatch.setattr(Network, "constant", constant)
    return seen


@pytest.mark.parametrize("name, hw", [("yolov5s", (480, 640)), ("yolov5s6", (1280, 1280))])
def test_decode_constants_follow_anchors_strides_and_grid(name, hw, models, monkeypatch):
    model, sd = models(name)
    detect = model.model[-1]
    prefix = ref.detect_prefix(model)
    seen = recorded_constants(monkeypatch)
    define(name, sd, input_hw=hw)
    anchors_px = (detect.anchors * detect.stride.view(-1, 1, 1)).numpy()
    for i, s in enumerate(strides_of(name)):
        h, w = hw[0] // s, hw[1] // s
        q, p = seen[f"{prefix}/level{i}/wh_gain"], seen[f"{prefix}/level{i}/gain"]
        gx, gy = seen[f"{prefix}/level{i}/grid_x"], seen[f"{prefix}/level{i}/grid_y"]
        np.testing.assert_allclose(q[0, :, 0, 0, 2:4], 4 * anchors_px[i])
        assert not q[..., :2].any() and not q[..., 4:].any()
        assert p[0, 0, 0, 0, :5].tolist() == [2 * s, 2 * s, 0, 0, 1] and (p[..., 5:] == 1).all()
        assert gx.shape == (1, 1, 1, w, 85) and gy.shape == (1, 1, h, 1, 85)
        np.testing.assert_allclose(gx[0, 0, 0, :, 0], (np.arange(w) - 0.5) * s)
        np.testing.assert_allclose(gy[0, 0, :, 0, 1], (np.arange(h) - 0.5) * s)
        assert np.count_nonzero(gx) <= w and np.count_nonzero(gy) <= h


@pytest.mark.parametrize("name, hw", [("yolov5s", (480, 640)), ("yolov5n6", (384, 256))])
def test_decode_formula_reproduces_ultralytics(name, hw, models, monkeypatch):
    """y * (y * Q + P) + GX + GY over the sigmoid of YOLOv5's own raw head outputs == its decoded output."""
    import torch

    model, sd = models(name)
    prefix = ref.detect_prefix(model)
    seen = recorded_constants(monkeypatch)
    define(name, sd, input_hw=hw)
    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoded, raw = model(x)  # raw: per level (B, na, H, W, no) logits
    levels = []
    for i, r in enumerate(raw):
        y = torch.sigmoid(r.double()).numpy()
        c = {k: seen[f"{prefix}/level{i}/{k}"].astype(np.float64) for k in ("wh_gain", "gain", "grid_x", "grid_y")}
        levels.append((y * (y * c["wh_gain"] + c["gain"]) + c["grid_x"] + c["grid_y"]).reshape(1, -1, 85))
    np.testing.assert_allclose(np.concatenate(levels, 1), decoded.double().numpy(), rtol=1e-5, atol=1e-4)


def test_anchors_come_from_the_weights(models, monkeypatch):
    _, sd = models("yolov5s")
    sd = dict(sd)
    sd["model.24.anchors"] = sd["model.24.anchors"] * 1.5  # e.g. AutoAnchor changed them in training
    seen = recorded_constants(monkeypatch)
    define("yolov5s", sd)
    np.testing.assert_allclose(seen["model.24/level2/wh_gain"][0, :, 0, 0, 2:4],
                               4 * 1.5 * np.array([[116, 90], [156, 198], [373, 326]]), rtol=1e-6)


def test_yaml_anchors_used_without_weights_anchors(models, monkeypatch):
    _, sd = models("yolov5s")
    sd = {k: v for k, v in sd.items() if k != "model.24.anchors"}
    seen = recorded_constants(monkeypatch)
    net, _ = define("yolov5s", sd)
    assert net.check_keys(strict=True) == []
    np.testing.assert_allclose(seen["model.24/level0/wh_gain"][0, :, 0, 0, 2:4],
                               4 * np.array([[10, 13], [16, 30], [33, 23]]))


def test_v5_checkpoint_anchor_grid_is_consumed_and_checked(models):
    model, sd = models("yolov5s-v5", v5_buffers=True)
    assert "model.24.anchor_grid" in sd
    net, _ = define("yolov5s-v5", sd)
    assert net.check_keys(strict=True) == [] and "model.24.anchor_grid" in net.used
    bad = dict(sd)
    bad["model.24.anchor_grid"] = sd["model.24.anchor_grid"] * 2
    with pytest.raises(NetdefError, match="anchor_grid' .pixels. disagrees"):
        define("yolov5s-v5", bad)


def test_plugin_head_hands_raw_features_to_the_plugin(models, monkeypatch):
    import types

    _, sd = models("yolov5s")
    calls = []

    def add_yolo_decode_nms(net, feats, anchors_px, strides, nc, prefix, conf_thres, iou_thres, max_det):
        calls.append(dict(shapes=[tuple(f.shape) for f in feats], anchors_px=anchors_px, strides=strides, nc=nc,
                          prefix=prefix, conf=conf_thres, iou=iou_thres, max_det=max_det))
        return {"num_dets": feats[2], "boxes": feats[0]}

    monkeypatch.setitem(sys.modules, "netdef.plugins.yolo",
                        types.SimpleNamespace(add_yolo_decode_nms=add_yolo_decode_nms))
    net, outputs = define("yolov5s", sd, head="plugin", conf_thres="0.4", max_det="50")
    assert outputs == ["num_dets", "boxes"]
    (c,) = calls
    assert c["shapes"] == [(-1, 255, 80, 80), (-1, 255, 40, 40), (-1, 255, 20, 20)]
    assert c["strides"] == [8, 16, 32] and c["nc"] == 80 and c["prefix"] == "model.24"
    assert (c["conf"], c["iou"], c["max_det"]) == (0.4, 0.45, 50)
    assert c["anchors_px"].dtype == np.float32 and c["anchors_px"].shape == (3, 3, 2)
    assert c["anchors_px"][2].tolist() == [[116, 90], [156, 198], [373, 326]]
    assert net.check_keys(strict=True) == []


def test_bad_head_option_and_odd_focus_input(models):
    _, sd = models("yolov5s")
    with pytest.raises(NetdefError, match="head='nms'"):
        define("yolov5s", sd, head="nms")
    _, sd5 = models("yolov5n-v5")  # a size off the stride: the option's error, with a size that fits
    with pytest.raises(NetdefError, match=r"^--input-shape 481x640: yolov5n-v5's input height and width must be "
                                          r"multiples of its stride 32 \(481x640 not\), e\.g\. 480x640$"):
        define("yolov5n-v5", sd5, input_hw=(481, 640))
    from netdef.blocks.yolo import focus
    from netdef.network import Network

    net = Network({})  # Focus alone (in a network without a YOLO head's stride)
    with pytest.raises(NetdefError, match=r"^m\.0: Focus needs an even input height and width, got 481x640$"):
        focus(net, net.input("x", (1, 3, 481, 640)), "m.0", 16)


# ---------------------------------------------------------------- export from an Ultralytics checkpoint

def test_export_ultralytics_checkpoint(models, tmp_path, monkeypatch):
    import copy

    import torch

    from netdef.cli import main
    from netdef.export import load_checkpoint

    model, sd = models("yolov5s")
    ckpt = tmp_path / "yolov5s.pt"
    torch.save({"epoch": -1, "model": copy.deepcopy(model).half(), "ema": None}, ckpt)  # as Ultralytics saves
    assert main(["export", str(ckpt), "-o", str(tmp_path / "y.wts")]) == 0
    got = read_wts(tmp_path / "y.wts")
    assert set(got) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k], v.half().float().numpy().reshape(-1), err_msg=k)
    net, _ = define("yolov5s", {k: torch.from_numpy(v) for k, v in got.items()})
    assert net.check_keys(strict=True) == []

    for mod in [m for m in sys.modules if m == "yolov5" or m.startswith("yolov5.")]:
        monkeypatch.setitem(sys.modules, mod, None)  # the YOLOv5 code not importable
    with pytest.raises(NetdefError, match="not importable"):
        load_checkpoint(ckpt)


def test_export_a_checkpoint_of_the_yolov5_repository(models, tmp_path, monkeypatch, capsys):
    """A checkpoint the yolov5 repository's train.py saved pickles `models.yolo.DetectionModel`, `models.common.C3`,
    ... (the repository's top-level packages): export takes those classes from the installed yolov5 package, with
    no clone on sys.path and none of its other dependencies (pandas, seaborn, ...)."""
    import copy

    import torch

    from netdef.cli import main

    model, sd = models("yolov5s")
    classes = {type(m) for m in model.modules() if type(m).__module__.startswith("yolov5.")}
    aliases = {m[len("yolov5."):]: sys.modules[m] for m in list(sys.modules) if m.startswith(("yolov5.models",
                                                                                               "yolov5.utils"))}
    for name, module in aliases.items():  # saved as the repository's own code names its classes
        monkeypatch.setitem(sys.modules, name, module)
    for cls in classes:
        monkeypatch.setattr(cls, "__module__", cls.__module__[len("yolov5."):])
    ckpt = tmp_path / "yolov5s.pt"
    torch.save({"epoch": -1, "model": copy.deepcopy(model).half(), "ema": None}, ckpt)
    monkeypatch.undo()
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "utils")]:
        monkeypatch.delitem(sys.modules, name)  # no clone of the repository importable (whatever ran before)
    assert b"models.yolo" in ckpt.read_bytes()
    assert main(["export", str(ckpt), "-o", str(tmp_path / "y.wts")]) == 0, capsys.readouterr().err
    assert "pickles YOLOv5's classes: loaded them from the installed yolov5 package" in capsys.readouterr().err
    got = read_wts(tmp_path / "y.wts")
    assert set(got) == set(sd)
    np.testing.assert_array_equal(got["model.0.conv.weight"], sd["model.0.conv.weight"].half().float().numpy().ravel())


def test_export_a_checkpoint_the_yolov5_package_saved(models, tmp_path):
    """A checkpoint trained with the pip `yolov5` package pickles `yolov5.models.yolo.DetectionModel`; loading it in
    a fresh process imports the package's model code, which imports pandas, seaborn, ...: export loads it with
    stand-ins for whichever of those is not installed."""
    import copy
    import importlib.util
    import subprocess

    import torch

    model, sd = models("yolov5s")
    assert type(model).__module__.startswith("yolov5.")
    ckpt = tmp_path / "best.pt"
    torch.save({"epoch": -1, "model": copy.deepcopy(model).half(), "ema": None}, ckpt)
    r = subprocess.run([sys.executable, "-m", "netdef.cli", "export", str(ckpt), "-o", str(tmp_path / "b.wts")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    if importlib.util.find_spec("pandas") is None:  # the case this covers: a dependency the model does not use
        assert "pickles YOLOv5's classes: loaded them from the installed yolov5 package" in r.stderr, r.stderr
    assert set(read_wts(tmp_path / "b.wts")) == set(sd)


def test_a_models_package_of_another_project_is_not_taken_for_yolov5s(tmp_path, monkeypatch, capsys):
    """A researcher's own `models.resnet.MyNet` checkpoint, its code not importable: one error saying it is not a
    yolov5 repository checkpoint, not a traceback from the yolov5 package."""
    import types

    import torch

    from netdef.cli import main

    package, module = types.ModuleType("models"), types.ModuleType("models.resnet")
    package.__path__ = []

    class MyNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

    MyNet.__module__, MyNet.__qualname__ = "models.resnet", "MyNet"
    module.MyNet, package.resnet = MyNet, module
    with pytest.MonkeyPatch.context() as saving:
        saving.setitem(sys.modules, "models", package)
        saving.setitem(sys.modules, "models.resnet", module)
        torch.save(MyNet(), tmp_path / "mine.pt")
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "utils")]:
        monkeypatch.delitem(sys.modules, name)  # the project's code is not importable here
    assert main(["export", str(tmp_path / "mine.pt"), "-o", str(tmp_path / "m.wts")]) == 1
    err = capsys.readouterr().err
    assert "not a yolov5 repository checkpoint" in err and "Traceback" not in err, err
    assert not (tmp_path / "m.wts").exists()


# ---------------------------------------------------------------- GPU: engines vs Ultralytics

GPU_BOUND = {"fp32": 1e-3, "fp16": 1e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("name, hw", [("yolov5s", None), ("yolov5s", (480, 640)), ("yolov5m", None),
                                      ("yolov5s6", None), ("yolov5s-v5", None)])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_ultralytics(name, hw, precision, models, wts, tmp_path):
    """Raw (B, N, 5+nc) output vs Ultralytics' fp32 model(x)[0] (TF32 off). fp16 uses the tamed random model
    (see netdef.testing.yolov5_reference.reference_model) and also prints PyTorch's own fp16 error on it as the yardstick.
    So does the P6 model in fp32: on the default random model its 34 rows at 1280x1280 amplify the fp32
    rounding differences between cuDNN and TensorRT to 1.26e-3 (measured on the H100, cosine 1.00000000)."""
    import torch

    from netdef.runtime import Engine
    from netdef.tools.verify import cosine, max_rel_error, torch_reference

    tame = precision == "fp16" or name.endswith("6")
    model, _ = models(name, tame=tame)
    opts = BuildOptions(precision=precision, batch=(1, 2, 2), opt_level=0, tf32=False, input_hw=hw)
    res = build_engine(name, wts(name, tame), tmp_path / f"{name}.engine", opts)
    size = hw or ((1280, 1280) if name.endswith("6") else (640, 640))
    x = np.random.default_rng(0).random((2, 3, *size), dtype=np.float32)
    reference = torch_reference(model, x)
    yardstick = ""
    if precision == "fp16":
        import copy

        half = copy.deepcopy(model).cuda().half()
        with torch.no_grad():
            torch_half = half(torch.from_numpy(x).cuda().half())[0].float().cpu().numpy()
        yardstick = f" (PyTorch fp16: {max_rel_error(torch_half, reference):.2e})"
        del half
    model.cpu()
    torch.cuda.empty_cache()
    out = Engine(res.path).infer(x, as_numpy=True)["output"]
    assert out.shape == reference.shape
    err = max_rel_error(out, reference)
    box_err = max_rel_error(out[..., :4], reference[..., :4])
    score_err = float(np.abs(out[..., 4:] - reference[..., 4:]).max())
    print(f"RESULT {name} {size[0]}x{size[1]} {precision}{' tamed model' if tame else ''} (tf32 off) max-rel-err "
          f"{err:.2e}{yardstick} boxes {box_err:.2e} scores max-abs-err {score_err:.2e} cosine "
          f"{cosine(out, reference):.8f} build {res.meta['build_seconds']} s")
    assert err <= GPU_BOUND[precision]
    assert score_err <= 10 * GPU_BOUND[precision]


# ---------------------------------------------------------------- INT8 (explicit Q/DQ)

def test_int8_build_on_cpu(wts, tmp_path):
    """YOLOv5n with Q/DQ (a synthetic range for each of its quantized tensors) builds and serializes."""
    table = synthetic_table("yolov5n", wts("yolov5n"), tmp_path / "t.json")
    opts = BuildOptions(precision="int8", calibration=str(tmp_path / "t.json"), batch=(1, 1, 1), opt_level=0)
    res = build_engine("yolov5n", wts("yolov5n"), tmp_path / "y5n_int8.engine", opts, log=lambda m: None)
    assert res.built and res.meta["precision"] == "int8" and len(table.amax) == 50  # 60 convolutions; inputs shared by C3 cv1/cv2 etc.


def calibration_photos() -> np.ndarray:
    """scikit-image's four colour photos and their flips, letterboxed to 640x640: (16, 3, 640, 640) float32."""
    from netdef.tools.preprocess import letterbox

    variants = [np.ascontiguousarray(v) for im in photos() for v in (im, im[:, ::-1], im[::-1], im[::-1, ::-1])]
    return letterbox(variants, (640, 640), bgr=False)[0].numpy()


@pytest.mark.gpu
@pytest.mark.parametrize("tame", [False, True], ids=["default", "tamed"])
def test_yolov5s_int8_correlates_with_fp32(tame, wts, tmp_path):
    """Calibrated on 16 photo variants (entropy): INT8 raw outputs vs the FP32 engine's on the 4 photos."""
    from netdef.int8.calibrate import calibrate
    from netdef.runtime import Engine
    from netdef.tools.verify import cosine, max_rel_error

    x = calibration_photos()
    np.save(tmp_path / "calib.npy", x)
    table = calibrate("yolov5s", wts("yolov5s", tame), tmp_path / "calib.npy", tmp_path / "table.json", method="entropy",
                      batch=8)
    outs, seconds = {}, {}
    for precision in ("fp32", "int8"):
        opts = BuildOptions(precision=precision, batch=(1, 4, 4), opt_level=0, tf32=False,
                            calibration=str(tmp_path / "table.json") if precision == "int8" else None)
        res = build_engine("yolov5s", wts("yolov5s", tame), tmp_path / f"y5s_{precision}.engine", opts)
        seconds[precision] = res.meta["build_seconds"]
        outs[precision] = Engine(res.path).infer(x[::4], as_numpy=True)["output"]
    q, f = outs["int8"], outs["fp32"]
    cos, cos_scores = cosine(q, f), cosine(q[..., 4:], f[..., 4:])
    print(f"RESULT yolov5s {'tamed' if tame else 'default'} random model, int8 vs fp32 engine (4 photos): cosine {cos:.5f}, scores cosine "
          f"{cos_scores:.5f}, boxes max-rel-err {max_rel_error(q[..., :4], f[..., :4]):.2e}, "
          f"{len(table.amax)} calibrated tensors, int8 build {seconds['int8']} s")
    assert cos >= 0.95 and cos_scores >= 0.85
