"""Architecture YAML errors name the file and the row; the registry accepts new blocks."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from netdef.errors import NetdefError, SpecError
from netdef.network import Network
from netdef.registry import BLOCKS, block
from netdef.spec import build_network, load_spec, parse_spec
from netdef.wts import read_wts

GOOD = """name: tiny
input: {name: x, shape: [3, 16, 16]}
output: y
layers:
  - [-1, 1, ConvBnAct, {c2: 8, k: 3, bn: bn}, stem]
  - [-1, 1, GlobalAvgPool, {}, pool]
  - [-1, 1, Linear, {c2: 4}, fc]
"""


def write(tmp_path, text, name="arch.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("bad, line, needle", [
    (GOOD.replace("ConvBnAct", "ConvBnActt"), 5, "unknown block 'ConvBnActt': did you mean 'ConvBnAct'?; known"),
    (GOOD.replace("ConvBnAct", "convbnact"), 5, "unknown block 'convbnact': did you mean 'ConvBnAct'?; known"),
    (GOOD.replace("ConvBnAct", "C2F"), 5, "unknown block 'C2F': did you mean 'C2f'?; known"),  # not C2
    (GOOD.replace("ConvBnAct", "sppf"), 5, "unknown block 'sppf': did you mean 'SPPF'?; known"),
    (GOOD.replace("layers:", "lyers:"), 4, "'lyers': a list of rows under a key netdef does not read: give them as "
                                           "'layers'"),
    (GOOD.replace("layers:", "anchors:\n  - [10, 13, 16, 30, 33, 23]\nlyers:"), 6, "'lyers': a list of rows"),
    (GOOD.replace("{c2: 8, k: 3, bn: bn}", "{c2: 8, kk: 3}"), 5, "bad arguments for ConvBnAct"),
    (GOOD.replace("{c2: 4}", "{c_2: 4}"), 7, "bad arguments for Linear: got an unexpected keyword argument 'c_2': "
                                          "did you mean 'c2'?; Linear takes (c2"),  # not 'missing c2' alone
    (GOOD.replace("{c2: 8, k: 3, bn: bn}", "{c2: 8, kernel_size: 3}"), 5, "'kernel_size': did you mean 'k' (torch's "
                                                                          "kernel_size)?; ConvBnAct takes (c2"),
    (GOOD.replace("{c2: 8, k: 3, bn: bn}", "{c2: 8, strid: 3}"), 5, "'strid': did you mean 's' (torch's stride)?"),
    (GOOD.replace("{c2: 4}", "{in_features: 8, c2: 4}"), 7, "'in_features': a block takes its input channels from "
                                                             "its input; Linear takes (c2"),
    (GOOD.replace("[-1, 1, Linear", "[3, 1, Linear"), 7, "'from' index 3 does not refer to an earlier row"),
    (GOOD.replace("[-1, 1, Linear", "[-5, 1, Linear"), 7, "'from' index -5"),
    (GOOD.replace("[-1, 1, Linear", "[-1, 0, Linear"), 7, "'number' must be a positive integer"),
    (GOOD.replace("[-1, 1, Linear", "[-1, 99999999, Linear"), 7, "'number' 99999999 is more repeats than any network "
                                                                  "has (at most 1000): a typo?"),
    (GOOD.replace("[-1, 1, GlobalAvgPool, {}, pool]", "[-1, GlobalAvgPool]"), 6, "expected [from, number, block, args"),
    (GOOD.replace("shape: [3, 16, 16]", "shape: [3, -16, 16]"), 2, "'input'"),
    (GOOD.replace("shape: [3, 16, 16]", "shape: [3, true, 16]"), 2, "'input': expected {name: ..., shape: [C, H, W]}"),
    (GOOD.replace("shape: [3, 16, 16]", "shap: [3, 16, 16]"), 2, "'input': no 'shape' ('shap' is not one: netdef "
                                                                  "reads name and shape)"),
    (GOOD.replace("shape: [3, 16, 16]", "shape: [3, 16, 16], dtype: float16"), 2,
     "'input': unknown key(s) ['dtype']: netdef reads name and shape"),
    (GOOD.replace("output: y", "output: ''"), 3, "'output': expected an output name or a list of names, got ''"),
    (GOOD.replace("output: y", "output: y\ndepth_multiple: x"), 4, "'depth_multiple': expected a positive number, "
                                                                   "got 'x'"),
    (GOOD.replace("output: y", "output: y\nwidth_multiple: -0.5"), 4, "'width_multiple': expected a positive number"),
    (GOOD.replace("output: y", "output: y\nscales: {n: [-1, 0.25, 1024]}"), 4,
     "'scales': scale n: [-1, 0.25, 1024]: expected positive numbers [depth_multiple, width_multiple"),
    (GOOD.replace("  - [-1, 1, Linear", "  - [-1, 1, Linear: {"), 7, "not valid YAML"),
    (GOOD.replace("{c2: 4}", "{c2: 4, c2: 8}"), 7, "'c2' is given twice in one mapping (first on line 7): keep one"),
    (GOOD.replace("output: y", "output: y\nname: other"), 4, "'name' is given twice in one mapping (first on line 1)"),
    (GOOD.replace("shape: [3, 16, 16]", "shape: [3, 16, 99999999999999999999999]"), 2,
     "'input': shape [3, 16, 99999999999999999999999]: dimensions must be positive integers that fit int32"),
    (GOOD.replace("shape: [3, 16, 16]", "shape: [3, 16, 2147483648]"), 2, "that fit int32 (at most 2147483647)"),
    (GOOD.replace("output: y", "output: x"), 3, "'output': 'x' is the input's name: each input and output tensor "
                                                "needs a name of its own"),
    (GOOD.replace("output: y", "output: [y, z, y]"), 3, "'output': 'y' is the name of another output"),
    (GOOD.replace("output: y", "output: ' '"), 3, "'output': expected an output name or a list of names, got ' '"),
    (GOOD.replace("name: x,", "name: '',"), 2, "'input': 'name': expected the input tensor's name (a non-empty "
                                               "string), got ''"),
    (GOOD.replace("name: x,", "name: [x],"), 2, "'input': 'name': expected the input tensor's name"),
    (GOOD.replace("GlobalAvgPool, {}", "Add, {}"), 6, "row 1: Add takes a list of inputs, and 'from' -1 gives one "
                                                      "tensor: list the rows it joins, e.g. [-1, 4]"),
    (GOOD.replace("GlobalAvgPool, {}", "Concat, {}"), 6, "row 1: Concat takes a list of inputs"),
    (GOOD.replace("{c2: 4}", "{c2: -5}"), 7, "row 2: Linear's channel argument 'c2' must be a positive integer, "
                                             "got -5"),
    (GOOD.replace("{c2: 4}", "{c2: yes}"), 7, "row 2: Linear's channel argument 'c2' must be a positive integer, got "
                                              "True (YAML reads yes/no/on/off as booleans)"),
    (GOOD.replace("{c2: 8, k: 3, bn: bn}", "{c2: 0, k: 3, bn: bn}"), 5, "row 0: ConvBnAct's channel argument 'c2' "
                                                                        "must be a positive integer, got 0"),
    (GOOD.replace("output: y", "output: y\nnc: 2.5").replace("{c2: 4}", "[nc]"), 8,
     "row 2: Linear's channel argument 'c2' must be a positive integer, got nc = 2.5"),
])
def test_errors_name_file_and_line(tmp_path, bad, line, needle):
    p = write(tmp_path, bad)
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert f"{p}:{line}" in str(e.value) and needle in str(e.value)


def test_a_yaml_file_in_the_working_folder_named_without_its_suffix_is_pointed_to(tmp_path, monkeypatch):
    """`netdef show mynet` with ./mynet.yaml (not in ./architectures/): the error names the file and says to give
    its path, not only the list of netdef's architectures; mynet.yml for mynet.yaml names the file that exists."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, GOOD, "mynet.yaml")
    with pytest.raises(SpecError, match=r"^no architecture 'mynet' in architectures/ or netdef's own, but "
                                        r"mynet\.yaml is a file: give its path \(mynet\.yaml\), or move it to "
                                        r"architectures/"):
        load_spec("mynet")
    with pytest.raises(SpecError, match=r"^architecture file not found: mynet\.yml \(mynet\.yaml exists: give that "
                                        r"path\)$"):
        load_spec("mynet.yml")
    assert load_spec("mynet.yaml").name


