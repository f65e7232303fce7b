"""The structure users rely on: declared build parameters, errors in their own type, layers named in one
place, YAML families with scales, architectures found by name from any folder, no import cycles."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from netdef.build import BuildOptions, define_network
from netdef.errors import BlockError, NetdefError, OptionError, SpecError, WeightKeyError
from netdef.network import Network
from netdef.registry import BLOCKS, block
from netdef.spec import available_archs, build_network, load_spec

TINY = """name: tiny
input: {name: x, shape: [3, 8, 8]}
output: y
layers:
  - [-1, 1, ConvBnAct, {c2: 4, k: 3}, stem]
  - [-1, 1, BLOCK, {}, odd]
"""


@pytest.fixture
def temp_block():
    """Register blocks for one test and remove them afterwards."""
    names = []

    def register(name, fn, **kw):
        names.append(name)
        block(name, **kw)(fn)
        return name

    yield register
    for n in names:
        BLOCKS.pop(n, None)


def tiny(tmp_path, block_name):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.replace("BLOCK", block_name))
    return p


def tiny_weights():
    return {"stem.weight": np.ones((4, 3, 3, 3), np.float32), "stem.bias": np.zeros(4, np.float32)}


# ---------------------------------------------------------------- build parameters

def test_set_with_an_undeclared_key_is_an_error():
    spec = load_spec("yolov5s")
    with pytest.raises(OptionError, match=r"--set conf_thresh: no block of yolov5s declares it \(its blocks take "
                                          r"bn_eps, conf_thres, default_act, head, iou_thres, max_det, nc\)"):
        spec.resolve_params({"conf_thresh": 0.3})
    with pytest.raises(OptionError, match="lenet declares it .*take no build parameters"):
        load_spec("lenet").resolve_params({"head": "plugin"})
    with pytest.raises(OptionError, match=r"--set head: no block of resnet18 declares it \(its blocks take nc\)"):
        load_spec("resnet18").resolve_params({"head": "plugin"})
    # tensorrtx's config.h names, as a migrant gives them: answered with netdef's option
    for name, answer in (("kNumClass", "the class count of the weights"), ("CLASS_NUM", "the class count"),
                         ("kMaxNumOutputBbox", "`--set max_det=`"), ("kBatchSize", "`--batch 1:N`"),
                         ("kConfThresh", "`netdef detect --conf`"), ("kInputH", "`--input-shape HxW`")):
        with pytest.raises(OptionError, match=rf"--set {name}: no block of yolov5s declares it .*; tensorrtx's "
                                              rf"config\.h {name} is {re.escape(answer)}"):
            spec.resolve_params({name: 1})


@pytest.mark.parametrize("given, message", [
    ({"conf_thres": 0.4}, r"--set conf_thres: applies with head=plugin only, and this build's head is decode \(its "
                          r"default\): leave conf_thres out or set head=plugin"),
    ({"iou_thres": 0.5, "head": "one2many"}, r"--set iou_thres: applies with head=plugin only"),
    ({"conf_thres": 2, "head": "plugin"}, r"--set conf_thres=2: expected a score threshold in \[0, 1\)"),
    ({"iou_thres": 0, "head": "plugin"}, r"--set iou_thres=0: expected an IoU threshold in \(0, 1\]"),
    ({"max_det": 0}, r"--set max_det=0: expected at least 1"),
    ({"bn_eps": -1}, r"--set bn_eps=-1: expected a positive finite number"),
    ({"bn_eps": "inf"}, r"--set bn_eps='?inf'?: expected a positive finite number"),
    ({"default_act": "mish"}, r"--set default_act='?mish'?: expected one of relu, silu, leaky, "),
    ({"default_act": "leaky:abc"}, r"--set default_act='?leaky:abc'?: expected .*; leaky:SLOPE \(a number\), "
                                   r"gelu:tanh"),
    ({"default_act": "relu:2"}, r"--set default_act='?relu:2'?: expected one of"),
    ({"default_act": ""}, r"--set default_act='': expected one of"),  # an unset shell variable: not `none`
    ({"nc": 0}, r"--set nc=0: expected at least 1 class"),
])
def test_set_values_outside_their_range_or_head_are_refused(given, message):
    """A value the build would turn into a broken engine (negative eps: inf) or silently ignore (a plugin
    threshold on a decode head) is an error naming the setting."""
    with pytest.raises(OptionError, match=message):
        load_spec("yolo11n").resolve_params(given)


def test_set_values_are_converted_and_checked():
    spec = load_spec("yolov5s")
    p = spec.resolve_params({"head": "plugin", "conf_thres": "0.4", "max_det": "50"})
    # iou_thres None: the head's family default (nms_params)
    assert p == {"head": "plugin", "conf_thres": 0.4, "iou_thres": None, "max_det": 50, "nc": None, "bn_eps": 1e-3,
                 "default_act": "silu"}
    assert spec.resolve_params({"head": "plugin", "iou_thres": "0.5"})["iou_thres"] == 0.5
    assert spec.resolve_params({"nc": "3"})["nc"] == 3
    with pytest.raises(OptionError, match=r"--set head='nms': use one of decode, plugin"):
        spec.resolve_params({"head": "nms"})
    with pytest.raises(OptionError, match=r"--set max_det=2.5: expected an int"):
        spec.resolve_params({"max_det": 2.5})


def test_the_network_carries_typed_build_state(tmp_path, temp_block):
    seen = {}

    def reads_param(net, x, prefix, k: int = 1):
        seen["scale"] = net.param("scale")
        return x

    from netdef.registry import Param
    name = temp_block("ReadsParam", reads_param, params={"scale": Param(2.0, float)})
    net = define_network(tiny(tmp_path, name), tiny_weights(), BuildOptions(params={"scale": "3"}), log=print)
    assert seen["scale"] == 3.0 and net.params == {"scale": 3.0} and net.plugins == []


def test_a_build_parameter_no_block_reads_is_refused(tmp_path, temp_block):
    """A parameter given but never read in this build (a setting of a branch not built: max_det with a plain
    decode head) would be recorded without effect: refused, naming it; read, it builds."""
    from netdef.errors import OptionError
    from netdef.registry import Param

    def maybe_reads(net, x, prefix, k: int = 1):
        if net.param("mode") != "plain":
            assert net.param("gain") == 3.0  # the other branch would use it
        return x

    name = temp_block("MaybeReads", maybe_reads, params={"mode": Param("plain", str), "gain": Param(2.0, float)})
    with pytest.raises(OptionError, match=r"^--set gain=3: no block of this build reads it, so it would have no "
                                          r"effect; leave gain out$"):
        define_network(tiny(tmp_path, name), tiny_weights(), BuildOptions(params={"gain": 3}), log=print)
    net = define_network(tiny(tmp_path, name), tiny_weights(), BuildOptions(params={"gain": 3, "mode": "x"}),
                         log=print)
    assert net.params_read >= {"mode", "gain"}


def test_a_bool_build_parameter_error_says_how_to_write_one():
    """--set values are JSON, so `--set flag=True` (Python's spelling) is the text 'True': the error says what a
    bool is written as."""
    from netdef.errors import OptionError
    from netdef.registry import Param

    assert Param(False, bool).convert("flag", True) is True
    with pytest.raises(OptionError, match=r"^--set flag='True': expected a bool: true or false$"):
        Param(False, bool).convert("flag", "True")


# ---------------------------------------------------------------- errors

def test_a_bug_inside_a_block_is_a_block_error_not_bad_yaml(tmp_path, temp_block):
    def buggy(net, x, prefix):
        return len(x)  # TypeError: a tensor has no len()

    name = temp_block("Buggy", buggy)
    with pytest.raises(BlockError) as e:
        define_network(tiny(tmp_path, name), tiny_weights(), log=print)
    assert not isinstance(e.value, SpecError)
    msg = str(e.value)
    assert "tiny.yaml:6: row 1 (Buggy): block Buggy (" in msg and "raised TypeError" in msg and "\n" not in msg
    # the line of the block that raised, as an import error of a block file gives it (a NameError in a block said
    # only "raised NameError: name 'mlp_ratioo' is not defined")
    assert f"no len() at {__file__}:{buggy.__code__.co_firstlineno + 1} (check" in msg


def test_a_netdef_error_in_a_block_gets_the_row_once(tmp_path, temp_block):
    def refuses(net, x, prefix):
        raise WeightKeyError(f"{prefix}: not like this")

    name = temp_block("Refuses", refuses)
    with pytest.raises(WeightKeyError) as e:
        define_network(tiny(tmp_path, name), tiny_weights(), log=print)
    assert str(e.value).count("row 1") == 1 and str(e.value).endswith("(Refuses): odd: not like this")


def test_the_cli_prints_a_block_bug_in_one_line(tmp_path, temp_block, capsys):
    from netdef.cli import main
    from netdef.wts import write_wts

    def buggy(net, x, prefix):
        raise TypeError("boom")

    name = temp_block("Buggy2", buggy)
    write_wts(tmp_path / "w.wts", tiny_weights())
    code = main(["build", str(tiny(tmp_path, name)), "-w", str(tmp_path / "w.wts"), "-o", str(tmp_path / "e.engine")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("netdef build: error: ") and "block Buggy2" in err[-1]


def test_weight_size_error_names_the_row(tmp_path):
    w = tiny_weights() | {"stem.weight": np.ones(107, np.float32)}
    with pytest.raises(WeightKeyError, match=r"tiny.yaml:5: row 0 \(ConvBnAct\): in-memory weights: 'stem.weight' "
                                             r"has 107 values but the architecture expects shape \(4, 3, 3, 3\)"):
        define_network(tiny(tmp_path, "Act"), w, log=print)


# ---------------------------------------------------------------- layer names

def test_raw_api_layers_are_named_after_the_row(tmp_path, temp_block):
    def raw(net, x, prefix):
        layer = net.definition.add_shuffle(x)  # the raw TensorRT call, not named by the block
        layer.reshape_dims = (0, -1)
        return layer.get_output(0)

    name = temp_block("RawShuffle", raw)
    net = define_network(tiny(tmp_path, name), tiny_weights(), log=print)
    d = net.definition
    names = [d.get_layer(i).name for i in range(d.num_layers)]
    assert "odd/shuffle" in names and not any(n.startswith("(Unnamed") for n in names)


@pytest.mark.parametrize("arch", ["resnet18", "yolov5n"])
def test_no_layer_is_left_unnamed(arch, torchvision_wts):
    spec = load_spec(arch)
    net = Network({}, precision="fp16")
    build_network(spec, net)  # zeros for the missing keys: the layer names are what is checked
    d = net.definition
    names = [d.get_layer(i).name for i in range(d.num_layers)]
    assert names and not [n for n in names if n.startswith("(Unnamed")]


# ---------------------------------------------------------------- YAML families

@pytest.mark.parametrize("name, file, scale, depth_width", [
    ("yolov5s", "yolov5.yaml", "s", (0.33, 0.5)),
    ("yolov5x6", "yolov5-p6.yaml", "x", (1.33, 1.25)),
    ("yolov5n-v5", "yolov5-v5.yaml", "n", (0.33, 0.25)),
])
def test_scaled_names_select_a_family_file_and_scale(name, file, scale, depth_width):
    spec = load_spec(name)
    assert (spec.path.name, spec.scale, spec.name) == (file, scale, name)
    assert name in available_archs()


def test_scales_change_the_architecture_hash_and_width():
    s, m = load_spec("yolov5s"), load_spec("yolov5m")
    assert s.text == m.text and s.sha256 != m.sha256
    assert s.rows[0].args[0] == 32 and m.rows[0].args[0] == 48  # 64 * 0.5, 64 * 0.75


def test_a_family_file_needs_a_scale(tmp_path):
    with pytest.raises(SpecError, match=r"this file is a family: build one of its scales by name \(yolov5n, yolov5s"):
        load_spec(load_spec("yolov5s").path)
    with pytest.raises(SpecError, match="no architecture 'yolov5q'"):
        load_spec("yolov5q")


def test_a_family_named_with_weights_names_the_scale_they_fit(yolov5_models, tmp_path):
    """`netdef build yolov5 -w yolov5n.wts`: the family error names the scale the weights fit (none for weights
    that fit no scale of it, nor where the weights are only named)."""
    from netdef.define import spec_for_weights
    from netdef.testing.yolov5_reference import yolov5_available
    from netdef.errors import FamilyError
    from netdef.wts import write_wts

    if not yolov5_available():
        pytest.skip("needs the reference: pip install --no-deps yolov5==7.0.14")
    wts = tmp_path / "best.wts"
    write_wts(wts, yolov5_models("yolov5n")[1])
    with pytest.raises(FamilyError, match=r"\(a copy named yolov5n\.yaml for yolov5\.yaml\); best\.wts fits yolov5n$"):
        spec_for_weights("yolov5", wts)
    with pytest.raises(FamilyError, match=r"for yolov8\.yaml\)$"):
        spec_for_weights("yolov8", wts)
    with pytest.raises(FamilyError, match=r"for yolov5\.yaml\)$"):
        spec_for_weights("yolov5", tmp_path / "missing.wts")
    assert spec_for_weights("yolov5n", wts).name == "yolov5n"


def test_weights_of_another_of_netdefs_architectures_name_it(torchvision_wts):
    """resnet18's weights built as resnet50 (sizes differ) or resnet34 (blocks missing): the error names the
    architecture they fit, as within a YOLO family."""
    pytest.importorskip("torchvision")
    _, wts = torchvision_wts("resnet18")
    for arch in ("resnet50", "resnet34"):
        with pytest.raises(WeightKeyError, match=r"\nThese weights fit resnet18: build that architecture$"):
            define_network(arch, wts, BuildOptions(), log=lambda m: None)


def test_an_unknown_task_of_a_family_names_the_tasks_netdef_builds():
    """yolo11n-obb (oriented boxes), yolov8n-rtdetr: the error says which members of that family and scale exist,
    ahead of the list of every architecture; a name of no family gets the list alone."""
    with pytest.raises(SpecError, match=r"no architecture 'yolo11n-obb': of yolo11 at that scale netdef builds "
                                        r"yolo11n, yolo11n-cls, yolo11n-pose, yolo11n-seg \(a \.yaml path"):
        load_spec("yolo11n-obb")
    with pytest.raises(SpecError, match=r"no architecture 'yolov8n-rtdetr': of yolov8 at that scale netdef builds "
                                        r"yolov8n, yolov8n-cls, yolov8n-ghost, yolov8n-p2, yolov8n-pose,"):
        load_spec("yolov8n-rtdetr")
    with pytest.raises(SpecError, match=r"no architecture 'yolo26s-cls': of yolo26 at that scale netdef builds "
                                        r"yolo26s, yolo26s-pose, yolo26s-seg; YOLO26's classifier is YOLO11's layout: "
                                        r"build yolo11s-cls \(a \.yaml path"):
        load_spec("yolo26s-cls")
    with pytest.raises(SpecError, match=r"no architecture 'yolov10n' \(a \.yaml path"):
        load_spec("yolov10n")


@pytest.mark.parametrize("name, meant", [("YOLO11N", "yolo11n"), ("yolov11n-seg", "yolo11n-seg"),
                                         ("yolov26n", "yolo26n"), ("resnet-50", "resnet50"), ("resnt18", "resnet18"),
                                         ("mobilenet-v2", "mobilenet_v2"), ("yolo12n", None)])
def test_a_misspelt_architecture_name_gets_the_one_meant(name: str, meant: str | None) -> None:
    """Case, Ultralytics' 'YOLOv11' spelling, '-' for '_', a typo: the name meant, ahead of the list of every
    architecture; yolo12n is another architecture, not a misspelt yolo11n: no guess."""
    with pytest.raises(SpecError, match=rf"no architecture '{name}'(: did you mean {meant}\?)? \(a \.yaml path") as e:
        load_spec(name)
    assert ("did you mean" in str(e.value)) == (meant is not None)


def test_a_missing_yaml_named_as_one_of_netdefs_architectures_is_that_architecture(tmp_path, monkeypatch):
    """`netdef build yolov8s.yaml` builds netdef's yolov8s, as Ultralytics' YOLO("yolov8s.yaml") does, where no such
    file is here; a path in a folder names the bare name; another missing file is the plain error."""
    monkeypatch.chdir(tmp_path)
    spec = load_spec("yolov8s.yaml")
    assert (spec.name, spec.text) == ("yolov8s", load_spec("yolov8s").text)
    with pytest.raises(SpecError, match=r"^architecture file not found: sub/yolov8s\.yaml \(netdef's own yolov8s is "
                                        r"named without \.yaml: `yolov8s`\)$"):
        load_spec("sub/yolov8s.yaml")
    with pytest.raises(SpecError, match=r"^architecture file not found: mine\.yaml$"):
        load_spec("mine.yaml")


def test_a_family_file_named_with_a_scale_builds_that_scale(tmp_path):
    """A copy of yolo11.yaml saved as my-yolo11n.yaml (Ultralytics reads the scale from such a file name) is
    yolo11n's rows under the file's own name, not a family asking for a scale (nor for my-yolo11nn.yaml)."""
    mine = tmp_path / "my-yolo11n.yaml"
    mine.write_text(load_spec("yolo11n").text)
    spec, ref = load_spec(mine), load_spec("yolo11n")
    assert (spec.name, spec.scale) == ("my-yolo11n", "n")
    assert [(r.block, r.args, r.kwargs, r.n) for r in spec.rows] == [(r.block, r.args, r.kwargs, r.n) for r in ref.rows]
    (tmp_path / "my-yolo11q.yaml").write_text(ref.text)  # no scale letter: still a family
    with pytest.raises(SpecError, match=r"this file is a family"):
        load_spec(tmp_path / "my-yolo11q.yaml")


def test_a_family_file_named_without_digits_is_told_to_add_a_scale_key(tmp_path):
    """custom.yaml, a copy of yolo11.yaml (Ultralytics took its first scale, warning): no file name picks a scale, so
    the error says to add Ultralytics' `scale:` key (it said 'build one of its scales by name (custom)'), which then
    builds that scale."""
    ref = load_spec("yolo11s")
    (tmp_path / "custom.yaml").write_text(ref.text)
    with pytest.raises(SpecError, match=r"this file is a family and its name \(custom\.yaml\) carries no scale: add "
                                        r"`scale: n` \(one of n, s, m, l, x\) to it; Ultralytics takes the first"):
        load_spec(tmp_path / "custom.yaml")
    (tmp_path / "custom.yaml").write_text("scale: s\n" + ref.text)
    spec = load_spec(tmp_path / "custom.yaml")
    assert spec.scale == "s"
    assert [(r.block, r.args, r.n) for r in spec.rows] == [(r.block, r.args, r.n) for r in ref.rows]


# ---------------------------------------------------------------- import structure

@pytest.mark.parametrize("module, must_not_load", [
    ("netdef.registry", "netdef.blocks"),
    ("netdef.int8.quantize", "netdef.build"),
    ("netdef.network", "netdef.spec"),
    ("netdef.tools.timing", "netdef.runtime"),
])
def test_no_import_cycle(module, must_not_load):
    code = f"import sys, {module}; print({must_not_load!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False", f"importing {module} loads {must_not_load}"


def test_options_are_validated_where_they_enter():
    for bad, needle in [({"batch": 8}, "batch profile 8"), ({"batch": "1:8:32"}, "batch profile '1:8:32'"),
                        ({"opt_level": "3"}, "optimization level '3'"), ({"input_hw": 16}, "input shape 16"),
                        ({"workspace_mib": -1}, "workspace -1"), ({"precision": "int4"}, "precision 'int4'"),
                        ({"compute_capability": "ampere"}, "--compute-capability 'ampere': expected MAJOR.MINOR")]:
        with pytest.raises(OptionError, match=needle):
            BuildOptions(**bad).validate()
    with pytest.raises(NetdefError, match="is a directory"):
        define_network("resnet18", "/tmp", log=print)


@pytest.mark.parametrize("given, recorded", [("8.9", "8.9"), ("89", "8.9"), ("sm89", "8.9"), ("SM_86", "8.6"),
                                             ("120", "12.0"), ("12.0", "12.0"), ("CURRENT", "current")])
def test_compute_capability_is_recorded_as_a_gpu_reports_it(given: str, recorded: str) -> None:
    """--compute-capability 120 targets 12.0 and is recorded so: the header's value is compared with a GPU's '12.0'
    when the engine loads, so '120' there would refuse the very GPU it was built for."""
    opts = BuildOptions(compute_capability=given)
    opts.validate()
    assert opts.compute_capability == recorded


def test_a_compute_capability_tensorrt_rtx_cannot_target_is_refused_before_the_weights(tmp_path, monkeypatch):
    """--compute-capability 9.0 with a TensorRT-RTX that has no SM90 target: refused with the targets it has before
    the weights are read (a missing .wts is not reached), not at builder configuration, and so is `current` without
    a GPU; full TensorRT (no build targets) checks nothing."""
    import enum
    import types

    from netdef import trt_api
    from netdef.build import build_engine

    rtx = types.SimpleNamespace(ComputeCapability=enum.Enum("ComputeCapability", "NONE CURRENT SM75 SM86 SM120"))
    monkeypatch.setattr(trt_api, "module", lambda: rtx)
    monkeypatch.setattr(trt_api, "version_string", lambda: "tensorrt-rtx 1.7")
    monkeypatch.setattr(trt_api, "gpu_identity", lambda: ("NVIDIA L4", "8.9"))
    for cc in ("8.6", "120", "current"):
        trt_api.check_compute_capability(BuildOptions(compute_capability=cc).compute_capability)
    # current is the GPU's: without one it is refused here (the build failed in TensorRT with a CUDA driver error)
    monkeypatch.setattr(trt_api, "gpu_identity", lambda: None)
    trt_api.check_compute_capability("8.6")
    with pytest.raises(OptionError, match=r"^--compute-capability current: the GPU's, and no CUDA GPU is visible here; "
                                          r"without one tensorrt-rtx 1\.7 builds for a compute capability named: "
                                          r"7\.5, 8\.6, 12\.0$"):
        build_engine("lenet", tmp_path / "missing.wts", tmp_path / "l.engine",
                     BuildOptions(compute_capability="current"))
    with pytest.raises(OptionError, match=r"^--compute-capability 9\.0: tensorrt-rtx 1\.7 cannot build for it; it "
                                          r"targets 7\.5, 8\.6, 12\.0 \(or current, the GPU's\)$"):
        build_engine("lenet", tmp_path / "missing.wts", tmp_path / "l.engine", BuildOptions(compute_capability="90"))
    monkeypatch.setattr(trt_api, "module", lambda: types.SimpleNamespace())  # full TensorRT
    trt_api.check_compute_capability("9.0")


def test_keys_with_a_wrapper_prefix_say_so():
    """A DataParallel checkpoint's keys ('module.conv1.weight'): the key error ends with what to do about it."""
    import torchvision

    sd = {f"module.{k}": v.numpy() for k, v in torchvision.models.resnet18().state_dict().items()}
    with pytest.raises(WeightKeyError, match=r"(?s)key\(s\) the architecture needs are missing.*The file's keys carry "
                                             r"the prefix 'module\.' the architecture's lack .*"
                                             r"`netdef export CHECKPOINT --strip-prefix module\. -o WEIGHTS\.wts`$"):
        define_network("resnet18", sd, BuildOptions(), log=lambda m: None)


def test_keys_with_the_row_prefix_twice_say_key_names_are_relative():
    """ConvBnAct {conv: stem.0, bn: stem.1} in row 'stem' reads stem.stem.0.weight: the error says the names are
    relative to the row's prefix, not that the file's keys lack 'stem.' (they have it)."""
    from netdef.spec import parse_spec

    spec = parse_spec({"input": {"name": "x", "shape": [3, 8, 8]},
                       "layers": [[-1, 1, "ConvBnAct", {"c2": 4, "k": 3, "conv": "stem.0", "bn": "stem.1"}, "stem"]]},
                      "mynet")
    sd = {"stem.0.weight": np.ones((4, 3, 3, 3), np.float32)} | {
        f"stem.1.{k}": np.ones(4, np.float32) for k in ("weight", "bias", "running_mean", "running_var")}
    with pytest.raises(WeightKeyError, match=r"(?s)The architecture's keys repeat the prefix 'stem\.' "
                                             r"\(stem\.stem\.0\.weight for the file's stem\.0\.weight\): .*"
                                             r"relative to the row's prefix: write them without it$"):
        define_network(spec, sd, BuildOptions(), log=lambda m: None)


def test_a_row_without_a_prefix_says_so():
    """A parse_spec row that names no prefix reads model.<row>.* (Ultralytics' keys): the error says to give the row
    its prefix, not that the weights are of another architecture."""
    from netdef.spec import parse_spec

    rows = [[-1, 1, "ConvBnAct", {"c2": 4, "k": 3}, "stem"], [-1, 1, "ConvBnAct", {"c2": 4, "k": 3}]]
    spec = parse_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "layers": rows}, "mynet")
    sd = {"stem.weight": np.ones((4, 3, 3, 3), np.float32), "b1.weight": np.ones((4, 4, 3, 3), np.float32)}
    with pytest.raises(WeightKeyError, match=r"(?s)The missing keys are model\.<row>\.\* \(model\.1\.weight, "
                                             r"<mynet>:\d+: row 1 \(ConvBnAct\)\): a row without a prefix .*"
                                             r"give it the module's prefix, \[from, number, block, args, prefix\]$"):
        define_network(spec, sd, BuildOptions(), log=lambda m: None)


