"""Network core: BatchNorm folding numerics, key accounting, size checks."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from netdef.errors import NetdefError, WeightKeyError
from netdef.network import Network, fold_batchnorm
from netdef.spec import build_network, load_spec, parse_spec


def test_fold_batchnorm_matches_torch_conv_bn():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 7, 3, padding=1, bias=True)
    bn = torch.nn.BatchNorm2d(7, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.2, 3.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.3)
    bn.eval()
    x = torch.randn(2, 5, 11, 9)
    ref = bn(conv(x)).detach().numpy()
    w, b = fold_batchnorm(conv.weight.detach().numpy(), conv.bias.detach().numpy(),
                          *(t.detach().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)),
                          eps=1e-3)
    out = torch.nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), padding=1).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # a wrong eps is visible: the check above is sensitive to it
    w2, b2 = fold_batchnorm(conv.weight.detach().numpy(), conv.bias.detach().numpy(),
                            *(t.detach().numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)),
                            eps=1.0)
    out2 = torch.nn.functional.conv2d(x, torch.from_numpy(w2), torch.from_numpy(b2), padding=1).numpy()
    assert np.abs(out2 - ref).max() > 1e-3


@pytest.mark.parametrize("change, message", [
    ({"var": -1.5}, r"^'m.bn.running_var'\[2\] is -1.5: running_var \+ eps \(1e-05\) must be positive"),
    ({"var": -2e-5}, r"^'m.bn.running_var'\[2\] is -2e-05: running_var \+ eps"),
    ({"gamma": 1e38, "var": 0.0}, r"^m.bn folded into the convolution's weight: the value at \[2, 0, 0, 0\] is "
                                  r"[\d.]+e\+\d+, not a finite float32 .*: an engine of it computes NaN or inf"),
])
def test_batchnorm_weights_that_fold_to_nan_or_inf_are_refused(change, message):
    """A negative running_var (sqrt of it: NaN) or a scale beyond float32 built an engine of NaN or inf with exit 0
    (numpy's RuntimeWarning the only sign); folding refuses them, naming the BatchNorm's key, in a conv and alone."""
    c = 4
    gamma, beta, mean, var = np.ones(c), np.zeros(c), np.zeros(c), np.ones(c)
    gamma[2], var[2] = change.get("gamma", 1.0), change.get("var", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning on the way to the error
        with pytest.raises(WeightKeyError, match=message) as e:
            fold_batchnorm(np.ones((c, 3, 1, 1), np.float32), None, gamma, beta, mean, var, eps=1e-5, bn="m.bn")
    if "var" in change and "gamma" not in change:
        assert e.value.key == "m.bn.running_var"
        weights = {"m.bn.weight": gamma, "m.bn.bias": beta, "m.bn.running_mean": mean, "m.bn.running_var": var}
        net = Network(weights)
        with pytest.raises(WeightKeyError, match=message):
            net.batchnorm(net.input("x", (1, c, 5, 5)), "m.bn")


def test_a_running_var_just_below_zero_folds_as_pytorch_computes_it():
    """Caffe and darknet conversions store running_var values such as -9.9999e-06, which eps (1e-5) keeps
    positive: PyTorch computes with them, and so does the fold (only running_var + eps <= 0 is refused)."""
    c = 3
    gamma, beta, mean = np.full(c, 0.5), np.zeros(c), np.zeros(c)
    var = np.array([1.0, -5e-06, 0.25])  # + eps: 5e-6 (a value nearer -eps leaves digits to float32's rounding)
    bn = torch.nn.BatchNorm2d(c, eps=1e-5).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma)), bn.running_var.copy_(torch.from_numpy(var))
    x = torch.ones(1, c, 1, 1)
    w, b = fold_batchnorm(np.ones((c, c, 1, 1), np.float32) * np.eye(c)[:, :, None, None], None, gamma, beta, mean,
                          var, eps=1e-5)
    got = torch.nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b)).detach().numpy()
    np.testing.assert_allclose(got, bn(x).detach().numpy(), rtol=1e-5)


def _weights(model):
    return {k: v.detach().numpy().ravel().astype(np.float32) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def resnet18_weights():
    import torchvision

    return _weights(torchvision.models.resnet18())


def _define(weights):
    net = Network(weights, source="test.wts")
    build_network(load_spec("resnet18"), net)
    return net


def test_all_keys_used(resnet18_weights):
    net = _define(resnet18_weights)
    assert net.check_keys(strict=True) == []
    assert not any(k.endswith("num_batches_tracked") for k in net.used)


def test_missing_key_is_reported_with_its_row(resnet18_weights):
    w = dict(resnet18_weights)
    del w["layer2.1.bn2.running_var"]
    net = _define(w)
    with pytest.raises(WeightKeyError) as e:
        net.check_keys()
    msg = str(e.value)
    assert "layer2.1.bn2.running_var" in msg and "missing" in msg
    assert "resnet18.yaml" in msg and "ResLayer" in msg  # names the YAML row that asked for it


def test_extra_key_is_reported_unless_not_strict(resnet18_weights):
    w = dict(resnet18_weights, **{"head.extra.weight": np.zeros(3, np.float32)})
    net = _define(w)
    with pytest.raises(WeightKeyError, match="head.extra.weight"):
        net.check_keys(strict=True)
    assert net.check_keys(strict=False) == ["head.extra.weight"]
    net = _define(dict(resnet18_weights, **{"fc.scale": np.zeros(3, np.float32)}))  # a module the network reads
    with pytest.raises(WeightKeyError, match=r"(?s)fc\.scale.*\(netdef build --no-strict, BuildOptions\(strict=False\) "
                                             r"in Python, allows unused keys\)"):
        net.check_keys(strict=True)  # the option's name in both APIs, not a bare `strict=False`


def test_wrong_size_names_key_and_row(resnet18_weights):
    w = dict(resnet18_weights)
    w["layer1.0.conv1.weight"] = w["layer1.0.conv1.weight"][:-1]
    with pytest.raises(WeightKeyError) as e:
        _define(w)
    msg = str(e.value)
    assert "layer1.0.conv1.weight" in msg and "36863" in msg and "(64, 64, 3, 3)" in msg
    assert "resnet18.yaml:" in msg and "row 2" in msg


def test_a_misspelt_module_prefix_names_the_module_the_file_has(resnet18_weights):
    """The architecture reads layer3.* and the file has exactly those keys as layer_3.*: the error says so, with
    the row that asked, rather than 'the weights are of another architecture'."""
    weights = {k.replace("layer3.", "layer_3.", 1): v for k, v in resnet18_weights.items()}
    net = Network(weights)
    build_network(load_spec("resnet18"), net)
    with pytest.raises(WeightKeyError) as e:
        net.check_keys()
    hint = str(e.value).splitlines()[-1]
    assert hint.startswith("The file has no module layer3 but an unused module layer_3 with exactly its ")
    assert "resnet18.yaml:" in hint and "another architecture" not in str(e.value)
    import torchvision  # weights of another architecture whose classifier happens to match: not a misspelling

    other = {k: v.numpy() for k, v in torchvision.models.densenet121().state_dict().items()}
    net = Network(other)
    build_network(load_spec("resnet18"), net)
    with pytest.raises(WeightKeyError) as e:
        net.check_keys()
    assert "misspelt" not in str(e.value) and "The weights are of another architecture" in str(e.value)


def test_a_misspelt_module_in_a_repeated_block_names_its_twin_at_the_same_place(resnet18_weights):
    """Every BasicBlock's bn1 is norm1 in the file (a block reading a misspelt key): each missing module has eight
    unused twins with its keys, one of them at its own place (one name part apart); the hint names that one, not
    'the weights are of another architecture'."""
    weights = {k.replace(".bn1.", ".norm1."): v for k, v in resnet18_weights.items()}
    net = Network(weights)
    build_network(load_spec("resnet18"), net)
    with pytest.raises(WeightKeyError) as e:
        net.check_keys()
    hint = str(e.value).splitlines()[-1]
    assert hint.startswith("The file has no module layer1.0.bn1 but an unused module layer1.0.norm1 with exactly its "
                           "4 key(s) (and 7 more such module(s)): a misspelt module prefix (")
    assert "resnet18.yaml:10: row 2 (ResLayer)" in hint
    assert "another architecture" not in str(e.value)


def test_two_renamed_sibling_modules_are_named_as_such_not_another_architecture(resnet18_weights):
    """Every BasicBlock's bn1 and bn2 read as n1 and n2 (a block naming its layers otherwise than the module): each
    missing module has two unused siblings of its keys, which keys alone cannot pair; the hint named the weights
    'of another architecture'. It now names the modules the file has beside them."""
    net = _define({k.replace(".bn1.", ".xa.").replace(".bn2.", ".xb."): v for k, v in resnet18_weights.items()})
    with pytest.raises(WeightKeyError) as e:
        net.check_keys()
    hint = str(e.value).splitlines()[-1]
    assert hint.startswith("The file has no modules layer1.0.bn1, layer1.0.bn2, ") and "another architecture" not in \
        str(e.value), hint
    assert "but unused modules layer1.0.xa, layer1.0.xb, " in hint and hint.endswith("Name the modules as the file does")


def test_a_row_prefix_misspelt_in_a_part_other_rows_share_names_the_module_the_file_has(tmp_path):
    """A row reads feature.1.* where the file has features.1.* (the other rows read features.0.*): the missing
    module is feature, the unused one features.1; the hint pairs feature.1 with features.1 and names the row,
    rather than 'the weights are of another architecture'."""
    yaml = tmp_path / "two.yaml"
    yaml.write_text("name: two\ninput: {name: input, shape: [3, 8, 8]}\nlayers:\n"
                    "  - [-1, 1, Conv2d, {c2: 4, k: 1}, features.0]\n"
                    "  - [-1, 1, Conv2d, {c2: 4, k: 1}, feature.1]\n")
    weights = {"features.0.weight": np.ones((4, 3, 1, 1), np.float32), "features.0.bias": np.ones(4, np.float32),
               "features.1.weight": np.ones((4, 4, 1, 1), np.float32), "features.1.bias": np.ones(4, np.float32)}
    net = Network(weights)
    build_network(load_spec(str(yaml)), net)
    with pytest.raises(WeightKeyError) as e:
        net.check_keys()
    assert str(e.value).splitlines()[-1] == (
        "The file has no module feature.1 but an unused module features.1 with exactly its 2 key(s): a misspelt "
        f"module prefix ({yaml}:5: row 1 (Conv2d))? Name the module as the file does")


def test_units_of_a_repeated_row_past_the_files_or_the_networks_are_a_repeat_count_not_another_architecture(
        resnet18_weights):
    """A ResLayer row of one unit more than the file's (layer2.1 missing, after layer2.0) or one fewer (an unused
    layer2.2 after layer2.1): the hint asks about the row's number (or a missing row), naming the row where it
    asked for keys, rather than 'the weights are of another architecture'."""
    for weights, needle in [
            ({k: v for k, v in resnet18_weights.items() if not k.startswith("layer2.1.")},
             r"The missing keys are whole units layer2\.1 after units the file has: a row too many, or a row's "
             r"number \(repeats\) larger than the model's \(.*resnet18\.yaml:\d+: row \d+ \(ResLayer\)\)\?"),
            (resnet18_weights | {k.replace("layer2.1.", "layer2.2."): v for k, v in resnet18_weights.items()
                                 if k.startswith("layer2.1.")},
             r"The unused keys are whole units layer2\.2 after units the architecture reads: a row missing, or a "
             r"row's number \(repeats\) smaller than the model's\?")]:
        net = Network(weights)
        build_network(load_spec("resnet18"), net)
        with pytest.raises(WeightKeyError, match=needle) as e:
            net.check_keys()
        assert "another architecture" not in str(e.value)


def test_a_row_repeating_a_block_without_a_repeat_argument_over_the_files_next_modules_says_so(tmp_path):
    """[-1, 2, Conv2d, ..., features.1] builds features.1.0 and features.1.1 where the file has features.1 and
    features.2: the hint pairs them and says to give each module its own row, naming the row, rather than 'the
    weights are of another architecture'."""
    yaml = tmp_path / "seq.yaml"
    yaml.write_text("name: seq\ninput: {name: input, shape: [4, 8, 8]}\nlayers:\n"
                    "  - [-1, 1, Conv2d, {c2: 4, k: 1}, features.0]\n"
                    "  - [-1, 2, Conv2d, {c2: 4, k: 1}, features.1]\n")
    weights = {f"features.{i}.{k}": np.ones((4, 4, 1, 1) if k == "weight" else 4, np.float32)
               for i in range(3) for k in ("weight", "bias")}
    net = Network(weights)
    build_network(load_spec(str(yaml)), net)
    with pytest.raises(WeightKeyError) as e:
        net.check_keys()
    assert str(e.value).splitlines()[-1] == (
        "The missing modules are the file's next ones under other names (features.1.0 = features.1, features.1.1 = "
        f"features.2): a row whose number repeats a block without a repeat argument ({yaml}:5: row 1 (Conv2d)) names "
        "the repeats prefix.0, prefix.1, ...; give each module its own row (number 1)")


