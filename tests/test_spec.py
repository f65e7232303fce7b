"""Architecture YAML errors name the file and the row; the registry accepts new blocks."""
from __future__ import annotations

import numpy as np
import pytest

from netdef.errors import NetdefError, SpecError
from netdef.network import Network
from netdef.registry import BLOCKS, block
from netdef.spec import build_network, load_spec

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
    (GOOD.replace("ConvBnAct", "ConvBnActt"), 5, "unknown block 'ConvBnActt'"),
    (GOOD.replace("{c2: 8, k: 3, bn: bn}", "{c2: 8, kk: 3}"), 5, "bad arguments for ConvBnAct"),
    (GOOD.replace("[-1, 1, Linear", "[3, 1, Linear"), 7, "'from' index 3 does not refer to an earlier row"),
    (GOOD.replace("[-1, 1, Linear", "[-5, 1, Linear"), 7, "'from' index -5"),
    (GOOD.replace("[-1, 1, Linear", "[-1, 0, Linear"), 7, "'number' must be a positive integer"),
    (GOOD.replace("[-1, 1, GlobalAvgPool, {}, pool]", "[-1, GlobalAvgPool]"), 6, "expected [from, number, block, args"),
    (GOOD.replace("shape: [3, 16, 16]", "shape: [3, -16, 16]"), 2, "'input'"),
    (GOOD.replace("  - [-1, 1, Linear", "  - [-1, 1, Linear: {"), 7, "not valid YAML"),
])
def test_errors_name_file_and_line(tmp_path, bad, line, needle):
    p = write(tmp_path, bad)
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert f"{p}:{line}" in str(e.value) and needle in str(e.value)


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
    p.write_text("input: {shape: [3, 8, 8]}\nactivation: nn.ReLU()\nlayers:\n  - [-1, 1, Act, [relu]]\n")
    with pytest.raises(SpecError, match=r"a.yaml:2: 'activation': unknown top-level key"):
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
    with pytest.raises(NetdefError, match=r"a.yaml:4: row 1 \(Concat\): model.1/concat: input shapes .* differ in dimension 2"):
        build_network(load_spec(p), net)