def test_unused_whole_modules_are_named_and_not_waved_through():
    """Keys of modules the architecture never reads (another head): the error names the modules and does not
    suggest --no-strict; a non-strict build warns with the same words. Unused keys inside read modules keep the
    --no-strict hint."""
    import torchvision

    sd = {k: v.numpy() for k, v in torchvision.models.resnet18().state_dict().items()}
    extra = {"fc2.weight": np.zeros((3, 4), np.float32), "fc2.bias": np.zeros(3, np.float32),
             "proto.cv1.conv.weight": np.zeros((2, 2, 1, 1), np.float32)}
    with pytest.raises(WeightKeyError) as e:
        define_network("resnet18", sd | extra, BuildOptions(), log=lambda m: None)
    assert "whole modules this architecture does not have: fc2 (2 keys), proto (1 key: mask prototypes of a " \
           "segmentation head, a -seg model)" in str(e.value) and "netdef build --no-strict," not in str(e.value)
    logged = []
    define_network("resnet18", sd | extra, BuildOptions(strict=False), log=logged.append)
    assert any("3 unused key(s)" in m and "whole modules this architecture does not have: fc2" in m for m in logged)
    with pytest.raises(WeightKeyError, match=r"netdef build --no-strict"):  # fc is read: fc.extra is no whole module
        define_network("resnet18", sd | {"fc.extra": np.zeros(1, np.float32)}, BuildOptions(), log=lambda m: None)