def test_a_row_missing_from_the_yaml_is_named_at_the_next_rows_shape_error(resnet18_weights):
    """A YAML that leaves out layer2's row: layer3's row gets layer1's 64 channels and its weights do not fit. The
    error, at layer3's row, names layer2 (the file's keys just before layer3's, read by no row) as a likely missing
    row; a shape error of weights of another architecture (resnet50's in resnet18) gets no such line."""
    import torchvision

    text = load_spec("resnet18").path.read_text()
    spec = parse_spec("\n".join(line for line in text.splitlines() if "layer2]" not in line), "resnet18")
    with pytest.raises(WeightKeyError, match=r"^<resnet18>:\d+: row 3 \(ResLayer\): test\.wts: 'layer3\.0\.conv1\.weight' "
                                            r"has 294912 values") as e:
        build_network(spec, Network(resnet18_weights, source="test.wts"))
    assert str(e.value).splitlines()[-1] == (
        "The weights' layer2.0.conv1, layer2.0.bn1, layer2.0.conv2, layer2.0.bn2, ... (25 key(s) just before "
        "'layer3.0.conv1.weight' in the file) are read by no row before row 3 and named by none after it: is their "
        "row missing from the YAML before row 3? (the rows after a missing one get its input, and their `from` "
        "indices shift)")
    with pytest.raises(WeightKeyError) as e:
        build_network(load_spec("resnet18"), Network(_weights(torchvision.models.resnet50()), source="r50.wts"))
    assert "missing from the YAML" not in str(e.value)


