"""`netdef profile`: per-layer summaries and comparisons (CPU), profiling a real engine (GPU)."""
from __future__ import annotations

import json

import pytest

from netdef.tools import profile
from netdef.errors import NetdefError

from helpers import run_cli


def fake_profile(engine: str, layers: list[tuple[str, float, str | None]]) -> dict:
    rows = [{"name": n, "ms": ms} | ({"type": t} if t else {}) for n, ms, t in layers]
    total = sum(ms for _, ms, _ in layers)
    for r in rows:
        r["share"] = r["ms"] / total
    return {"engine": engine, "arch": "resnet50", "precision": "fp16", "batch": 1, "runs": 10, "total_ms": total,
            "layers": rows, "detailed": any(t for _, _, t in layers)}


def test_summary_groups_layers_by_kind():
    p = fake_profile("a.engine", [("conv1 + conv1/relu", 0.020, "CaskConvolution"),
                                  ("layer1.0.conv1 + layer1.0.conv1/relu", 0.010, "CaskConvolution"),
                                  ("Reformatting CopyNode for Input Tensor 0 to fc", 0.004, None),
                                  ("avgpool", 0.006, None)])
    s = profile.summary(p)
    assert s == {"CaskConvolution": (2, pytest.approx(0.030)), "layer": (1, pytest.approx(0.006)),
                 "reformat": (1, pytest.approx(0.004))}
    assert list(s) == ["CaskConvolution", "layer", "reformat"]  # slowest kind first


@pytest.mark.parametrize("output, shown", [
    ({"Name": "y", "Format/Datatype": "Channel major FP16 format"}, "Channel major FP16 format"),  # 8.6-10.x
    ({"Name": "y", "Format": "Row major linear FP32 format (kLINEAR)", "DataType": "Float"},
     "Row major linear FP32 format (kLINEAR) Float"),                                            # 11.x split
    ({"Name": "y"}, None),
])
def test_output_formats_of_each_inspector_schema(output, shown):
    described = profile._describe({"LayerType": "CaskConvolution", "Outputs": [output, "not a dict"]})
    assert described.get("outputs") == ([shown] if shown else None)
    assert described["type"] == "CaskConvolution"


def test_format_profile_lists_slowest_first_and_the_rest():
    p = fake_profile("a.engine", [(f"l{i}", 0.001 * (i + 1), None) for i in range(5)])
    text = profile.format_profile(p, top=2)
    lines = text.splitlines()
    assert "5 engine layers, 0.015 ms in layers" in lines[0]
    assert lines[2].endswith("l4") and lines[3].endswith("l3")
    assert "(3 more layers)" in lines[4] and lines[4].split()[0] == "0.0060"


def test_comparison_shows_differences_and_ratio():
    a = fake_profile("netdef.engine", [("conv", 0.030, "CaskConvolution"), ("fc", 0.010, "MatrixMultiply"),
                                       ("fc/add_bias", 0.005, "ElementWise")])
    b = fake_profile("onnx.engine", [("conv", 0.030, "CaskConvolution"), ("Gemm", 0.009, "CaskConvolution")])
    text = profile.format_comparison(a, b)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:]}
    assert rows["CaskConvolution"][1:] == ["1", "0.0300", "2", "0.0390", "-0.0090"]
    assert rows["ElementWise"][1:] == ["1", "0.0050", "0", "0.0000", "+0.0050"]
    assert rows["total"][1:6] == ["3", "0.0450", "2", "0.0390", "+0.0060"] and "(A/B 1.154)" in text


@pytest.mark.parametrize("name, key", [
    ("layer3.1.conv2 + layer3.1.conv2/relu", "layer3.1.conv2"),                      # netdef: weight-key prefix
    ("model.2.cv1.conv || model.2.cv2.conv", "model.2.cv1.conv"),
    ("PWN(PWN(model.0.conv/silu/gate), model.0.conv/silu)", "model.0.conv"),
    ("layer1.0.conv1#2", "layer1.0.conv1"),
    ("/m/layer3/layer3.1/conv2/Conv + /m/layer3/layer3.1/relu_1/Relu", "m.layer3.1.conv2"),  # ONNX scopes
    ("/m/model.2/m/m.0/cv2/conv/Conv", "m.model.2.m.0.cv2.conv"),
    ("PWN(PWN(/m/model.0/act/Sigmoid), /m/model.0/act/Mul)", "m.model.0.act"),
    ("/m/fc/Gemm", "m.fc"),
    ("/m/model.24/Constant_6_output_0 + (Unnamed Layer* 225) [Shuffle]", "m.model.24"),
    ("Reformatting CopyNode for Input Tensor 0 to model.0.conv", None),                 # TensorRT's copies
    ("(Unnamed Layer* 106) [ElementWise]_output copy", None),
    ("model.9/maxpool1 copy", None),
    ("model.24/level0/reshape_copy_output", None),
    ("(Unnamed Layer* 225) [Shuffle]", None),
])
def test_module_key_of_netdef_and_onnx_layer_names(name, key):
    assert profile.module_key(name) == key