def test_every_unknown_block_is_named_at_once(tmp_path):
    """An architecture of several blocks netdef lacks (a YAML ported from another repository): the first row's
    error names the others with their rows, so one --blocks module can be written for all of them."""
    text = GOOD.replace("GlobalAvgPool", "MyPool").replace("Linear", "MyHead") + \
        "  - [-1, 1, MyPool, {}, pool2]\n"
    with pytest.raises(SpecError, match=r":6: row 1: unknown block 'MyPool' \(also unknown: MyHead \(row 2\)\); "
                                        r"known blocks: "):
        load_spec(write(tmp_path, text))
    with pytest.raises(SpecError, match=r"row 1: unknown block 'MyPool'; known blocks"):  # one: no 'also'
        load_spec(write(tmp_path, GOOD.replace("GlobalAvgPool", "MyPool")))


def test_a_later_row_takes_the_network_input_by_name(tmp_path):
    """`from: input` (alone or in a list) is the network input from any row: no offset to recount when rows move."""
    text = """name: skip
input: {name: x, shape: [3, 8, 8]}
output: y
layers:
  - [-1, 1, Conv2d, {c2: 5, k: 3, p: 1}, a]
  - [-1, 1, Conv2d, {c2: 5, k: 3, p: 1}, b]
  - [[-1, input], 1, Concat, {}, cat]
  - [input, 1, Conv2d, {c2: 8, k: 1}, side]
  - [[-2, -1], 1, Add, {}, y]
"""
    spec = load_spec(write(tmp_path, text))
    assert [r.sources for r in spec.rows][2:] == [[1, -1], [-1], [2, 3]]
    rng = np.random.default_rng(0)
    weights = {"a.weight": rng.random((5, 3, 3, 3)), "a.bias": rng.random(5), "b.weight": rng.random((5, 5, 3, 3)),
               "b.bias": rng.random(5), "side.weight": rng.random((8, 3, 1, 1)), "side.bias": rng.random(8)}
    net = Network({k: v.astype(np.float32) for k, v in weights.items()})
    build_network(spec, net)
    assert tuple(net.definition.get_output(0).shape) == (-1, 8, 8, 8) and net.check_keys() == []


