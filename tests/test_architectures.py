"""Every architecture of netdef's own (netdef/architectures/*.yaml; a family file with `scales:` at its first,
smallest, scale) passes `netdef verify --cpu` against its PyTorch reference with random weights and random
BatchNorm statistics: the fp32 definition evaluated in float64, layer by layer, within verify's default
tolerance for it (1e-5), at a small input. Architectures another test verifies are named in COVERED with that
test; a YAML added without either fails test_every_architecture_is_verified.

The YOLO references need `pip install --no-deps yolov5==7.0.14 ultralytics==8.4.190` (scripts/install.sh, which
CI runs, installs both); without them those cases skip."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import netdef  # noqa: E402
from netdef.options import BuildOptions  # noqa: E402
from netdef.spec import _scaled_names, _scales_of, load_spec, resolve_arch  # noqa: E402
from netdef.testing import ultralytics_reference, yolov5_reference  # noqa: E402
from netdef.verify import default_tolerance, verify  # noqa: E402

ARCHITECTURES = Path(netdef.__file__).resolve().parent / "architectures"
TESTS = Path(__file__).resolve().parent


def own_architectures() -> list[str]:
    """The name each YAML of netdef's is verified under: its stem, or a family file's first (smallest) scale."""
    names = []
    for path in sorted(ARCHITECTURES.glob("*.yaml")):
        scales = _scales_of(path)
        names.append(_scaled_names(path.stem, scales[:1])[0] if scales else path.stem)
    return names


_Y8 = "test_yolov8_numbers.py::test_matches_ultralytics_layer_by_layer"
_Y8_VARIANTS = "test_yolov8_numbers.py::test_ultralytics_yolov8_variants_match_layer_by_layer"
_ZOO = "test_zoo.py::test_verify_cpu_matches_pytorch"
# verified (verify --cpu, random weights and BatchNorm statistics, default fp32 tolerance) by another test
COVERED = {
    "resnet18": "test_verify.py::test_resnet18_cpu_matches_every_layer",
    "yolov5n": "test_verify.py::test_yolov5n_cpu_matches_reference",
    "yolov8n-seg": "test_verify.py::test_every_output_of_a_segmentation_model_is_compared",
    **dict.fromkeys(["yolov8n", "yolo11n", "yolov8n-pose", "yolov8n-cls", "yolo11n-cls", "yolo26n", "yolo26n-seg",
                     "yolo26n-pose"], _Y8),
    **dict.fromkeys(["yolov8n-p2", "yolov8n6", "yolov8n-ghost"], _Y8_VARIANTS),
    **dict.fromkeys(["mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnext50_32x4d", "wide_resnet50_2",
                     "vit_b_16", "unet"], _ZOO),
}
TESTED_AS = {"yolov8n6": "yolov8n-p6"}  # the name the covering test uses, where another (of the same YAML)

# verified here: name -> (reference, input H x W; None: the YAML's own)
VERIFIED = {
    "resnet34": ("torchvision", (64, 64)),
    "resnet50": ("torchvision", (64, 64)),
    "resnet101": ("torchvision", (64, 64)),
    "resnet152": ("torchvision", (64, 64)),
    "lenet": ("lenet", None),  # 16x16
    "yolov5n6": ("yolov5", (64, 64)),  # a multiple of 64 (P6)
    "yolov5n-v5": ("yolov5", (64, 64)),
    "yolov5n-seg": ("yolov5-task", (64, 64)),
    "yolov5n-cls": ("yolov5-task", (64, 64)),
    "yolo11n-seg": ("ultralytics", (64, 64)),
    "yolo11n-pose": ("ultralytics", (64, 64)),
}
KEPT = {"resnet50"}  # the session's cached .wts (conftest.torchvision_wts), which other tests use too


def test_every_architecture_is_verified():
    """Each YAML of netdef's is verified here or by the test COVERED names (which exists and names it)."""
    names = own_architectures()
    assert len(names) == len(list(ARCHITECTURES.glob("*.yaml"))) >= 32
    unverified = sorted(set(names) - set(VERIFIED) - set(COVERED))
    assert not unverified, (f"architectures/ YAMLs without a `verify --cpu` test: {unverified}: add them to "
                            f"VERIFIED (or to COVERED with the test that verifies them)")
    assert not set(VERIFIED) & set(COVERED)
    stale = sorted((set(VERIFIED) | set(COVERED)) - set(names))
    assert not stale, f"no architectures/ YAML for {stale}"
    for name, where in COVERED.items():
        file, test = where.split("::")
        text = (TESTS / file).read_text(encoding="utf-8")
        assert re.search(rf"^def {test}\(", text, re.M), f"{where} (covering {name}) does not exist"
        tested = TESTED_AS.get(name, name)
        assert f'"{tested}"' in text, f"{where} does not name {tested}"
        assert resolve_arch(tested) == resolve_arch(name)


def _reference(name: str, kind: str, torchvision_wts, yolov5_models, yolov5_wts, tmp_path):
    """(model, weights) with random weights and random BatchNorm statistics, made by the helpers the other
    verify tests use."""
    if kind == "torchvision":  # conftest: torchvision's init, random BatchNorm; large ones written to tmp_path
        return torchvision_wts(name, folder=None if name in KEPT else tmp_path)
    if kind == "lenet":
        from netdef.export import load_source, randomize_batchnorm

        torch.manual_seed(0)
        model = load_source("netdef.examples.digits:LeNet")
        randomize_batchnorm(model, seed=1)
        return model, {k: v.detach().clone() for k, v in model.state_dict().items()}
    if kind.startswith("yolov5") and not yolov5_reference.yolov5_available():
        pytest.skip("needs the reference: pip install --no-deps yolov5==7.0.14")
    if kind == "yolov5":  # conftest: shared with test_yolov5.py's builds
        return yolov5_models(name)[0], yolov5_wts(name)
    if kind == "yolov5-task":
        from test_yolov5_tasks import reference

        return reference(name)
    if not ultralytics_reference.ultralytics_available():
        pytest.skip("needs the reference: pip install --no-deps ultralytics==8.4.190")
    return ultralytics_reference.reference_model(name, tame=True)  # tamed as test_yolov8_numbers.py's


@pytest.mark.parametrize("name", sorted(VERIFIED))
def test_verify_cpu_matches_reference(name, torchvision_wts, yolov5_models, yolov5_wts, tmp_path):
    """PASS: every matched layer and every output within 1e-5 of the PyTorch model in float64."""
    kind, hw = VERIFIED[name]
    model, weights = _reference(name, kind, torchvision_wts, yolov5_models, yolov5_wts, tmp_path)
    report = verify(name, weights, model, cpu=True, opts=BuildOptions(input_hw=hw), log=lambda m: None)
    assert report.tol == default_tolerance("fp32", True) == 1e-5
    compared = [r for r in report.rows if r.error is not None]
    worst = max(compared, key=lambda r: r.error)
    print(f"RESULT {name} verify --cpu fp32 {report.mode}: {len(compared)} layers, max rel err {worst.error:.2e} "
          f"({worst.layer})")
    assert report.ok, report.summary() + "\n" + report.table()
    assert worst.error <= 1e-5  # not only within PyTorch's own float32 error (which verify also accepts)
    outputs = [r for r in compared if r.module == "(model output)"]  # a YOLO head's output: a row per part
    assert len({r.layer.split("[")[0] for r in outputs}) == len(load_spec(name).output_names)
    assert all(r.status == "pass" for r in outputs)
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert len(compared) >= min(n_convs, 60), report.table()  # the layers are compared, not only the output
