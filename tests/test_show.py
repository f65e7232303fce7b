"""`netdef show`: the architecture row by row (Ultralytics' parse_model columns), each row's keys and shapes, the
strict key report. The network is defined with TensorRT-RTX on the CPU (no engine build)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from netdef.cli import main
from netdef.errors import WeightKeyError
from netdef.options import BuildOptions
from netdef.tools.show import show
from netdef.wts import read_wts, write_wts

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    """(model, .wts path) of netdef.examples.digits.LeNet with random weights."""
    from netdef.examples.digits import LeNet
    from netdef.export import export_wts

    torch.manual_seed(0)
    model = LeNet().eval()
    path = tmp_path_factory.mktemp("show") / "lenet.wts"
    export_wts(model, path)
    return model, path


def test_rows_keys_and_parameters_match_the_pytorch_model(lenet):
    model, wts = lenet
    report = show("lenet", wts)
    assert report.ok and [v.row.block.name for v in report.rows][:2] == ["ConvBnAct", "MaxPool"]
    assert sum(v.params for v in report.rows) == sum(p.numel() for p in model.parameters())
    sd = model.state_dict()
    for view in report.rows:  # every key a row read has the PyTorch tensor's shape
        for key, shape in view.keys.items():
            assert tuple(sd[key].shape) == shape, key
    conv1 = report.rows[0]
    assert list(conv1.keys) == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"]
    assert conv1.params == 16 * 9 + 32 and conv1.outputs == [(-1, 16, 16, 16)]
    assert report.rows[-1].outputs == [(-1, 10)]
    assert str(report) == report.format()  # print(show(...)) in Python is the listing, not the dataclass's fields
    in_memory = show("lenet", model.state_dict())  # a state_dict is named as such, not printed whole
    assert in_memory.ok and in_memory.format().splitlines()[0].endswith(", weights in-memory weights")
    assert "tensor(" not in in_memory.format()
    assert in_memory.key_report() == ("keys: every key the architecture asks for is in the in-memory weights, and "
                                      "every key there is used")


def test_parameters_leave_out_buffers_and_the_summary_says_so(lenet, tmp_path):
    """Weights written from the whole state_dict (tensorrtx's gen_wts.py writes BatchNorm's int64
    num_batches_tracked too): the parameters are PyTorch's parameters() alone, and the summary line says what each
    total counts."""
    model, _ = lenet
    sd = model.state_dict()
    assert any(not v.is_floating_point() for v in sd.values())  # the counters are there
    wts = tmp_path / "full.wts"
    write_wts(wts, {k: v.numpy() for k, v in sd.items()})
    report = show("lenet", wts)
    params = sum(p.numel() for p in model.parameters())
    floats = [v for v in sd.values() if v.is_floating_point()]
    values = sum(v.numel() for v in floats)
    assert report.ok and sum(v.params for v in report.rows) == params and sum(v.values for v in report.rows) == values
    assert f"lenet: {len(report.rows)} rows, {params:,} parameters (weights and biases, as PyTorch's parameters() " \
        f"counts: keys named as known buffers left out), {len(floats)} weight keys of {values:,} " \
        "values (with the buffers)" in report.format()


def test_the_key_report_ends_with_the_hint_a_build_gives(lenet, tmp_path):
    """Weights whose BatchNorm bn1 is named norm1: `show` lists the missing and unused keys and then says what a
    build's error says of them (a misspelt module prefix, with the row), not the lists alone; a build's error
    text is unchanged."""
    from netdef.build import define_network

    wts = tmp_path / "renamed.wts"
    write_wts(wts, {k.replace("bn1.", "norm1."): v for k, v in read_wts(lenet[1]).items()})
    report = show("lenet", wts)
    hint = "\nThe file has no module bn1 but an unused module norm1 with exactly its 4 key(s): a misspelt module prefix"
    assert not report.ok and hint in report.key_report() and report.format().endswith(report.key_report())
    with pytest.raises(WeightKeyError) as e:
        define_network("lenet", wts)
    assert str(e.value).endswith(e.value.hint) and hint in e.value.hint and str(e.value).count(hint) == 1


def test_a_linear_on_pooled_features_reads_torchs_weight_shape():
    """mobilenet_v2's classifier is a Linear after GlobalAvgPool(keep_dims) (a 1x1 convolution in the engine): the
    key it reads has nn.Linear's shape (1000, 1280), not the convolution's (1000, 1280, 1, 1)."""
    keys = show("mobilenet_v2").rows[-1].keys
    assert keys == {"classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,)}


def test_known_buffer_keys_are_not_counted_as_parameters():
    """A .wts does not say which keys are buffers: those named like one (BatchNorm statistics, anchors, Swin's
    relative_position_index) are left out of the parameter count and kept in the values."""
    from netdef.tools.show import RowView

    view = RowView(None, {"m.0.weight": (4, 3), "m.0.bias": (4,), "m.1.running_var": (4,),
                          "m.2.attn.relative_position_index": (49 * 49,)}, [])
    assert view.params == 16 and view.values == 16 + 4 + 49 * 49


def test_yolov5s_without_weights_is_ultralytics_listing():
    report = show("yolov5s")
    # Ultralytics prints "7235389 parameters" for yolov5s.yaml (nc=80)
    assert sum(v.params for v in report.rows) == 7235389
    by_index = {v.row.index: v for v in report.rows}
    assert (by_index[6].row.n, by_index[6].row.args) == (3, [256, 3])  # C3 [512] x 9: 9 * 0.33 -> 3, 512 * 0.5 -> 256
    assert by_index[24].outputs == [(-1, 25200, 85)] and by_index[12].row.frm == [-1, 6]
    text = report.format()
    header = text.splitlines()[2].split()
    assert header == ["from", "n", "params", "block", "prefix", "output", "arguments"]
    assert "24  [17, 20, 23]  1   229245  Detect" in text and "yolov5s: 25 rows, 7,235,389 parameters" in text
    assert "(B, 3, 640, 640)" in text.splitlines()[0] and "model.24.anchors" not in text  # keys only with -w


def test_input_shape_and_set_reach_the_definition():
    small = show("yolov5s", opts=BuildOptions(input_hw=(320, 256)))
    assert small.rows[-1].outputs == [(-1, 3 * (40 * 32 + 20 * 16 + 10 * 8), 85)]
    assert small.input_shape == (-1, 3, 320, 256)


def test_a_dynamic_input_size_shows_its_range():
    text = show("resnet18", opts=BuildOptions(input_range=((160, 160), (224, 224), (320, 320)))).format()
    assert text.splitlines()[0].startswith("resnet18 (architectures/resnet18.yaml): input 'input' (B, 3, -1, -1) at "
                                           "HxW 160x160:224x224:320x320 (MIN:OPT:MAX)")


def test_an_architecture_without_a_file_is_named_as_its_errors_name_it():
    """parse_spec gives a Spec with no path: the first line names it <name>, as its errors do, not "(None)"."""
    from netdef.spec import parse_spec

    spec = parse_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "output": "y",
                       "layers": [[-1, 1, "GlobalAvgPool", {}, "pool"]]}, "mynet")
    assert show(spec).format().splitlines()[0].startswith("mynet (<mynet>): input 'x' (B, 3, 8, 8)")


def test_key_report_missing_and_unused(lenet, tmp_path, capsys):
    _, wts = lenet
    tensors = dict(read_wts(wts))
    del tensors["fc2.bias"]
    tensors["extra.weight"] = np.zeros(3, np.float32)
    bad = tmp_path / "bad.wts"
    write_wts(bad, tensors)
    assert main(["show", "lenet", "-w", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "fc2.bias [10]  MISSING" in out
    assert "missing: 1 key(s) the architecture needs are not in" in out and "  fc2.bias   (asked for by " in out
    assert "unused: 1 key(s) in" in out and "\n  extra.weight\nThe unused keys are whole modules" in out


def test_cli_lists_keys_and_exits_0_when_the_weights_fit(lenet, capsys):
    _, wts = lenet
    assert main(["show", "lenet", "-w", str(wts)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["conv1.weight", "[16,", "1,", "3,", "3]"] for line in lines), lines
    assert lines[-1].startswith("keys: every key the architecture asks for is in")
    assert main(["show", "lenet", "--keys"]) == 0  # keys as expected, without weights
    out = capsys.readouterr().out
    assert "fc1.weight [64, 512]" in out and "keys: every key" not in out


def test_a_weight_of_the_wrong_size_is_an_error_not_a_report(lenet, tmp_path):
    _, wts = lenet
    tensors = dict(read_wts(wts))
    tensors["fc1.weight"] = np.zeros(7, np.float32)
    write_wts(tmp_path / "wrong.wts", tensors)
    with pytest.raises(WeightKeyError, match="'fc1.weight' has 7 values"):
        show("lenet", tmp_path / "wrong.wts")


def test_one_line_errors(capsys):
    assert main(["show", "no_such_arch"]) == 1
    assert capsys.readouterr().err.startswith("netdef show: error: no architecture 'no_such_arch'")
    assert main(["show", "lenet", "--set", "head=plugin"]) == 1
    assert capsys.readouterr().err.startswith("netdef show: error: --set head: no block of lenet declares it")


def test_show_lists_the_keys_a_head_leaves_out_knowingly(tmp_path):
    """YOLO26's end-to-end head does not build the one-to-many branch: `show` lists those keys with the reason
    instead of calling them unused."""
    ref = pytest.importorskip("netdef.testing.ultralytics_reference")
    if not ref.ultralytics_available():
        pytest.skip("needs the reference: pip install --no-deps ultralytics==8.4.190")
    _, sd = ref.reference_model("yolo26n")
    write_wts(tmp_path / "y26.wts", sd)
    report = show("yolo26n", tmp_path / "y26.wts")
    assert report.ok and report.skipped and all(k.startswith("model.23.cv") for k in report.skipped)
    text = report.key_report()
    n = len(report.skipped)
    assert text.startswith(f"skipped: {n} key(s)") and f"every key there but the {n} skipped above is used" in text


def test_a_classifier_takes_its_class_count_from_the_weights(tmp_path, capsys):
    """yolo11n-cls trained for 5 classes: the head is sized by the weights (`prefix.linear.weight` 5 x 1280)
    without a copied YAML; `--set nc=5` agrees, `--set nc=4` is refused naming the key."""
    from netdef.testing import ultralytics_reference as ref
    from netdef.wts import write_wts

    if not ref.ultralytics_available():
        pytest.skip("needs the ultralytics package (pip install --no-deps ultralytics==8.4.190)")
    write_wts(tmp_path / "cls5.wts", ref.reference_model("yolo11n-cls", nc=5)[1])
    for extra in ([], ["--set", "nc=5"]):
        assert main(["show", "yolo11n-cls", "-w", str(tmp_path / "cls5.wts"), *extra]) == 0
        out = capsys.readouterr().out
        assert "Classify  model.10  (B, 5)" in out and "every key there is used" in out
    assert main(["show", "yolo11n-cls", "-w", str(tmp_path / "cls5.wts"), "--set", "nc=4"]) == 1
    assert ("--set nc=4, but the weights were trained with nc=5 ('model.10.linear.weight')"
            in capsys.readouterr().err)


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "yolo11n-seg"])
def test_show_without_weights_counts_the_parameters_ultralytics_counts(name, capsys):
    """Without weights the class branch follows the backbone as in Ultralytics' parse_model (YOLO11's C3k2 rows:
    depth-wise; YOLOv8: plain), so the parameter count equals the model's."""
    from netdef.testing import ultralytics_reference as ref

    if not ref.ultralytics_available():
        pytest.skip("needs the ultralytics package (pip install --no-deps ultralytics==8.4.190)")
    model = ref.reference_model(name)[0]
    assert main(["show", name]) == 0
    assert f"{name}: " in (out := capsys.readouterr().out)
    assert f" {sum(p.numel() for p in model.parameters()):,} parameters" in out.splitlines()[-1], out[-300:]