def test_unused_parts_of_a_read_module_name_the_row_that_reads_it():
    """A module under one that a row reads (a BatchNorm its block forgot): the hint names that row, not missing
    rows."""
    import torchvision

    sd = {k: v.numpy() for k, v in torchvision.models.resnet18().state_dict().items()}
    extra = {f"layer1.0.bn3.{k}": np.ones(64, np.float32) for k in ("weight", "bias")}
    with pytest.raises(WeightKeyError) as e:
        define_network("resnet18", sd | extra, BuildOptions(), log=lambda m: None)
    assert re.search(r"The unused keys are parts of modules the architecture reads: layer1\.0\.bn3 beside the keys "
                     r"\S+resnet18\.yaml:\d+: row \d+ \(\w+\) reads\. Does that row's block forget to read them",
                     str(e.value)), str(e.value)


def test_fused_checkpoints_and_segment_weights_as_detect_say_what_they_are():
    """An Ultralytics checkpoint saved after fuse() (convolution biases, no BatchNorm) and YOLOv5-seg weights
    built as YOLOv5 (whose head would otherwise count the mask coefficients as classes)."""
    pytest.importorskip("ultralytics")
    from netdef.testing.ultralytics_reference import reference_model

    model, _ = reference_model("yolov8n")
    model.fuse()
    fused = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    with pytest.raises(WeightKeyError, match=r"the model was saved after BatchNorm was fused into its convolutions"):
        define_network("yolov8n", fused, BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    from netdef.testing.yolov5_reference import reference_model as yolov5_model, yolov5_available

    if not yolov5_available():
        pytest.skip("needs pip install --no-deps yolov5==7.0.14")
    sd = yolov5_model("yolov5n")[1] | {"model.24.proto.cv1.conv.weight": np.zeros((8, 64, 3, 3), np.float32)}
    with pytest.raises(SpecError, match=r"model\.24: the weights have a Segment head \(model\.24\.proto\.\*\), this "
                                        r"architecture a Detect head: build the -seg architecture"):
        define_network("yolov5n", sd, BuildOptions(input_hw=(64, 64), strict=False), log=lambda m: None)


def test_weights_saved_fused_or_of_another_task_suggest_no_custom_scale():
    """Weights the key report explains (saved after fuse(); an oriented-box head's extra cv4 branch) are not also
    told they may be of a custom depth and width: no copied YAML with other multiples builds them."""
    pytest.importorskip("ultralytics")
    from netdef.testing.ultralytics_reference import reference_model

    model, sd = reference_model("yolo11n")
    angle = {k.replace(".cv2.", ".cv4.", 1): v[:1] if re.match(r"model\.23\.cv2\.\d\.2\.", k) else v
             for k, v in sd.items() if k.startswith("model.23.cv2.")}  # OBB's cv4: cv2's layers, one output (angle)
    obb = sd | angle
    model.fuse()
    fused = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for weights, said in ((fused, "fused into its convolutions"), (obb, r"model\.23\.cv4 \(36 keys: the extra branch")):
        with pytest.raises(WeightKeyError, match=said) as e:
            define_network("yolo11n", weights, BuildOptions(input_hw=(64, 64)), log=lambda m: None)
        assert "custom depth and width" not in str(e.value)


def test_a_static_size_off_a_yolo_stride_is_named_as_the_option():
    """A YOLO built at a size no multiple of its stride failed at the first Concat whose inputs' sizes differ,
    the hint at the end of a long message: the option's error now, as for a range (the stride recorded by the
    head at the YAML's own size); a P6 model's stride is 64."""
    pytest.importorskip("ultralytics")
    from netdef.testing.ultralytics_reference import reference_model

    sd = reference_model("yolov8n")[1]
    with pytest.raises(OptionError, match=r"^--input-shape 330x330: yolov8n's input height and width must be "
                                          r"multiples of its stride 32 \(330x330 not\), e\.g\. 320x320$"):
        define_network("yolov8n", sd, BuildOptions(input_hw=(330, 330)), log=lambda m: None)
    sd = reference_model("yolov8n-p6")[1]
    with pytest.raises(OptionError, match=r"^--input-shape 352x352: yolov8n6's input height and width must be "
                                          r"multiples of its stride 64 \(352x352 not\), e\.g\. 384x384$"):
        define_network("yolov8n-p6", sd, BuildOptions(input_hw=(352, 352)), log=lambda m: None)


def test_weights_of_a_custom_depth_and_width_say_how_to_build_them(tmp_path):
    """tensorrtx's `c gd gw` scale: weights no scale of the family fits, keys of the family's form: the error says
    to copy the family YAML with depth_multiple / width_multiple, and that copy builds them."""
    pytest.importorskip("ultralytics")
    import yaml
    from ultralytics.nn.tasks import DetectionModel

    from netdef.spec import resolve_arch

    path, _ = resolve_arch("yolov8n")
    cfg = yaml.safe_load(path.read_text())
    cfg.pop("scales")
    cfg.update(depth_multiple=0.17, width_multiple=0.1875)
    sd = {k: v.numpy() for k, v in DetectionModel(dict(cfg), verbose=False).state_dict().items()}
    with pytest.raises(WeightKeyError, match=r"If the weights are of a custom depth and width \(tensorrtx's `c gd "
                                             r"gw`, say\): copy yolov8\.yaml with `depth_multiple: gd`"):
        define_network("yolov8n", sd, BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    (tmp_path / "yolov8c.yaml").write_text(yaml.safe_dump(cfg))
    net = define_network(tmp_path / "yolov8c.yaml", sd, BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    assert net.check_keys() == []


def test_a_lost_tensor_or_another_input_channel_count_is_not_taken_for_a_custom_depth_and_width():
    """One running_var missing (no other depth drops part of a module) gets no `c gd gw` advice; a first convolution
    of one input channel is named as such, with the input a copy of the family YAML needs."""
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel

    sd = {k: v.numpy() for k, v in DetectionModel("yolov8n.yaml", verbose=False).state_dict().items()}
    lost = {k: v for k, v in sd.items() if k != "model.1.bn.running_var"}
    with pytest.raises(WeightKeyError, match=r"missing:\n  model\.1\.bn\.running_var") as e:
        define_network("yolov8n", lost, BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    assert "custom depth and width" not in str(e.value)
    gray = dict(sd, **{"model.0.conv.weight": sd["model.0.conv.weight"][:, :1]})
    with pytest.raises(WeightKeyError, match=r"The weights' model\.0\.conv\.weight takes 1 input channel\(s\), "
                                             r"yolov8n's input 3: build a copy of yolov8\.yaml with `input: \{name: "
                                             r"images, shape: \[1, 640, 640\]\}`") as e:
        define_network("yolov8n", gray, BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    assert "custom depth and width" not in str(e.value)
    wider = dict(sd, **{"model.0.conv.weight": np.concatenate([sd["model.0.conv.weight"]] * 2),
                        "model.0.bn.weight": np.concatenate([sd["model.0.bn.weight"]] * 2)})  # 32 outputs, 3 inputs
    with pytest.raises(WeightKeyError) as e:
        define_network("yolov8n", wider, BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    assert "input channel" not in str(e.value) and "custom depth and width" in str(e.value)


def test_sizes_that_differ_by_more_than_rounding_get_no_stride_advice():
    """Inception's branches 17x17 and 15x15 (a padding mistake, not an input size that halves unevenly): the
    error points at padding, stride and kernel size only."""
    from netdef.network import Network

    net = Network({})
    x = net.input("input", (1, 8, 35, 35))
    b = net.pool(net.pool(net.pool(x, "max", 3, 1, name="p"), "max", 3, 1, name="q"), "max", 3, 2, name="b")
    a = net.pool(x, "max", 3, 2, name="a")
    with pytest.raises(SpecError) as e:
        net.concat([a, b], "Mixed_6a")
    assert "check the padding, stride and kernel size" in str(e.value) and "stride (the product" not in str(e.value)
    assert "halves evenly" not in str(e.value)


@pytest.mark.parametrize("arch, make", [("resnet18", "resnet18"), ("mobilenet_v2", "mobilenet_v2")])
def test_a_zoo_classifier_takes_its_class_count_from_the_weights(arch, make):
    """torchvision classifiers trained for 10 classes need no copied YAML: the Classifier row is sized by the
    weights; `--set nc` must agree with them."""
    import torchvision

    sd = {k: v.numpy() for k, v in getattr(torchvision.models, make)(num_classes=10).state_dict().items()}
    net = define_network(arch, sd, BuildOptions(), log=lambda m: None)
    assert tuple(net.definition.get_output(0).shape) == (-1, 10) and net.key_report() == ({}, [])
    assert tuple(define_network(arch, sd, BuildOptions(params={"nc": 10}), log=lambda m: None)
                 .definition.get_output(0).shape) == (-1, 10)
    with pytest.raises(WeightKeyError, match=r"--set nc=1000, but the weights were trained with nc=10"):
        define_network(arch, sd, BuildOptions(params={"nc": 1000}), log=lambda m: None)


def test_a_family_file_of_one_scale_builds_that_scale(tmp_path):
    """A `scales:` map of one entry (Ultralytics' rtdetr-l.yaml has only `l`) is that scale, as Ultralytics takes
    it: the error 'build one of its scales by name (rtdetr-l)' led to the same file and the same error."""
    text = load_spec("yolov5s").path.read_text("utf-8")
    start = text.index("scales:")
    end = text.index("\n", text.index("x:", start))
    one = text[:start] + "scales:\n  m: [0.67, 0.75]" + text[end:]
    (tmp_path / "mine-m.yaml").write_text(one, "utf-8")
    spec = load_spec(str(tmp_path / "mine-m.yaml"))
    assert spec.rows[0].args[0] == load_spec("yolov5m").rows[0].args[0] == 48


def test_weights_of_another_row_layout_say_so_not_custom_width():
    """Weights of a YOLOv8n with a row inserted (rows to model.23; a P2 head's alike) built as yolov8n failed at a
    later row with the `c gd gw` advice; they are named as another layout, with both row counts. A row of a block of
    one's own whose weights do not fit gets no such advice either (the block's channels are its own)."""
    pytest.importorskip("ultralytics")
    import yaml
    from ultralytics.nn.tasks import DetectionModel

    from netdef.spec import parse_spec, resolve_arch

    cfg = yaml.safe_load(resolve_arch("yolov8n")[0].read_text())
    more = dict(cfg, scale="n", backbone=[*cfg["backbone"][:2], [-1, 1, "Conv", [128, 3, 1]], *cfg["backbone"][2:]])

    def shifted(frm):  # the rows after the one inserted at 2 move down one
        return [shifted(f) for f in frm] if isinstance(frm, list) else frm + 1 if frm >= 2 else frm

    more["head"] = [[shifted(r[0]), *r[1:]] for r in cfg["head"]]
    sd = {k: v.numpy() for k, v in DetectionModel(more, verbose=False).state_dict().items()}
    with pytest.raises(WeightKeyError, match=r"The weights' rows run to model\.23 \(24 rows\), yolov8n's to "
                                             r"model\.22: they are of another layout") as e:
        define_network("yolov8n", sd, BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    assert "custom depth and width" not in str(e.value)
    plain = {k: v.numpy() for k, v in DetectionModel(dict(cfg, scale="n"), verbose=False).state_dict().items()}
    from netdef.blocks.yolov8 import c2f
    from netdef.registry import BLOCKS, block

    block("WideC2f", width_args=("c2",), repeat_arg="n")(lambda net, x, prefix, c2, shortcut=False, n=1:
                                                         c2f(net, x, prefix, 2 * c2, n=n, shortcut=shortcut))
    cfg["head"][2][2] = "WideC2f"  # row 12: a block of one's own, of its own channels
    try:
        with pytest.raises(WeightKeyError, match=r"row 12 \(WideC2f\)") as e:
            define_network(parse_spec(yaml.safe_dump(cfg), "yolov8n"), plain, BuildOptions(input_hw=(64, 64)),
                           log=lambda m: None)
    finally:
        BLOCKS.pop("WideC2f", None)
    assert "custom depth and width" not in str(e.value) and "rows run to" not in str(e.value)