def test_rows_counted_in_their_key_prefixes_after_a_missing_row_say_so():
    """Ultralytics-style rows (prefixes model.N counted by the YAML): leaving a row out makes each later row read the
    keys of the module before its own, which the file has under other names; the hint says each missing key is the
    file's next module's and asks whether a row is missing, rather than 'the weights are of another architecture'."""
    def conv(c2, c1):
        return {"conv.weight": np.ones((c2, c1, 1, 1), np.float32), "conv.bias": np.ones(c2, np.float32)}

    def fc(c2, c1):
        return {"fc.weight": np.ones((c2, c1), np.float32), "fc.bias": np.ones(c2, np.float32)}

    weights = {f"model.{i}.{k}": v for i, part in enumerate([conv(4, 3), fc(4, 4), conv(4, 4), fc(4, 4)])
               for k, v in part.items()}
    spec = parse_spec("input: {name: x, shape: [3, 1, 1]}\nlayers:\n  - [-1, 1, ConvBnAct, {c2: 4, conv: conv}]\n"
                      "  - [-1, 1, ConvBnAct, {c2: 4, conv: conv}]\n  - [-1, 1, Flatten, {}]\n", "m")
    net = Network(weights)  # the file's row 1 (model.1.fc) left out of the YAML
    build_network(spec, net)
    with pytest.raises(WeightKeyError) as e:
        net.check_keys()
    assert str(e.value).splitlines()[-1] == (
        "Each missing key is the file's unused key of the next module ('model.1.conv.weight' is the file's "
        "'model.2.conv.weight'): the rows from <m>:4: row 1 (ConvBnAct) on read the keys of the module before "
        "theirs. Is a row missing from the YAML (the file's model.1, or one before it)? The rows after a missing one "
        "also get its input, and their `from` indices shift")