def test_show_lists_its_own_rows_when_the_weights_fit_a_sibling(tmp_path):
    """yolo26n-seg weights shown as yolo26n: the key report says what is unused, and the rows are yolo26n's
    alone (the family members tried for the error's hint are built on the side, unobserved)."""
    from netdef.testing import ultralytics_reference as ref

    if not ref.ultralytics_available():
        pytest.skip("needs the reference: pip install --no-deps ultralytics==8.4.190")
    write_wts(tmp_path / "seg.wts", ref.reference_model("yolo26n-seg")[1])
    report = show("yolo26n", tmp_path / "seg.wts")
    assert not report.ok and len(report.rows) == len(report.spec.rows)
    assert any(k.startswith("model.23.proto.") for k in report.unused)


def test_show_says_what_the_head_takes_from_the_weights(tmp_path):
    """The YAML says nc 80; the weights of a 3-class model build a 3-class head, which the listing says, in the
    head's row too; with another head's weights (keys missing) the row keeps the YAML's value."""
    from netdef.testing import ultralytics_reference as ref

    if not ref.ultralytics_available():
        pytest.skip("needs the reference: pip install --no-deps ultralytics==8.4.190")
    write_wts(tmp_path / "nc3.wts", ref.reference_model("yolov8n", nc=3)[1])
    text = show("yolov8n", tmp_path / "nc3.wts").format()
    assert re.search(r"Detect +model\.22 +\(B, 7, 8400\) +\[3\]", text)
    assert "\nhead: task detect, nc 3, head decode\n" in text
    seg = show("yolov8n-seg", tmp_path / "nc3.wts").format()  # detect weights: the seg head's keys are missing
    assert "MISSING" in seg and "\nhead: " not in seg  # no class count read from another head's outputs
    assert re.search(r"Segment +model\.22 .*\[80, ", seg)