def test_a_self_referencing_alias_is_one_error(tmp_path):
    p = write(tmp_path, GOOD + "extra: &x [*x]\n")
    with pytest.raises(SpecError, match=r"arch\.yaml:8: not valid YAML for an architecture: an alias refers to "
                                        r"itself"):
        load_spec(p)


def test_an_output_named_like_another_tensor_is_an_error_at_the_output_line():
    """An output named like a layer's output (`stem`) or, from a head's dict, like the input: TensorRT logged an error
    renaming the tensor and the engine's output kept its layer's name; now an error naming 'output' and its line."""
    with pytest.raises(SpecError, match=r"^<m>:3: 'output': output name 'stem' is taken by the output of layer "
                                        r"'stem' \(netdef names a layer's output after the layer\): name the output "
                                        r"otherwise$"):
        build_network(parse_spec(GOOD.replace("output: y", "output: stem"), "m"), Network({}))

    @block("TestDictHead")
    def dict_head(net, x, prefix):
        return {"x": net.activation(x, "relu", prefix)}

    try:
        with pytest.raises(SpecError, match=r"^<m>:3: 'output': output name 'x' is taken by the network input 'x'"):
            build_network(parse_spec(GOOD.replace("Linear, {c2: 4}", "TestDictHead, {}"), "m"), Network({}))
    finally:
        BLOCKS.pop("TestDictHead")


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    """Anchors each aliasing the one before 9 times expand to 9**7 values: the duplicate-key check walked every
    expanded value (seconds here, hours for a few more levels: `netdef show` hung); each node is now walked once and
    the expansion refused."""
    bomb = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]"
                                                       for i in range(1, 7)]
    p = write(tmp_path, GOOD + "\n".join(bomb) + "\n")
    start = time.perf_counter()
    with pytest.raises(SpecError, match=r"arch\.yaml:13: its aliases expand to more than 100000 values \(anchors "
                                        r"aliased in aliases of one another\), far more than its text holds"):
        load_spec(p)
    assert time.perf_counter() - start < 1
    shared = GOOD.replace("{c2: 4}", "{c2: *c}").replace("{c2: 8,", "{c2: &c 8,")  # an alias within bounds is fine
    assert load_spec(write(tmp_path, shared)).rows[2].kwargs == {"c2": 8}


def test_a_copied_family_file_built_by_its_path_is_told_to_name_its_scale(tmp_path):
    """A copy of yolov8.yaml (its `name: yolov8` kept) with an edit, built by its path: the error said to build
    yolov8n by name, which builds netdef's file without the edit; it now says to add `scale:` or put the scale in the
    file's name, which builds the copy."""
    text = load_spec("yolov8n").path.read_text() + "# my edit\n"
    with pytest.raises(SpecError) as e:
        load_spec(write(tmp_path, text, "my-yolov8.yaml"))
    assert "add `scale: n` (one of n, s, m, l, x) to it, or name the file with the scale (my-yolov8n.yaml: the path " \
           in str(e.value) and "; the name yolov8n builds " in str(e.value) and "by name" not in str(e.value)
    assert load_spec(tmp_path / "my-yolov8n.yaml").text == text
    with pytest.raises(SpecError, match=r"this file is a family: build one of its scales by name \(yolov8n, "):
        load_spec(load_spec("yolov8n").path)  # netdef's own file: its names build it


@pytest.mark.parametrize("args, needle", [
    ("{c2: 8, k: 2.5, bn: bn}", "expected an integer or two integers (a kernel size, stride, padding or dilation), "
                                "got 2.5"),
    ("{c2: 8, k: two, bn: bn}", "got 'two'"),
])
def test_bad_block_argument_values_are_yaml_errors_at_their_row(tmp_path, args, needle):
    from netdef.build import define_network

    p = write(tmp_path, GOOD.replace("{c2: 8, k: 3, bn: bn}", args))
    with pytest.raises(SpecError) as e:
        define_network(p, {}, log=lambda m: None)
    assert str(e.value).startswith(f"{p}:5: row 0 (ConvBnAct): ") and needle in str(e.value)


def test_a_misspelt_input_key_is_named(tmp_path):
    p = write(tmp_path, GOOD.replace("input:", "inputs:"))
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(e.value) == (f"{p}: no 'input' key ('inputs' on line 2 is not one: netdef reads 'input'): give "
                            f"input: {{name: ..., shape: [C, H, W]}}")


def test_a_second_global_pool_names_its_row_and_the_shape(tmp_path):
    """A pool of a pooled (B, C) tensor: netdef's own error at the row, not TensorRT's invalid reduction axis."""
    from netdef.build import define_network

    p = write(tmp_path, GOOD.replace("  - [-1, 1, Linear", "  - [-1, 1, GlobalAvgPool, {}, pool2]\n  - [-1, 1, Linear"))
    with pytest.raises(SpecError) as e:
        define_network(p, {}, log=lambda m: None)
    assert str(e.value).startswith(f"{p}:7: row 2 (GlobalAvgPool): pool2: a global average pool needs a (B, C, H, W) "
                                   f"input, got pool of shape (-1, 8)"), str(e.value)


def test_more_output_names_than_outputs_is_an_error(tmp_path):
    from netdef.build import define_network

    p = write(tmp_path, GOOD.replace("output: y", "output: [y, z]"))
    with pytest.raises(SpecError, match=r"the last row gives one output but 'output' names 2: \['y', 'z'\]"):
        define_network(p, {}, log=lambda m: None)