def test_two_rows_swapped_around_a_weightless_one_are_not_called_a_missing_row():
    """The same shifted keys where the file has no key of the first module the rows read short (a Conv and the
    weightless Upsample after it swapped in the YAML): no 'row missing' hint, which would blame every later row."""
    from netdef.network import _shifted_rows_hint

    missing = {"model.10.conv.weight": "row 10", "model.10.bn.weight": "row 10"}
    unused = ["model.11.conv.weight", "model.11.bn.weight"]
    assert _shifted_rows_hint(missing, unused, ["model.9.conv.weight", *unused]) == ""
    assert "Is a row missing" in _shifted_rows_hint(missing, unused, ["model.10.fc.weight", *unused])


def test_fp16_network_is_typed_where_strong_typing_exists(resnet18_weights):
    net = Network(resnet18_weights, precision="fp16")
    build_network(load_spec("resnet18"), net)
    out = net.definition.get_output(0)
    assert out.dtype == net.trt.float32  # outputs stay fp32 for the caller
    conv = next(net.definition.get_layer(i) for i in range(net.definition.num_layers)
                if net.definition.get_layer(i).name == "conv1")
    expected = net.trt.float16 if net.strongly_typed else net.trt.float32
    assert conv.get_output(0).dtype == expected


@pytest.mark.parametrize("creation_flags, builder_flags, strong, flags", [
    (("EXPLICIT_BATCH",), ("FP16", "INT8"), False, 1 << 0),       # 8.6: weak typing, explicit batch asked for
    (("EXPLICIT_BATCH", "STRONGLY_TYPED"), ("FP16",), True, 1 << 1),  # 10.x: strong typing asked for
    (("STRONGLY_TYPED",), (), True, 1 << 0),                        # 11.x: the flag kept for compatibility
    ((), (), True, 0),                                              # a later release without that flag
])
def test_typing_follows_what_this_tensorrt_has(monkeypatch, creation_flags, builder_flags, strong, flags):
    """Strong typing where the STRONGLY_TYPED flag exists or the weak-typing flags are gone (never the weak path
    on a TensorRT that cannot honour it); the creation flag is set only where it exists."""
    from types import SimpleNamespace

    from netdef import trt_api

    fake = SimpleNamespace(__name__="tensorrt", __version__="99.0.0",
                           NetworkDefinitionCreationFlag=SimpleNamespace(**{n: i for i, n in enumerate(creation_flags)}),
                           BuilderFlag=SimpleNamespace(**{n: i for i, n in enumerate(builder_flags)}))
    monkeypatch.setattr(trt_api, "module", lambda: fake)
    trt_api.info.cache_clear()
    try:
        assert trt_api.info().strongly_typed is strong
        made = []
        builder = SimpleNamespace(create_network=lambda f: made.append(f) or "network")
        assert trt_api.create_network(builder) == ("network", strong)
        assert made == [flags]
    finally:
        trt_api.info.cache_clear()