def test_an_argument_naming_a_top_level_key_shows_the_value_the_build_used():
    """Pose26's row reads `kpt_shape` (and nc) from the YAML's top-level keys: with --set kpt_shape=5,3 (or weights
    of another class count) the arguments column showed the YAML's [17, 3] while the row's output had 5 x 3
    keypoints; it shows what the head was built with, as its `head:` line does."""
    plain = show("yolo26n-pose")
    given = show("yolo26n-pose", opts=BuildOptions(params={"kpt_shape": (5, 3)}))
    row = given.rows[-1]
    assert row.row.named == {"nc": "nc", "kpt_shape": "kpt_shape", "reg_max": "reg_max", "end2end": "end2end"}
    assert "kpt_shape=[17, 3]" in plain.rows[-1].cells(plain.model)[-1]
    assert "kpt_shape=[5, 3]" in row.cells(given.model)[-1] and "kpt_shape=[5, 3]" in given.format()
    assert row.outputs[0][-1] == 4 + 1 + 5 * 3 + 1  # boxes, score, keypoints, class: the 5 x 3 the column shows


def test_a_failing_row_shows_the_rows_before_it(tmp_path, capsys):
    """A row that fails on its input's shape (a block of one's own returning its gate, 1x1, not x * gate): `show`
    printed nothing but the error, which named a later row; the rows built before it are listed first, so the row
    whose output went off is seen (its shape), then the error."""
    arch = tmp_path / "t.yaml"
    arch.write_text("input: {name: x, shape: [3, 16, 16]}\nlayers:\n  - [-1, 1, Conv2d, {c2: 4, k: 3, p: 1}, a]\n"
                    "  - [-1, 1, GlobalAvgPool, {}, pool]\n  - [-1, 1, Conv2d, {c2: 4, k: 3, p: 1}, b]\n")
    assert main(["show", str(arch)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert re.match(r"0 +-1 +1 +112 +Conv2d +a +\(B, 4, 16, 16\)", lines[3].strip()), out
    assert re.match(r"1 +-1 +1 +0 +GlobalAvgPool +pool +\(B, 4\)", lines[4].strip()), out
    assert lines[5] == "t: rows 0..1 of 3 built; row 2 failed (the error below)" and len(lines) == 6
    assert err.startswith(f"netdef show: error: {arch}:5: row 2 (Conv2d): pool has shape (-1, 4)")
    arch.write_text("input: {name: x, shape: [3, 16, 16]}\noutput: [y, z]\nlayers:\n"
                    "  - [-1, 1, Conv2d, {c2: 4, k: 3, p: 1}, a]\n")  # every row built: the error comes after them
    assert main(["show", str(arch)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "t: rows 0..0 of 1 built; the error below came after them"
    assert "'output' names 2" in err


def test_the_head_row_shows_the_anchors_of_the_weights(yolov5_models):
    """Anchors of the weights (autoanchor's) build the engine, but `show` listed the YAML's in the Detect row
    (beside the weights' class count): it shows those the network takes."""
    from netdef.testing import yolov5_reference as ref

    if not ref.yolov5_available():
        pytest.skip("needs the yolov5 package (pip install --no-deps yolov5==7.0.14)")
    _, sd = yolov5_models("yolov5n")
    sd = {k: v.numpy() for k, v in sd.items()}
    sd["model.24.anchors"] = sd["model.24.anchors"] * 1.5  # in strides: the pixels are 1.5x the YAML's
    text = str(show("yolov5n", sd, BuildOptions(input_hw=(64, 64))))
    assert re.search(r"Detect +model\.24 +\(B, 252, 85\) +\[80, \[\[15, 19\.5, 24, 45, 49\.5, 34\.5\], \[45, 91\.5, "
                     r"93, 67\.5, 88\.5, 178\.5\], \[174, 135, 234, 297, 559\.5, 489\]\]\]\n", text), text
    text = str(show("yolov5n", None, BuildOptions(input_hw=(64, 64))))  # without weights: the YAML's
    assert "[80, [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]]" in text