def test_unknown_architecture_lists_available():
    with pytest.raises(SpecError, match="resnet50"):
        load_spec("resnet9000")


def test_registered_block_is_usable_from_yaml(tmp_path):
    @block("TestDoubleConv", width_args=("c2",))
    def double_conv(net, x, prefix, c2, act="relu"):
        """Two 3x3 convolutions named prefix.a and prefix.b."""
        return net.conv(net.conv(x, f"{prefix}.a", c2, 3, act=act), f"{prefix}.b", c2, 3, act=act)

    try:
        p = write(tmp_path, GOOD.replace("ConvBnAct, {c2: 8, k: 3, bn: bn}", "TestDoubleConv, [8]"))
        spec = load_spec(p)
        rng = np.random.default_rng(0)
        w = {"stem.a.weight": rng.standard_normal(8 * 3 * 9), "stem.a.bias": rng.standard_normal(8),
             "stem.b.weight": rng.standard_normal(8 * 8 * 9), "stem.b.bias": rng.standard_normal(8),
             "fc.weight": rng.standard_normal(32), "fc.bias": rng.standard_normal(4)}
        net = Network({k: v.astype(np.float32) for k, v in w.items()})
        assert build_network(spec, net) == ["y"]
        assert net.check_keys() == []
        names = {net.definition.get_layer(i).name for i in range(net.definition.num_layers)}
        assert {"stem.a", "stem.b", "fc", "stem.a/relu"} <= names
    finally:
        BLOCKS.pop("TestDoubleConv")


def test_block_error_names_row(tmp_path):
    p = write(tmp_path, GOOD.replace("{c2: 8, k: 3, bn: bn}", "{c2: 8, k: 3, bn: bn, act: swishy}"))
    net = Network({})
    with pytest.raises(Exception) as e:
        build_network(load_spec(p), net)
    assert f"{p}:5: row 0 (ConvBnAct)" in str(e.value) and "swishy" in str(e.value)