def test_linear_on_pooled_features_is_a_1x1_convolution():
    """Linear on (B, C, 1, 1) runs as a convolution named after the module (bias fused), then flattens."""
    w = {"fc.weight": np.arange(32, dtype=np.float32), "fc.bias": np.ones(4, np.float32)}
    net = Network(w, source="t.wts")
    y = net.linear(net.input("x", (-1, 8, 1, 1)), "fc", 4)
    assert tuple(y.shape) == (-1, 4)
    layers = [net.definition.get_layer(i) for i in range(net.definition.num_layers)]
    T = net.trt.LayerType
    assert [(l.name, l.type) for l in layers if l.type != T.CAST] == [("fc", T.CONVOLUTION),
                                                                      ("fc/flatten", T.SHUFFLE)]
    assert net.check_keys() == []
    net2 = Network(w, source="t.wts")
    with pytest.raises(NetdefError, match=r"fc: Linear acts on the last dimension \(2\) of \(-1, 8, 2, 2\), but its "
                                          r"weight takes the 8 channels: add a Flatten or GlobalAvgPool row before it, "
                                          r"or permute the channels last"):
        net2.linear(net2.input("x", (-1, 8, 2, 2)), "fc", 4)
    net3 = Network(w, source="t.wts")  # channels last (B, H, W, C), as torch's Linear over the last dimension
    y = net3.linear(net3.permute(net3.input("x", (-1, 8, 2, 2)), "to_last", (0, 2, 3, 1)), "fc", 4)
    assert tuple(y.shape) == (-1, 2, 2, 4) and net3.check_keys() == []



# ---------------------------------------------------------------- fp16 range, input shape

TINY = """name: tiny
input: {name: x, shape: SHAPE}
output: y
layers:
  - [-1, 1, ConvBnAct, {c2: 4, k: 3, bn: bn, eps: 0.0}, stem]
  - [-1, 1, GlobalAvgPool, {}, pool]
  - [-1, 1, Linear, {c2: 2}, fc]
"""


def tiny_yaml(tmp_path, shape="[3, 8, 8]"):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.replace("SHAPE", shape))
    return p


def tiny_weights(**big):
    w = {"stem.weight": np.full((4, 3, 3, 3), 0.1, np.float32), "stem.bias": np.zeros(4, np.float32),
         "stem.bn.weight": np.ones(4, np.float32), "stem.bn.bias": np.zeros(4, np.float32),
         "stem.bn.running_mean": np.zeros(4, np.float32), "stem.bn.running_var": np.ones(4, np.float32),
         "fc.weight": np.ones((2, 4), np.float32), "fc.bias": np.zeros(2, np.float32)}
    for key, value in big.items():
        w[key.replace("__", ".")].flat[1] = value
    return w


@pytest.mark.parametrize("key, value, named", [
    ("stem__weight", 1e6, "'stem.weight' reaches 1e+06 in magnitude"),
    ("stem__weight", -7e4, "'stem.weight' reaches 70000 in magnitude"),
    ("stem__bn__running_var", 1e-12, "'stem.weight' reaches 100000 in magnitude"),  # grows when BN is folded in
    ("fc__bias", 3e5, "'fc.bias' reaches 300000 in magnitude"),
])
def test_fp16_overflow_names_the_key_and_its_magnitude(tmp_path, key, value, named):
    """Beyond 65504 a weight is inf in fp16: an error naming it, not numpy's overflow warning and an inf engine."""
    from netdef.build import BuildOptions, define_network

    w = tiny_weights(**{key: value})
    assert define_network(tiny_yaml(tmp_path), w, BuildOptions(precision="fp32"), log=print).check_keys() == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning escapes
        with pytest.raises(WeightKeyError) as e:
            define_network(tiny_yaml(tmp_path), w, BuildOptions(precision="fp16"), log=print)
    msg = str(e.value)
    assert named in msg and "in-memory weights" in msg and "tiny.yaml:" in msg
    assert "beyond fp16's largest value 65504" in msg and "--precision fp32" in msg and "rescale" in msg