def test_layers_are_matched_by_module():
    a = fake_profile("netdef.engine", [
        ("Reformatting CopyNode for Input Tensor 0 to conv1", 0.010, "Reformat"),
        ("conv1 + conv1/relu", 0.020, "CaskConvolution"),
        ("layer1.0.conv3 + layer1.0/add + layer1.0/relu", 0.030, "CaskConvolution"),
        ("layer2.0.conv1 + layer2.0.conv1/relu", 0.010, "CaskConvolution"),
        ("model.0.conv", 0.040, "CaskConvolution"),
        ("PWN(PWN(model.0.conv/silu/gate), model.0.conv/silu)", 0.005, "PointWiseV2"),
        ("fc", 0.010, "CaskConvolution"), ("fc/flatten", 0.0, "NoOp"),
        ("head/level0/decode", 0.004, "PointWiseV2"), ("head/level1/decode", 0.004, "PointWiseV2")])
    b = fake_profile("onnx.engine", [
        ("Reformatting CopyNode for Input Tensor 0 to /m/conv1/Conv + /m/relu/Relu", 0.010, "Reformat"),
        ("/m/conv1/Conv + /m/relu/Relu", 0.020, "CaskFlattenConvolution"),
        ("/m/layer1/layer1.0/conv3/Conv + /m/layer1/layer1.0/Add", 0.024, "CaskGemmConvolution"),
        ("/m/layer2/layer2.0/conv1/Conv + /m/layer2/layer2.0/relu/Relu", 0.012, "CaskConvolution"),
        ("/m/model.0/conv/Conv", 0.030, "CaskConvolution"),
        ("PWN(PWN(/m/model.0/act/Sigmoid), /m/model.0/act/Mul)", 0.006, "PointWiseV2"),
        ("/m/fc/Gemm", 0.017, "CaskGemmConvolution"),
        ("PWN(/m/head/Sigmoid)", 0.002, "PointWiseV2"), ("PWN(/m/head/Mul)", 0.002, "PointWiseV2"),
        ("/m/head/Slice", 0.002, "Slice")])
    pairs = [(x["name"], y["name"]) for x, y in profile.match_layers(a, b)]
    # exact modules once the exporter's wrapper `m` is dropped (conv1 is not layer2.0.conv1), the same kind
    # first, then a module's only layer left whatever its kind, then activations by their parent module;
    # the head, split into other operations, and the reformat copies stay unmatched
    assert pairs == [("conv1 + conv1/relu", "/m/conv1/Conv + /m/relu/Relu"),
                     ("layer1.0.conv3 + layer1.0/add + layer1.0/relu",
                      "/m/layer1/layer1.0/conv3/Conv + /m/layer1/layer1.0/Add"),
                     ("layer2.0.conv1 + layer2.0.conv1/relu",
                      "/m/layer2/layer2.0/conv1/Conv + /m/layer2/layer2.0/relu/Relu"),
                     ("model.0.conv", "/m/model.0/conv/Conv"),
                     ("PWN(PWN(model.0.conv/silu/gate), model.0.conv/silu)",
                      "PWN(PWN(/m/model.0/act/Sigmoid), /m/model.0/act/Mul)"),
                     ("fc", "/m/fc/Gemm")]
    text = profile.format_layer_differences(a, b, top=2).splitlines()
    assert "6 of 10 A layers, 6 of 10 B layers" in text[0]
    assert text[2].split()[:4] == ["0.0400", "0.0300", "+0.0100", "model.0.conv:"]  # largest difference first
    assert text[3].split()[:4] == ["0.0100", "0.0170", "-0.0070", "fc:"] and len(text) == 5
    assert text[4] == ("matched layers: A 0.1150 ms, B 0.1090 ms (+0.0060); unmatched: A 0.0180 ms in 4 layers, "
                       "B 0.0160 ms in 4 layers")
    assert profile.format_layer_differences(a, b, top=3).splitlines()[4].endswith("(fused differently)")