def test_unused_top_level_key_is_rejected(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("input: {shape: [3, 8, 8]}\nactivations: nn.ReLU()\nlayers:\n  - [-1, 1, Act, [relu]]\n")
    with pytest.raises(SpecError, match=r"a.yaml:2: 'activations': unknown top-level key"):
        load_spec(p)


def test_width_multiple_scales_a_channel_count_equal_to_nc(tmp_path):
    """Ultralytics keeps only na * (nc + 5) unscaled; a Conv with c2 == nc is scaled like any other."""
    p = tmp_path / "a.yaml"
    p.write_text("input: {shape: [3, 64, 64]}\nnc: 64\nanchors: [[10,13, 16,30, 33,23]]\nwidth_multiple: 0.5\n"
                 "layers:\n  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 1, Conv, [207, 1, 1]]\n"
                 "  - [-1, 1, Conv, [nc, 1, 1]]\n  - [-1, 1, Detect, [nc, anchors]]\n")
    spec = load_spec(p)
    assert [r.args[0] for r in spec.rows[:3]] == [32, 207, 32]


def test_mismatched_join_names_the_row(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("input: {shape: [3, 9, 9]}\nlayers:\n  - [-1, 1, MaxPool, [2, 2]]\n"
                 "  - [[-1, -2], 1, Concat, [1]]\n")
    net = Network({}, precision="fp32")
    with pytest.raises(NetdefError, match=r"a.yaml:4: row 1 \(Concat\): model.1/concat: input shapes differ in "
                                          r"dimension 2: \[-1, 3, 4, 4\] from layer 'model.0', \[-1, 3, 9, 9\] from "
                                          r"layer 'input'; check the padding, stride and kernel size"):
        build_network(load_spec(p), net)


def test_numeric_keys_and_prefixes_are_key_names(tmp_path):
    """`conv: 0` works like `conv: "0"`, and a numeric key prefix like a quoted one (nn.Sequential's keys)."""
    from netdef.define import define_network

    rng = np.random.default_rng(0)
    w = {"5.0.weight": rng.random((8, 3, 3, 3)), "5.1.weight": rng.random(8), "5.1.bias": rng.random(8),
         "5.1.running_mean": rng.random(8), "5.1.running_var": rng.random(8) + 0.5,
         "7.weight": rng.random((4, 8)), "7.bias": rng.random(4)}
    for quote in ("", '"'):
        p = write(tmp_path, GOOD.replace("{c2: 8, k: 3, bn: bn}, stem]", f"{{c2: 8, k: 3, conv: {quote}0{quote}, "
                                         f"bn: {quote}1{quote}}}, {quote}5{quote}]")
                  .replace("{c2: 4}, fc]", f"{{c2: 4}}, {quote}7{quote}]"))
        net = define_network(p, w)
        assert net.used == set(w)
        names = {net.definition.get_layer(i).name for i in range(net.definition.num_layers)}
        assert {"5.0", "7"} <= names


def test_a_key_prefix_yaml_reads_as_a_float_or_a_boolean_is_the_prefix_as_written(tmp_path):
    """A prefix `1.10` (module 10 of nn.Sequential 1) is YAML's float 1.1: the row reads `1.10.*`, not `1.1.*`
    (str() of the float, which read another module's keys where the file has both); `2.0`, `on` and a quoted
    `"1.10"` are the prefixes as written too, with or without a row options mapping after them."""
    rows = [("[-1, 1, Conv2d, {c2: 4, k: 3}, 1.10]", "1.10"), ('[-1, 1, Conv2d, {c2: 4, k: 3}, "1.10"]', "1.10"),
            ("[-1, 1, Conv2d, {c2: 4, k: 3}, 2.0, {scale: false}]", "2.0"),
            ("[-1, 1, Conv2d, {c2: 4, k: 3}, on]", "on"), ("[-1, 1, Conv2d, {c2: 4, k: 3}, 10]", "10")]
    p = write(tmp_path, "input: {shape: [3, 16, 16]}\nlayers:\n" + "".join(f"  - {r}\n" for r, _ in rows))
    assert [row.prefix for row in load_spec(p).rows] == [prefix for _, prefix in rows]


def test_a_key_argument_of_a_block_of_ones_own_arrives_as_yaml_typed_it(tmp_path):
    """docs/writing-blocks.md's rule: the registry does not know which arguments name keys, so `{conv: 0}` reaches
    a block of one's own as the int 0 (netdef's ConvBnAct converts its `conv` and `bn`); the docs' example block
    builds its key with an f-string and reads `prefix.0.*`, unquoted or quoted."""
    got = []

    @block("TestConvFrom")
    def conv_from(net, x, prefix, c2, conv="conv"):
        got.append(conv)
        return net.conv(x, f"{prefix}.{conv}", c2, 3)

    try:
        rng = np.random.default_rng(0)
        w = {"stem.0.weight": rng.random((8, 3, 3, 3)), "stem.0.bias": rng.random(8), "fc.weight": rng.random((4, 8)),
             "fc.bias": rng.random(4)}
        for conv in ("0", '"0"'):
            p = write(tmp_path, GOOD.replace("ConvBnAct, {c2: 8, k: 3, bn: bn}",
                                             f"TestConvFrom, {{c2: 8, conv: {conv}}}"))
            net = Network({k: v.astype(np.float32) for k, v in w.items()})
            build_network(load_spec(p), net)
            assert net.check_keys() == [] and net.used == set(w)
        assert got == [0, "0"]
    finally:
        BLOCKS.pop("TestConvFrom")


def test_row_option_scale_false_keeps_number_and_channels(tmp_path):
    p = write(tmp_path, "input: {shape: [3, 64, 64]}\ndepth_multiple: 0.33\nwidth_multiple: 0.5\nlayers:\n"
                        "  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 3, C3, [128]]\n"
                        "  - [-1, 3, C3, [128], {scale: false}]\n  - [-1, 1, Conv, [10, 1, 1], head, {scale: false}]\n"
                        "  - [-1, 1, Conv, [10, 1, 1], {scale: true}]\n")
    rows = load_spec(p).rows
    assert [(r.n, r.args[0]) for r in rows] == [(1, 32), (1, 64), (3, 128), (1, 10), (1, 8)]
    assert rows[2].args[1] == 3 and rows[3].prefix == "head" and rows[4].prefix == "model.4"


@pytest.mark.parametrize("option, needle", [
    ("{scael: false}", "row 1: unknown row option 'scael' (row options: scale: false keeps"),
    ("{scale: 0}", "row 1: row option 'scale' must be true or false, got 0"),
])
def test_bad_row_options(tmp_path, option, needle):
    p = write(tmp_path, f"input: {{shape: [3, 8, 8]}}\nlayers:\n  - [-1, 1, Conv, [8, 3]]\n"
                        f"  - [-1, 1, Conv, [8, 3], x, {option}]\n")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(e.value).startswith(f"{p}:4: row 1: ") and needle in str(e.value)


def test_export_seed_makes_the_whole_export_reproducible(tmp_path, monkeypatch):
    """`netdef export SOURCE --seed N`: the same seed writes the same bytes, another seed other bytes, for a
    torchvision model (random init and --randomize-bn) and a callable drawing from NumPy and Python's random."""
    pytest.importorskip("torchvision")
    from netdef.cli import main

    (tmp_path / "seeded_source.py").write_text(
        "import random\nimport numpy as np\nimport torch\n\n\ndef make():\n"
        "    return {'a': torch.from_numpy(np.random.rand(5).astype('float32')),\n"
        "            'b': torch.tensor([random.random()]), 'c': torch.randn(3)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for source, extra in (("torchvision:mobilenet_v3_small", ["--randomize-bn"]), ("seeded_source:make", [])):
        data = {}
        for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
            out = tmp_path / f"{name}.wts"
            assert main(["export", source, "-o", str(out), "--seed", seed, *extra]) == 0
            data[name] = out.read_bytes()
        assert data["a"] == data["b"] and data["a"] != data["c"], source
        if source.startswith("seeded"):  # each generator is seeded: a differs, b differs, c differs
            a, c = read_wts(tmp_path / "a.wts"), read_wts(tmp_path / "c.wts")
            assert all(not np.array_equal(a[k], c[k]) for k in "abc")


def test_yaml_set_gives_build_parameters(tmp_path):
    """A top-level `set:` gives the architecture's build parameters; --set replaces them; a key no block declares
    or a value of the wrong type is an error naming the file."""
    from netdef.errors import SpecError

    text = load_spec("yolov5s").path.read_text(encoding="utf-8")
    (tmp_path / "yolov5-mine.yaml").write_text(text.replace("nc: 80 ", "set: {max_det: 7}\nnc: 80 "), encoding="utf-8")
    spec = load_spec(tmp_path / "yolov5s-mine.yaml")
    assert spec.resolve_params({})["max_det"] == 7
    assert spec.resolve_params({"max_det": "9"})["max_det"] == 9
    for bad, message in (("{nope: 1}", r"yolov5-bad.yaml: set: nope: no block of yolov5s-bad declares it"),
                         ("{max_det: many}", r"set: --set max_det='many': expected an int")):
        (tmp_path / "yolov5-bad.yaml").write_text(text.replace("nc: 80 ", f"set: {bad}\nnc: 80 "), encoding="utf-8")
        with pytest.raises(SpecError, match=message):
            load_spec(tmp_path / "yolov5s-bad.yaml").resolve_params({})


def test_a_yaml_file_that_is_not_utf8_in_the_working_folder_leaves_the_names_alone(tmp_path, monkeypatch):
    """A UTF-16 YAML (Windows Notepad's) in ./architectures/ made every lookup that lists or scales the names end in
    a UnicodeDecodeError traceback: `netdef build yolov5s` too. The names are listed without its scales; loading
    that file itself is the usual one-line error."""
    from netdef.spec import load_spec

    (tmp_path / "architectures").mkdir()
    (tmp_path / "architectures" / "mine.yaml").write_bytes("name: mine\n".encode("utf-16"))
    monkeypatch.chdir(tmp_path)
    assert load_spec("yolov5s").name.startswith("yolov5")
    with pytest.raises(SpecError, match=r"no architecture 'nosuch' \(a \.yaml path or one of: .*mine, .*resnet18"):
        load_spec("nosuch")
    with pytest.raises(SpecError, match=r"mine\.yaml: not a text file"):
        load_spec("mine")


def test_an_architecture_that_is_no_name_or_path_is_named():
    """define_network(block_fn, ...) (a Python user's first try without a YAML file) is an OptionError saying what an
    architecture is, not os.fspath's TypeError."""
    from netdef.define import define_network
    from netdef.errors import OptionError

    def my_model(net, x, prefix):
        return x

    with pytest.raises(OptionError, match=r"^architecture the block function my_model\(\): expected an architecture "
                                          r"name, a YAML path or a Spec"):
        define_network(my_model, {})
    with pytest.raises(OptionError, match=r"^architecture dict: expected"):
        load_spec({"layers": []})
    spec = load_spec("resnet18")
    assert load_spec(spec) is spec  # a Spec, as the message offers, is taken as it is


def test_an_architecture_given_as_a_dict_or_yaml_text_points_to_parse_spec():
    """build_engine(arch_dict, ...) or define_network(yaml_text, ...) (the text parse_spec takes) is an OptionError
    naming parse_spec, not an OSError 'File name too long' from a lookup of the text as a file name."""
    from netdef.define import define_network
    from netdef.errors import OptionError

    text = "input: {name: x, shape: [3, 8, 8]}\nlayers:\n  - [-1, 1, Act, {act: relu}, relu]\n"
    with pytest.raises(OptionError, match=r"^architecture YAML text: .*netdef\.spec\.parse_spec\(arch, 'mynet'\)"):
        define_network(text, {})
    with pytest.raises(OptionError, match=r"^architecture dict: .*parse_spec"):
        load_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "layers": [[-1, 1, "Act", {"act": "relu"}, "relu"]]})


def test_a_family_file_is_parsed_once_and_each_spec_has_its_own_data():
    """Each scale and task of a family file loads from one parse of its text (a search of the architectures that
    weights fit loads each family file 4 to 20 times); a spec's parameters are its own, not the parse's."""
    from netdef import spec as spec_module

    spec_module._parse_once.cache_clear()
    first = load_spec("yolov5n")
    first.params["anchors"][0].append(99)
    assert load_spec("yolov5s").params["anchors"][0] == [10, 13, 16, 30, 33, 23]
    assert spec_module._parse_once.cache_info().misses == 1



def test_a_family_of_custom_scale_letters_is_built_by_its_scaled_names(tmp_path):
    """A `scales:` key other than Ultralytics' n/s/m/l/x ('t: [0.33, 0.30, 768]') is chosen as those are: by the
    scaled path the family's own error suggests, or in a copy of the file named with it (both once refused)."""
    family = write(tmp_path, "input: {shape: [3, 64, 64]}\nscales:\n  t: [0.33, 0.30, 768]\n  s: [0.5, 0.5, 1024]\n"
                             "layers:\n  - [-1, 1, Conv, [64, 3, 2]]\n", "my-yolo11-neck.yaml")
    with pytest.raises(SpecError, match=r"add `scale: t` \(one of t, s\) to it, or name the file with the scale "
                                        r"\(my-yolo11t-neck\.yaml: the path .*my-yolo11t-neck\.yaml builds this "
                                        r"file at scale t without a copy\)$"):
        load_spec(family)
    scaled = tmp_path / "my-yolo11t-neck.yaml"
    assert [(s.scale, s.rows[0].args[0]) for s in (load_spec(scaled), load_spec(tmp_path / "my-yolo11s-neck.yaml"))] \
        == [("t", 24), ("s", 32)]
    scaled.write_text(family.read_text())  # a copy named with its scale
    assert load_spec(scaled).scale == "t"


def test_ultralytics_scale_and_channels_keys(tmp_path):
    """Ultralytics' own top-level `scale: n` (as a model's saved yaml has it) picks the scale where the name does
    not, `channels:` must agree with the input's, and the `yaml_file` such a yaml records is only a note (all once
    unknown top-level keys)."""
    text = "input: {shape: [3, 64, 64]}\nscales:\n  n: [0.33, 0.25, 1024]\n  s: [0.33, 0.5, 1024]\n" \
           "layers:\n  - [-1, 1, Conv, [64, 3, 2]]\n"
    spec = load_spec(write(tmp_path, text + "scale: n\nchannels: 3\nyaml_file: my-yolo8.yaml\n", "my-yolo8.yaml"))
    assert (spec.name, spec.scale, spec.rows[0].args[0]) == ("my-yolo8n", "n", 16)
    assert load_spec(write(tmp_path, text + "scale: n\n", "my-yolo8s.yaml")).scale == "s"  # the name's first
    with pytest.raises(SpecError, match=r"a.yaml:8: 'channels': 1 \(the model's input channels\), but "
                                        r"input: shape \[C, H, W\] has C = 3"):
        load_spec(write(tmp_path, text + "scale: n\nchannels: 1\n", "a.yaml"))


def test_an_architecture_given_in_python_builds_and_is_found_for_a_refit_only_as_itself(tmp_path):
    """parse_spec: YAML text or a dict, no file; the name given names it, errors say <name> and the line, the
    engine header records no path, and a refit (which cannot find it by name) is told to pass it."""

    import yaml

    from netdef.build import BuildOptions, build_engine, define_network
    from netdef.refit import spec_of
    from netdef.spec import parse_spec

    from helpers import lenet_weights

    pytest.importorskip("torch")
    text = (Path(load_spec("lenet").path)).read_text()
    from_text, from_dict = parse_spec(text, "mynet"), parse_spec(yaml.safe_load(text), "mynet")
    assert from_text.name == from_dict.name == "mynet" and from_text.path is None
    assert from_text.sha256 == load_spec("lenet").sha256  # the same text is the same architecture
    weights = lenet_weights(0)
    layers = [[n.definition.get_layer(i).name for i in range(n.definition.num_layers)]
              for n in (define_network(s, weights, BuildOptions(), log=lambda m: None)
                        for s in (from_dict, load_spec("lenet")))]
    assert layers[0] == layers[1] and "conv1" in layers[0]
    res = build_engine(from_dict, weights, tmp_path / "mynet.engine", BuildOptions(), log=lambda m: None)
    meta = res.meta
    assert meta["arch"]["name"] == "mynet" and meta["arch"]["path"] is None
    with pytest.raises(NetdefError, match=r"records no architecture file \(<mynet>, one given in Python: "
                                          r"parse_spec\): pass that architecture \(`netdef refit --arch YAML`"):
        spec_of(meta)
    assert spec_of(meta, from_dict) is from_dict
    from netdef.cli.info import format_engine

    assert "architecture <mynet> (given in Python: no file) sha256" in format_engine(meta, res.path)
    with pytest.raises(NetdefError, match="is not the one the engine was built from"):
        spec_of(meta, load_spec("lenet"))  # other text (the dict's YAML dump), other architecture


@pytest.mark.parametrize("text, name, needle", [
    ("input: {name: x, shape: [1, 8, 8]}\nlayers:\n  - [-1, 1, Nope, {}]\n", "mynet",
     r"<mynet>:3: row 0: unknown block 'Nope'"),
    ("input: {name: x, shape: [1, 8, 8]}\nlayers:\n  - [-1, 1, Linear]\n", "mynet", r"<mynet>:3: row 0: expected"),
    ({"input": {"name": "x", "shape": [1, 8, 8]}, "layers": [[-1, 1, "Linear", {"c2": 4}, "fc"]], "nx": 1}, "m",
     r"<m>:\d+: 'nx': unknown top-level key"),
    ({"input": {"name": "x", "shape": [1, 8, 8]}, "layers": [[-1, 1, "Linear", {"c2": object()}]]}, "m",
     r"<m>: cannot be written as YAML"),
    (["input"], "m", r"expected YAML text or a dict"),
    ("architectures/mine.yaml", "m", r"that is a file's name; parse_spec takes the YAML text itself, load_spec"),
    (Path("mine.yaml"), "m", r"parse_spec\(\w*Path\('mine\.yaml'\)\): that is a file's path; parse_spec takes the "
                             r"YAML text itself, load_spec\(path\) reads a file"),
])
def test_an_architecture_given_in_python_names_its_errors(text, name, needle):
    from netdef.spec import parse_spec

    with pytest.raises(SpecError, match=needle):
        parse_spec(text, name)


def test_a_dict_with_numpy_values_is_an_architecture():
    """Channel counts computed with numpy (np.int64) and shapes as tuples are written as YAML numbers and lists."""
    from netdef.spec import parse_spec

    spec = parse_spec({"input": {"name": "x", "shape": (3, np.int64(8), 8)}, "output": "y",
                       "layers": [(-1, 1, "Linear", {"c2": np.int64(4)}, "fc")]}, "m")
    assert spec.input_shape == (3, 8, 8) and spec.rows[0].kwargs == {"c2": 4}


def test_an_architecture_given_in_python_takes_its_own_name_and_any_length():
    """Without a name, parse_spec takes the text's `name:` (as load_spec does), else 'model'; a one-line flow-style
    text longer than a file name can be is parsed (pathlib raised 'File name too long'); a family named without a
    scale is told a scaled name; a LeakyReLU slope that is no number is a SpecError."""
    from netdef.spec import parse_spec

    assert parse_spec(GOOD).name == "tiny" and parse_spec(GOOD.replace("name: tiny\n", "")).name == "model"
    flow = "{input: {name: x, shape: [3, 16, 16]}, output: y, layers: [" + ", ".join(
        f"[-1, 1, Act, {{kind: relu}}, a{i}]" for i in range(20)) + "]}"
    assert len(flow) > 300 and len(parse_spec(flow).rows) == 20
    text = load_spec("yolov8n").path.read_text()
    with pytest.raises(SpecError, match=r"name one of its scales .*e\.g\. parse_spec\(text, 'yolov8n'\)"):
        parse_spec(text)
    with pytest.raises(SpecError, match=r"<m>:\d+: 'activation': nn.LeakyReLU's slope must be a number"):
        parse_spec(GOOD + "activation: nn.LeakyReLU(slope)\n", "m")


@pytest.mark.parametrize("value, named", [("'3'", "3"), ("3", "3"), ("", None), ("null", None), ("[a, b]", SpecError),
                                          ("{a: 1}", SpecError), ("1.5", SpecError), ("true", SpecError)])
def test_load_spec_and_parse_spec_take_a_yaml_name_by_one_rule(tmp_path, value, named):
    """A file and its text are named alike by their `name:`: a string or an integer; none: the file's stem (text:
    'model'); a list, mapping, float or boolean is the same SpecError from both (load_spec named a spec
    "['a', 'b']" or "None", parse_spec silently 'model')."""
    from netdef.spec import parse_spec

    text = GOOD.replace("name: tiny", f"name: {value}")
    path = write(tmp_path, text, "mine.yaml")
    if named is SpecError:
        with pytest.raises(SpecError, match=r"<model>:1: 'name': expected a name \(a string\)"):
            parse_spec(text)
        with pytest.raises(SpecError, match=rf"{path}:1: 'name': expected a name .*the name is then 'mine'"):
            load_spec(path)
    else:
        assert (parse_spec(text).name, load_spec(path).name) == (named or "model", named or "mine")


def test_a_family_given_as_text_is_built_by_a_scaled_name():
    from netdef.spec import parse_spec

    text = load_spec("yolov8n").path.read_text()
    with pytest.raises(SpecError, match=r"<yolov8>:\d+: 'scales': .*name one of its scales .*'yolov8n'"):
        parse_spec(text, "yolov8")
    spec = parse_spec(text, "yolov8s")
    assert (spec.name, spec.scale, len(spec.rows)) == ("yolov8s", "s", len(load_spec("yolov8s").rows))


@pytest.mark.parametrize("args", ["{2: 8, k: 3}", "{c2: 8, null: 3}", "{true: 8}"])
def test_an_argument_mapping_key_that_is_no_name_is_named_at_its_row(tmp_path, args):
    """A row's argument mapping whose key is no string (YAML reads `2:` as an int) is an error at the row (was a
    TypeError inside the arguments' check, found by the spec fuzzer)."""
    p = write(tmp_path, GOOD.replace("{c2: 8, k: 3, bn: bn}", args))
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(e.value).startswith(f"{p}:5: row 0: args: a mapping's keys are the block's argument "
                                   "names, got "), str(e.value)


def test_a_scale_after_a_family_name_without_digits_says_what_to_do(tmp_path, monkeypatch):
    """architectures/mydet.yaml, a family with scales n and s: `mydetn` was answered "did you mean mydet?", which
    then asked for `scale:`; the error now says that a scale letter is read after digits and what to do."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "architectures").mkdir()
    family = GOOD.replace("name: tiny\n", "scales:\n  n: [0.33, 0.25, 1024]\n  s: [0.33, 0.5, 1024]\n")
    (tmp_path / "architectures" / "mydet.yaml").write_text(family)
    with pytest.raises(SpecError, match=r"^no architecture 'mydetn': architectures/mydet\.yaml is a family \(scales "
                                        r"n, s\) whose name has no digits, .* add `scale: n` to mydet\.yaml and build "
                                        r"`mydet`, or name the file with digits \(mydet1\.yaml builds as mydet1n\)$"):
        load_spec("mydetn")
    with pytest.raises(SpecError, match=r"^no architecture 'mydetq': did you mean mydet\? \("):  # no such scale
        load_spec("mydetq")


def test_a_specs_repr_is_one_line_naming_it():
    """repr(spec) in a notebook or a log: its name, source, input, row count and outputs, not its text and rows."""
    spec = parse_spec(GOOD, "tiny")
    assert repr(spec) == "Spec('tiny', <tiny>, input x [3, 16, 16], 3 rows, outputs ['y'])"


def test_a_head_of_one_level_takes_a_single_from():
    """Heads take their levels as a list or one tensor (`from: -1`, a single-level head): only blocks that join
    several inputs (Add, Concat, ...) refuse a single 'from'."""
    text = GOOD.replace("[-1, 1, GlobalAvgPool, {}, pool]", "[-1, 1, Segment, [80, 32, 64], head]").replace(
        "  - [-1, 1, Linear, {c2: 4}, fc]\n", "")
    assert parse_spec(text, "seg").rows[-1].block.name == "Segment"