def test_fp16_range_is_checked_where_tensorrt_casts_the_weights(tmp_path):
    """TensorRT 8.6 (weak typing) gets float32 weights and casts them itself; int8 builds check too. Values at the
    limit and non-finite ones (refused elsewhere) pass; weights kept in float32 on purpose (Q/DQ) are checked."""
    net = Network({}, precision="fp16", source="w.wts")
    net.strongly_typed, net.dtype = False, np.float32  # as on TensorRT 8.6
    with pytest.raises(WeightKeyError, match=r"w.wts: 'a.weight' reaches 65505 in magnitude"):
        net.keep(np.array([1.0, -65505.0], np.float32), "a.weight")
    with pytest.raises(WeightKeyError, match=r"'q.weight' reaches 1e\+40 .* the int8 engine"):
        Network({}, precision="int8").keep(np.array([1e40]), "q.weight", np.float32)
    assert net.keep(np.array([65504.0, -65504.0, np.inf, np.nan], np.float32), "ok.weight") is not None
    assert net._keepalive[-1].dtype == np.float32
    assert Network({}, precision="fp32").keep(np.array([1e6], np.float32), "fp32.weight") is not None


def test_int8_quantized_weights_are_checked_too(tmp_path):
    from netdef.build import BuildOptions, define_network
    from netdef.int8.quantize import Quantizer

    w = tiny_weights(stem__weight=1e6)
    with pytest.raises(WeightKeyError, match=r"'stem.weight' reaches 1e\+06 in magnitude"):
        define_network(tiny_yaml(tmp_path), w, BuildOptions(precision="int8"), log=print,
                       quantizer=Quantizer({"stem": 1.0, "fc": 1.0}))
    net = define_network(tiny_yaml(tmp_path), tiny_weights(), BuildOptions(precision="int8"), log=print,
                         quantizer=Quantizer({"stem": 1.0, "fc": 1.0}))
    assert net.check_keys() == []


@pytest.mark.parametrize("shape, shown, example", [
    ("[8, 8]", "[8, 8]", "[1, 8, 8]"),
    ("[1, 3, 8, 8]", "[1, 3, 8, 8]", "[1, 8, 8]"),  # the batch included
    ("[64]", "[64]", "[1, H, W]"),
    ("[3, 64]", "[3, 64]", "[1, H, W]"),  # C and one size: no sizes that would not be the user's
])
def test_an_input_without_channels_is_not_a_weight_mismatch(tmp_path, shape, shown, example):
    from netdef.build import BuildOptions, define_network
    from netdef.errors import SpecError

    with pytest.raises(SpecError) as e:
        define_network(tiny_yaml(tmp_path, shape), tiny_weights(), BuildOptions(), log=print)
    msg = str(e.value)
    assert f"the input shape (the YAML's input: shape) is {shown}, but a convolution or BatchNorm needs [C, H, W]" \
        in msg
    assert f"input: {{shape: {example}]}}"[:-2] in msg and "tiny.yaml:5: row 0" in msg
    assert "values but the architecture expects" not in msg


def test_a_shaped_weight_of_another_layout_is_refused_not_reshaped():
    """A state_dict-like mapping keeps its arrays' shapes: one with the expected number of values in another layout
    (a transposed Linear, a conv of swapped channels) is an error naming it, not reshaped into scrambled values;
    flat arrays (a .wts) and shapes that differ only in size-1 dims ((C, 1, 1) layer scales) are read as before."""
    spec = parse_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "output": "y",
                       "layers": [[-1, 1, "Conv2d", {"c2": 6, "k": 3}, "conv"],
                                  [-1, 1, "LayerScale", {}, "ls"],
                                  [-1, 1, "GlobalAvgPool", {}, "pool"], [-1, 1, "Linear", {"c2": 4}, "fc"]]}, "tiny")
    good = {"conv.weight": np.ones((6, 3, 3, 3), np.float32), "conv.bias": np.zeros(6, np.float32),
            "ls.gamma": np.ones((6, 1, 1), np.float32), "fc.weight": np.ones((4, 6), np.float32),
            "fc.bias": np.zeros(4, np.float32)}

    def define(weights):
        build_network(spec, Network(weights, source="w.wts"))

    define(good)
    define({k: v.ravel() for k, v in good.items()})
    for key, bad, shown in (("fc.weight", np.ones((6, 4), np.float32), "(6, 4) but the architecture expects (4, 6)"),
                            ("conv.weight", np.ones((3, 6, 3, 3), np.float32), "(3, 6, 3, 3)")):
        with pytest.raises(WeightKeyError, match="another layout") as e:
            define({**good, key: bad})
        assert e.value.key == key and f"w.wts: '{key}' has shape {shown}" in str(e.value)