def test_layer_differences_show_both_kernels_where_they_differ():
    a = fake_profile("a.engine", [("conv", 0.03, "CaskConvolution"), ("fc", 0.01, "CaskConvolution")])
    b = fake_profile("b.engine", [("/m/conv/Conv", 0.02, "CaskConvolution"), ("/m/fc/Gemm", 0.01, "CaskConvolution")])
    a["layers"][0]["tactic"], b["layers"][0]["tactic"] = "tile128x256", "tile128x128"
    a["layers"][1]["tactic"] = b["layers"][1]["tactic"] = "same"
    text = profile.format_layer_differences(a, b).splitlines()
    assert text[3].split() == ["A:", "CaskConvolution", "tile128x256"]
    assert text[4].split() == ["B:", "CaskConvolution", "tile128x128"]
    assert text[5].split()[3] == "fc:" and "same" not in "\n".join(text)


def test_profile_checks_its_arguments_before_touching_a_gpu(tmp_path):
    with pytest.raises(NetdefError, match="runs 0 must be >= 1"):
        profile.profile_engine(tmp_path / "x.engine", batch=1, runs=0)
    r = run_cli("profile", str(tmp_path / "missing.engine"))
    assert r.returncode != 0 and f"engine not found: {tmp_path / 'missing.engine'}" in r.stderr


def test_build_has_a_detailed_option():
    from netdef.cli import make_parser
    from netdef.cli.build import build_options

    a = make_parser().parse_args(["build", "resnet18", "-w", "r.wts", "-o", "r.engine", "--detailed"])
    assert build_options(a).detailed is True
    a = make_parser().parse_args(["build", "resnet18", "-w", "r.wts", "-o", "r.engine"])
    assert build_options(a).detailed is False


@pytest.mark.gpu
def test_profile_engine_on_gpu(torchvision_wts, tmp_path):
    """Per-layer times of a real engine: names point back to PyTorch modules, types come from the inspector."""
    from netdef.build import BuildOptions, build_engine

    model, wts = torchvision_wts("resnet18")
    engine = tmp_path / "r18.engine"
    build_engine("resnet18", wts, engine, BuildOptions(precision="fp16", batch=(1, 2, 2), opt_level=0, detailed=True),
                 log=print)
    p = profile.profile_engine(engine, batch=2, runs=5, warmup=2)
    print(profile.format_profile(p, top=10))
    assert p["detailed"] and p["batch"] == 2 and p["runs"] == 5 and p["total_ms"] > 0
    assert all(r["ms"] >= 0 and r.get("type") for r in p["layers"])
    assert sum(r["share"] for r in p["layers"]) == pytest.approx(1.0)
    modules = {n for n, _ in model.named_modules() if n}
    named = [r["name"] for r in p["layers"] if any(part.split("/")[0] in modules for part in r["name"].split(" + "))]
    assert len(named) >= 20  # the 20 convolutions and the fc, fused or not, keep their module names
    out = tmp_path / "p.json"
    r = run_cli("profile", str(engine), "--compare", str(engine), "--batch", "1", "2", "--runs", "3",
                "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(A/B ") == 2
    assert r.stdout.count("layer by layer (matched by module name:") == 2  # an engine against itself
    doc = json.loads(out.read_text())
    assert [q["batch"] for q in doc["profiles"]] == [1, 1, 2, 2] and doc["environment"]["tensorrt"]


def test_detailed_build_with_the_installed_builder(torchvision_wts, tmp_path):
    """--detailed only changes what the engine keeps: it builds with every TensorRT flavour (RTX in CI)."""
    from netdef.build import BuildOptions, build_engine

    _, wts = torchvision_wts("resnet18")
    res = build_engine("resnet18", wts, tmp_path / "d.engine", BuildOptions(opt_level=0, detailed=True),
                       log=lambda m: None)
    assert res.built and res.meta["options"]["detailed"] is True