@pytest.mark.parametrize("change, error, message", [
    ({"fc.bias": np.array(["a", "b"])}, WeightKeyError, r"^in-memory weights: 'fc.bias' is an array of <U1: "
                                                        r"weights are real numbers"),
    ({"fc.bias": np.array([object(), object()])}, WeightKeyError, r"'fc.bias' is an array of object"),
    ({"fc.bias": np.array([1 + 2j, 0j])}, WeightKeyError, r"'fc.bias' is an array of complex128"),
    ({"fc.bias": torch.zeros(2, dtype=torch.complex64)}, WeightKeyError, r"'fc.bias' is a tensor of torch.complex64"),
    ({"fc.bias": None}, WeightKeyError, r"'fc.bias' is None: weights are real numbers"),
    ({3: np.zeros(2, np.float32)}, WeightKeyError, r"in-memory weights: key 3 \(int\): weight keys are strings"),
])
def test_weights_that_are_no_numbers_are_named(tmp_path, change, error, message):
    """A mapping's value that is no array of real numbers, or a key that is no string, is an error naming it (was
    numpy's TypeError or ValueError, a sort's TypeError, or a complex array cast silently to its real part)."""
    from netdef.build import define_network

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy ComplexWarning either
        with pytest.raises(error, match=message) as e:
            define_network(tiny_yaml(tmp_path), {**tiny_weights(), **change}, log=print)
    assert "\n" not in str(e.value)
    define_network(tiny_yaml(tmp_path), {**tiny_weights(), "fc.bias": torch.zeros(2, dtype=torch.int64)}, log=print)


def test_weights_that_are_no_mapping_or_path_say_what_weights_are(tmp_path):
    """A torch module (not its state_dict), a list or None as weights is an OptionError saying what weights are, from
    define_network, build_engine and verify alike (was pathlib's TypeError)."""
    from netdef.build import build_engine, define_network
    from netdef.errors import OptionError
    from netdef.verify import verify

    module = torch.nn.Linear(2, 2)
    calls = [lambda w: define_network(tiny_yaml(tmp_path), w, log=print),
             lambda w: build_engine(tiny_yaml(tmp_path), w, tmp_path / "t.engine", log=print),
             lambda w: verify(tiny_yaml(tmp_path), w, module, cpu=True, log=print)]
    for call in calls:
        with pytest.raises(OptionError, match=r"weights: expected a .wts path or a mapping key -> array \(a state_dict"
                                              r"\), got Linear \(a torch module: pass its state_dict\(\)\)"):
            call(module)
        for other, name in (([1.0], "list"), (None, "NoneType")):
            with pytest.raises(OptionError, match=f"got {name}$"):
                call(other)
    assert not (tmp_path / "t.engine").exists()


def test_nan_and_infinite_in_memory_weights_are_refused_as_in_a_wts_file(tmp_path):
    """A state_dict (a diverged training run's, say) with NaN or inf is refused naming the key and index, as a .wts
    file's are, by define_network, build_engine and verify alike; NonFiniteAllowed (what read_wts(...,
    allow_nonfinite=True) returns) takes them as they are."""
    from netdef.build import build_engine, define_network
    from netdef.verify import verify
    from netdef.wts import NonFiniteAllowed, read_wts, write_wts

    good = tiny_weights()
    key = next(iter(good))
    for bad_value, shown in ((np.nan, "nan"), (np.inf, "inf"), (-1e39, r"-1e\+39 \(beyond float32's range\)")):
        bad = dict(good)
        bad[key] = np.array(good[key], np.float64).copy()
        bad[key].reshape(-1)[2] = bad_value
        calls = [lambda w: define_network(tiny_yaml(tmp_path), w, log=print),
                 lambda w: build_engine(tiny_yaml(tmp_path), w, tmp_path / "t.engine", log=print),
                 lambda w: verify(tiny_yaml(tmp_path), w, torch.nn.Identity(), cpu=True, log=print)]
        for call in calls:
            with pytest.raises(WeightKeyError, match=rf"in-memory weights: '{key}' holds {shown} at index 2: an "
                                                     r"engine built from it outputs NaN or inf.*NonFiniteAllowed"):
                call(bad)
    bad[key].reshape(-1)[2] = np.nan
    define_network(tiny_yaml(tmp_path), NonFiniteAllowed(bad), log=print)  # meant: taken as it is
    write_wts(tmp_path / "nan.wts", bad, allow_nonfinite=True)
    read = read_wts(tmp_path / "nan.wts", allow_nonfinite=True)
    assert isinstance(read, NonFiniteAllowed) and np.isnan(read[key][2])
    define_network(tiny_yaml(tmp_path), read, log=print)
    with pytest.raises(WeightKeyError, match="does not fit the PyTorch model"):  # past the network's definition,
        verify(tiny_yaml(tmp_path), read, torch.nn.Identity(), cpu=True, log=print)  # which converts them again
    assert not (tmp_path / "t.engine").exists()


def test_a_state_dict_s_tensors_are_converted_once_per_build(tmp_path, monkeypatch):
    """build_engine, define_network and verify hash in-memory weights and define the network from one conversion
    and one NaN/inf check of each tensor (a torch tensor copied off its device once, not once to hash and again to
    build)."""
    import netdef.define
    from netdef.build import build_engine, define_network
    from netdef.verify import verify

    converted, checked = [], []
    real = netdef.define.first_nonfinite
    monkeypatch.setattr(netdef.define, "first_nonfinite", lambda *a: checked.append(1) or real(*a))

    class Counted(torch.Tensor):  # a tensor that counts its conversions to numpy
        def numpy(self, *args, **kwargs):
            converted.append(1)
            return super().numpy(*args, **kwargs)

    def weights():
        return {k: torch.from_numpy(v).as_subclass(Counted) for k, v in tiny_weights().items()}

    n = len(tiny_weights())
    define_network(tiny_yaml(tmp_path), weights(), log=print)
    assert (len(converted), len(checked)) == (n, n)
    converted.clear(), checked.clear()
    build_engine(tiny_yaml(tmp_path), weights(), tmp_path / "t.engine", log=print)
    assert (len(converted), len(checked)) == (n, n) and (tmp_path / "t.engine").is_file()
    converted.clear(), checked.clear()
    with pytest.raises(WeightKeyError, match="does not fit the PyTorch model"):  # past the network's definition
        verify(tiny_yaml(tmp_path), weights(), torch.nn.Identity(), cpu=True, log=print)
    assert (len(converted), len(checked)) == (n, n)


def test_define_network_checks_its_options(tmp_path):
    """define_network (the Python API's network alone) checks its BuildOptions as build_engine does: an input size of
    0 was a layer TensorRT rejected, a dict of options an AttributeError, a list of params an unknown '--set'."""
    from netdef.build import BuildOptions, define_network
    from netdef.errors import OptionError

    for opts, message in ((BuildOptions(input_hw=(0, 8)), r"input shape \(0, 8\): expected \(H, W\)"),
                          ({"precision": "fp16"}, r"opts \{'precision': 'fp16'\}: expected a netdef.options"),
                          (BuildOptions(params=[("thr", 0.5)]), r"params \[\('thr', 0.5\)\]: expected a dict")):
        with pytest.raises(OptionError, match=message):
            define_network(tiny_yaml(tmp_path), tiny_weights(), opts, log=print)


def test_a_missing_bias_of_a_module_made_without_one_says_how_to_leave_it_out():
    """nn.Conv2d(..., bias=False) built by a Conv2d row (bias defaults to True, as torch's): the missing bias is named
    with what to do (bias: false), not only listed."""
    from netdef.build import define_network

    def spec(bias):
        return parse_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "output": "y",
                           "layers": [[-1, 1, "Conv2d", {"c2": 4, "k": 3, "bias": bias}, "conv"]]}, "tiny")

    w = {"conv.weight": np.ones((4, 3, 3, 3), np.float32)}
    with pytest.raises(WeightKeyError, match=r"missing:\n  conv.bias .*\nThe file has the weight but no bias of conv: "
                                             r"modules made with bias=False. Give their rows bias: false"):
        define_network(spec(True), w, log=print)
    define_network(spec(False), w, log=print)


@pytest.mark.parametrize("args, given", [({}, "neither"), ({"size": 16, "scale_factor": 2}, "both"),
                                         ([512, 5], "both")])  # Ultralytics' list form with a channel count
def test_upsample_takes_one_of_size_and_scale_factor_as_torch_does(args, given):
    """Upsample mirrors nn.Upsample, which refuses both and neither: the row says so (it doubled the size without
    arguments, and took size over scale_factor given both; `[512, 5]` failed two rows later at a Concat)."""
    spec = parse_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "output": "y",
                       "layers": [[-1, 1, "Upsample", args, "up"]]}, "tiny")
    with pytest.raises(NetdefError, match=rf"up: Upsample takes one of size and scale_factor, as nn\.Upsample does "
                                          rf"\(given {given}\)"):
        build_network(spec, Network({}, source="test.wts"))
    spec = parse_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "output": "y",
                       "layers": [[-1, 1, "Upsample", [None, 2, "nearest"], "up"]]}, "tiny")
    net = Network({}, source="test.wts")
    build_network(spec, net)
    assert tuple(net.definition.get_output(0).shape)[-2:] == (16, 16)
