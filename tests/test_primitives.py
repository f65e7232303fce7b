"""Network primitives (deconv, pad, norms, gelu, softmax, matmul, shape ops, split, channel shuffle, resize, layer
scale) and `net.fp32`.

On the CPU each primitive's one-block network is defined and built with TensorRT-RTX in fp32 and fp16: its
output shape is torch's, layers are named after the prefix, every weight key is used, tensors carry the
expected dtype; evaluated in float64 (`check_block(cpu=True)`), it equals torch's. The GPU tests run the same
cases against torch with `netdef.testing.check_block` on engines in fp32 and fp16.
"""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netdef import trt_api
from netdef.errors import BlockError, NetdefError, SpecError, TensorRTError
from netdef.network import Network
from netdef.testing.check_block import PREFIX, check_block, define_block, module_weights


class Fn(torch.nn.Module):
    """A weightless torch function as a module."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


class ChannelsFirstLayerNorm(torch.nn.Module):
    """ConvNeXt's LayerNorm2d: LayerNorm over C of (B, C, H, W)."""

    def __init__(self, c):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(c))
        self.bias = torch.nn.Parameter(torch.randn(c))

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, 1e-6).permute(0, 3, 1, 2)


class LayerScale(torch.nn.Module):
    def __init__(self, c, dim):
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.randn(c))
        self.dim = dim

    def forward(self, x):
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return x * self.gamma.reshape(shape)


def _randomized(module):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.dim() == 1 else 0.0))  # scales near 1
    return module.eval()


X = (2, 3, 5, 6)
# id: (block name or fn(net, x, prefix), torch module, input shape(s), kwargs for a block, kept in fp32)
CASES = {
    "deconv": (lambda n, x, p: n.deconv(x, p, 4, 3, 2, 1, 1), torch.nn.ConvTranspose2d(3, 4, 3, 2, 1, 1), X, {}, False),
    "deconv_op_past_p": (lambda n, x, p: n.deconv(x, p, 4, 3, 2, 0, 1), torch.nn.ConvTranspose2d(3, 4, 3, 2, 0, 1),
                         X, {}, False),
    # TensorRT-RTX builds no deconvolution that is both strided and dilated
    "deconv_groups_dilation": (lambda n, x, p: n.deconv(x, p, 6, (3, 2), 1, (1, 0), 0, g=2, d=2, bias=False),
                               torch.nn.ConvTranspose2d(4, 6, (3, 2), 1, (1, 0), groups=2, dilation=2, bias=False),
                               (2, 4, 5, 6), {}, False),
    "deconv_groups_stride": (lambda n, x, p: n.deconv(x, p, 6, 3, (2, 1), 1, (1, 0), g=2),
                             torch.nn.ConvTranspose2d(4, 6, 3, (2, 1), 1, (1, 0), groups=2), (2, 4, 5, 6), {}, False),
    "ConvTranspose2d_block": ("ConvTranspose2d", torch.nn.ConvTranspose2d(3, 4, 2, 2), X, {"c2": 4, "k": 2, "s": 2},
                              False),
    "Conv2d_block_pads_0": ("Conv2d", torch.nn.Conv2d(3, 4, 3), X, {"c2": 4, "k": 3}, False),
    "pad_constant": (lambda n, x, p: n.pad(x, p, (1, 2, -1, 3), value=1.5), Fn(lambda x: F.pad(x, (1, 2, -1, 3),
                                                                                           value=1.5)), X, {}, False),
    "pad_reflect": ("Pad", Fn(lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect")), X,
                    {"pads": [2, 1, 1, 2], "mode": "reflect"}, False),
    "pad_crop": (lambda n, x, p: n.pad(x, p, (-1, -2)), Fn(lambda x: F.pad(x, (-1, -2))), X, {}, False),
    "layer_norm": ("LayerNorm", torch.nn.LayerNorm(6), (2, 4, 6), {"normalized_shape": 6}, True),
    # without normalized_shape: the trailing dims of the weight's size
    "layer_norm_shape_from_weight": ("LayerNorm", torch.nn.LayerNorm((4, 6)), (2, 4, 6), {}, True),
    "layer_norm_2d": (lambda n, x, p: n.layer_norm(x, p, eps=1e-6, axes=[1]), ChannelsFirstLayerNorm(3), X, {}, True),
    "group_norm": ("GroupNorm", torch.nn.GroupNorm(2, 6), (2, 6, 4, 5), {"num_groups": 2}, True),
    "gelu": ("GELU", torch.nn.GELU(), X, {}, False),
    "gelu_tanh": ("Act", torch.nn.GELU("tanh"), X, {"kind": "gelu:tanh"}, False),
    "softmax": ("Softmax", torch.nn.Softmax(dim=1), X, {"dim": 1}, True),
    "matmul": ("MatMul", Fn(lambda a, b: a @ b.transpose(-1, -2)), [(2, 3, 4), (2, 5, 4)], {"transpose_b": True},
               False),
    "slice": ("Slice", Fn(lambda x: x[:, 1:3, ::2, 1:5:2]), X, {"start": [0, 1, 0, 1], "shape": [-1, 2, 3, 2],
                                                                  "stride": [1, 1, 2, 2]}, False),
    "roll": (lambda n, x, p: n.roll(x, p, (-2, 3), (2, 3)), Fn(lambda x: torch.roll(x, (-2, 3), (2, 3))), X, {},
             False),
    # a piece of a split is the layer `prefix/i`: matched to the prefix, as a block that returns it would
    "chunk_uneven": (lambda n, x, p: n.match(n.chunk(x, p, 3)[2], p), Fn(lambda x: x.chunk(3, 1)[2]), (2, 7, 5, 6), {},
                     False),
    "split_sizes_last_dim": (lambda n, x, p: n.match(n.split(x, p, [2, 4], -1)[1], p),
                             Fn(lambda x: x.split([2, 4], -1)[1]), X, {}, False),
    "channel_shuffle": ("ChannelShuffle", torch.nn.ChannelShuffle(2), (2, 6, 5, 6), {"groups": 2}, False),
    "reshape": ("Reshape", Fn(lambda x: x.reshape(x.shape[0], 3, -1)), X, {"shape": [0, 3, -1]}, False),
    "permute": ("Permute", Fn(lambda x: x.permute(0, 2, 3, 1)), X, {"dims": [0, 2, 3, 1]}, False),
    "flatten_2": ("Flatten", Fn(lambda x: torch.flatten(x, 2)), X, {"start_dim": 2}, False),
    "reduce_mean": ("Reduce", Fn(lambda x: x.mean((2, 3), keepdim=True)), X, {"dims": [2, 3], "keepdim": True}, False),
    "reduce_max": (lambda n, x, p: n.reduce(x, p, "max", -1), Fn(lambda x: x.amax(-1)), X, {}, False),
    "reduce_sum": (lambda n, x, p: n.reduce(x, p, "sum", (1, -1), keepdim=True),
                   Fn(lambda x: x.sum((1, -1), keepdim=True)), X, {}, False),
    "resize_nearest_size": ("Resize", Fn(lambda x: F.interpolate(x, size=(7, 9))), X, {"size": [7, 9]}, False),
    "resize_nearest_scale": ("Resize", Fn(lambda x: F.interpolate(x, scale_factor=1.5)), X, {"scale_factor": 1.5},
                             False),
    "resize_bilinear": ("Resize", Fn(lambda x: F.interpolate(x, size=(9, 11), mode="bilinear", align_corners=False)),
                        X, {"size": [9, 11], "mode": "bilinear", "align_corners": False}, False),
    "resize_bilinear_corners": ("Upsample", torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                                X, {"scale_factor": 2, "mode": "bilinear", "align_corners": True}, False),
    "max_pool_ceil": ("MaxPool", torch.nn.MaxPool2d(2, ceil_mode=True), X, {"k": 2, "ceil_mode": True}, False),
    "avg_pool_ceil": ("AvgPool", torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True), X,  # torch counts p, not the rest
                      {"k": 3, "s": 2, "p": 1, "ceil_mode": True}, False),
    "avg_pool_ceil_exclude": ("AvgPool", torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), X,
                              {"k": 3, "s": 2, "p": 1, "ceil_mode": True, "count_include_pad": False}, False),
    "linear": ("Linear", torch.nn.Linear(6, 5), (2, 6), {"c2": 5}, False),
    "linear_tokens": ("Linear", torch.nn.Linear(6, 5), (2, 4, 6), {"c2": 5}, False),
    "layer_scale": ("LayerScale", LayerScale(3, 1), X, {}, False),
    "layer_scale_last": ("LayerScale", LayerScale(6, -1), X, {"dim": -1}, False),
}


def _case(case_id):
    fn, module, shape, kwargs, kept = CASES[case_id]
    shapes = [shape] if isinstance(shape[0], int) else list(shape)
    return fn, _randomized(module), shapes, kwargs, kept


def _torch_shape(module, shapes):
    with torch.no_grad():
        return tuple(module(*(torch.zeros(s) for s in shapes)).shape)


def _layers(net):
    d = net.definition
    return [d.get_layer(i) for i in range(d.num_layers)]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case_id", sorted(CASES))
def test_primitive_defines_and_builds(case_id, precision, tmp_path):
    from netdef.compiler import compile_engine
    from netdef.options import BuildOptions

    fn, module, shapes, kwargs, kept = _case(case_id)
    net = define_block(fn, shapes, module_weights(module), precision=precision, kwargs=kwargs)  # all keys used
    out = net.definition.get_output(0)
    assert tuple(out.shape) == (-1, *_torch_shape(module, shapes)[1:])
    assert out.dtype == net.trt.float32
    names = {layer.name for layer in _layers(net)}
    by_output = {layer.get_output(0).name: layer for layer in _layers(net)}
    last = by_output["y"]
    if last.name == "y/cast":  # fp16: the output cast of the block's float16 result
        last = by_output[last.get_input(0).name]
    # the block's result comes from a layer named after the prefix (or one that `matches` maps to it)
    assert last.name == PREFIX or net.matches.get(last.name) == PREFIX, (last.name, net.matches)
    assert all(name == PREFIX or name.startswith((PREFIX + "/", "x", "y/")) for name in names), names
    # typing: the result is float16 in a strongly typed fp16 build, float32 where the primitive keeps fp32
    fp16 = net.strongly_typed and precision == "fp16"
    expected = net.trt.float16 if fp16 and not kept else net.trt.float32
    assert last.get_output(0).dtype == expected
    opts = BuildOptions(precision=precision, opt_level=0)
    meta = compile_engine(net.builder, net.definition, opts, tmp_path / "p.engine", strongly_typed=net.strongly_typed,
                          arch={"name": case_id}, weights={"path": "torch", "sha256": ""}, log=lambda m: None)
    assert meta["outputs"][0]["shape"] == [-1, *_torch_shape(module, shapes)[1:]]


def test_fp32_keeps_layers_in_float32_and_casts_back_on_use():
    """Strongly typed fp16: inside `net.fp32` inputs are cast to float32 and constants are float32; a layer
    outside that uses the result gets it cast back to float16 (one cast, reused)."""
    net = Network({"c.weight": np.ones(12, np.float32)}, precision="fp16")
    if not net.strongly_typed:
        pytest.skip("strongly typed TensorRT only (8.6 sets layer precisions: see the GPU test)")
    x = net.input("x", (-1, 3, 4, 4))
    with net.fp32("blk"):
        assert net.dtype == np.float32
        k = net.constant(np.full((1, 3, 1, 1), 2.0), "blk/k")
        y = net.mul(x, k, "blk")
    assert net.dtype == np.float16 and k.dtype == net.trt.float32 and y.dtype == net.trt.float32
    layers = {layer.name: layer for layer in _layers(net)}
    assert layers["blk/in0"].type == net.trt.LayerType.CAST and layers["blk/in0"].get_input(0).name == x.name
    a = net.conv(y, "c", 4, 1, bias=False)
    b = net.add(y, y, "twice")
    assert a.dtype == b.dtype == net.trt.float16
    casts = [layer.name for layer in _layers(net) if layer.type == net.trt.LayerType.CAST]
    assert casts == ["x/cast", "blk/in0", "c/in0"]  # y cast back once, shared by the add
    fp32 = Network({}, precision="fp32")
    with fp32.fp32("noop"):
        assert fp32.dtype == np.float32
    assert not [layer for layer in _layers(fp32) if layer.type == fp32.trt.LayerType.CAST]


def test_norms_and_softmax_keep_fp32_unless_told():
    net = Network({}, precision="fp16")
    x = net.input("x", (-1, 4, 6))
    kept = net.softmax(x, "a", -1)
    plain = net.softmax(x, "b", -1, fp32=False)
    ln = net.layer_norm(x, "ln", 6, affine=False, fp32=False)
    f16 = net.trt.float16 if net.strongly_typed else net.trt.float32
    assert kept.dtype == net.trt.float32 and plain.dtype == f16 and ln.dtype == f16


def test_deconv_output_padding_past_padding_adds_the_bias_after_padding():
    """output_padding > padding: rows beyond the full transposed convolution get only the bias (as in torch):
    the layer `prefix` has no bias, `prefix/add_bias` adds it and `matches` maps it to the module."""
    w = module_weights(torch.nn.ConvTranspose2d(3, 4, 3, 2, 0, 1), "d")
    net = Network(w)
    y = net.deconv(net.input("x", (-1, 3, 5, 6)), "d", 4, 3, 2, 0, 1)
    layers = {layer.name: layer for layer in _layers(net)}
    assert layers["d"].type == net.trt.LayerType.DECONVOLUTION and y.name == "d/add_bias"
    assert net.matches == {"d/add_bias": "d"} and net.check_keys() == []
    net2 = Network(w)
    net2.deconv(net2.input("x", (-1, 3, 5, 6)), "d", 4, 3, 2, 1, 1)
    assert net2.matches == {} and net2.check_keys() == []


@pytest.mark.parametrize("call, message", [
    (lambda n, x: n.pad(x, "p", (6, 0), "reflect"), r"p: reflect pads \(6, 0\) must be smaller than dimension 3"),
    (lambda n, x: n.pad(x, "p", (1, 2, 3)), r"p: pads \[1, 2, 3\]: expected pairs"),
    (lambda n, x: n.pad(x, "p", (1, 1), "edge"), r"pad mode 'edge' is not supported"),
    (lambda n, x: n.pad(x, "p", (-3, -3)), r"leave nothing of dimension 3"),
    (lambda n, x: n.slice(x, "s", (0, 0, 4, 0), (-1, 3, 2, 6)), r"s: slice of dimension 2 \(size 5\) with start 4"),
    (lambda n, x: n.slice(x, "s", (0, 0, 0, 0), (2, 3, 5, 6)), r"slice of dimension 0 \(size -1\)"),
    (lambda n, x: n.resize(x, "r"), r"r: give one of size, scale_factor and like"),
    (lambda n, x: n.resize(x, "r", size=4, like=x), r"r: give one of size, scale_factor and like"),
    (lambda n, x: n.resize(x, "r", like=n.input("t", (-1, 3, 5))), r"r: resize like a tensor takes two tensors of one"),
    (lambda n, x: n.pool(x, "max", 3, 2, 2), r"pool: pooling kernel \[3, 3\], stride \[2, 2\], padding \[2, 2\]: .*"
                                            r"padding at most half the kernel"),
    (lambda n, x: n.pool(x, "min", 2), r"pool: pooling kind 'min'"),
    (lambda n, x: n.pool(x, "max", 7, ceil_mode=True, name="mp"), r"mp: pooling input size 5 with padding 0 is "
                                                                  r"smaller than the kernel 7"),
    (lambda n, x: n.resize(x, "r", scale_factor=2, align_corners=True), r"align_corners applies to bilinear"),
    (lambda n, x: n.resize(x, "r", size=(3,)), r"r: size \(3,\): expected 2 integer"),
    (lambda n, x: n.resize(x, "r", scale_factor=2, mode="bicubic"), r"resize mode 'bicubic'"),
    (lambda n, x: n.matmul(x, x, "m"), r"m: matmul of .* inner sizes 6 and 5 differ"),
    (lambda n, x: n.layer_norm(x, "ln", 5), r"ln: normalized_shape \[5\] does not end the input shape"),
    (lambda n, x: n.layer_norm(x, "ln", affine=False), r"ln: LayerNorm without elementwise_affine needs "
                                                        r"normalized_shape \(or axes\): no weight gives it"),
    (lambda n, x: n.group_norm(x, "gn", 2), r"gn: 3 channels are not divisible by groups=2"),
    (lambda n, x: n.gelu(x, "g", "fast"), r"g: gelu approximate 'fast'"),
    (lambda n, x: n.softmax(x, "sm", 4), r"sm: dimension 4 is out of range for a 4-D tensor"),
    (lambda n, x: n.permute(x, "pm", (0, 1, 1, 2)), r"pm: permute dims \[0, 1, 1, 2\] are not a permutation"),
    (lambda n, x: n.reshape(x, "rs", (0, -1, -1)), r"rs: reshape to \[0, -1, -1\]: at most one -1"),
    (lambda n, x: n.reshape(x, "rs", (0, 3, 31)), r"rs: reshape of \(-1, 3, 5, 6\) to \[0, 3, 31\]: 90 values "
                                                 r"\(beside the dimensions 0 keeps\) cannot fill 93"),
    (lambda n, x: n.shuffle(x, "sh", (0, 6, -1, 7), (0, 3, 2, 1)), r"sh: reshape of \(-1, 6, 5, 3\) to \[0, 6, -1, "
                                                                  r"7\]: 90 values .* are not a multiple of 42"),
    (lambda n, x: n.reduce(x, "rd", "median"), r"rd: reduce op 'median'"),
    (lambda n, x: n.roll(x, "rl", 1, 0), r"rl: roll of dimension 0 of \(-1, 3, 5, 6\) needs a static input size"),
    (lambda n, x: n.deconv(x, "d", 4, 3, 2, 0, 2), r"d: output_padding \(2, 2\) must be smaller"),
    (lambda n, x: n.conv(x, "c", 4, 3, s=0), r"c: convolution kernel \[3, 3\], stride \[0, 0\], padding \[1, 1\]"),
    (lambda n, x: n.conv(x, "c", 4, 3, p=-1), r"c: convolution .* padding \[-1, -1\], dilation \[1, 1\]"),
    (lambda n, x: n.conv(x, "c", 4, 3, d=(1, 0)), r"c: convolution .* dilation \[1, 0\], groups 1: positive"),
    (lambda n, x: n.conv(x, "c", 3, 0), r"c: convolution kernel \[0, 0\]"),
    (lambda n, x: n.conv(x, "c", 3, 3, g=0), r"c: convolution .* groups 0: positive"),
    (lambda n, x: n.deconv(x, "d", 4, 2, s=-2), r"d: convolution kernel \[2, 2\], stride \[-2, -2\]"),
    (lambda n, x: n.deconv(x, "d", 4, 3, p=-1), r"d: convolution .* padding \[-1, -1\]"),
    (lambda n, x: n.deconv(x, "d", 4, 3, d=0), r"d: convolution .* dilation \[0, 0\]"),
    (lambda n, x: n.activation(x, "leaky:abc", "a"), r"activation 'leaky:abc' for a: the slope 'abc' is no finite "),
    (lambda n, x: n.activation(x, "leaky:nan", "a"), r"activation 'leaky:nan' for a: the slope 'nan' is no finite "),
    (lambda n, x: n.activation(x, "gelu:fast", "a"), r"activation 'gelu:fast' for a: gelu's setting is none or tanh"),
    (lambda n, x: n.activation(x, "swish", "a"), r"unknown activation 'swish' for a; use one of"),
    (lambda n, x: n.activation(x, "relu:0.2", "a"), r"activation 'relu:0.2' for a: only leaky \(its slope\) and gelu"),
    (lambda n, x: n.channels(n.flatten(x, "fl")), r"fl has shape \(-1, 90\), not \(B, C, H, W\): convolutions and "
                                                   r"BatchNorm take 4-D input, and net.channels\(x\) reads the C"),
    (lambda n, x: n.activation(x, True, "a"), r"activation True for a: expected a name, one of \('relu'"),
    (lambda n, x: n.softmax(x, None, 1), r"layer name None \(softmax layer\): expected a non-empty string"),
    (lambda n, x: n.layer("activation", "", x, n.trt.ActivationType.RELU), r"layer name '' \(\w+ layer\): expected"),
    (lambda n, x: n.split(x, "sp", [1, 1]), r"sp: split sizes \[1, 1\] must be positive and add up to 3"),
    (lambda n, x: n.split(x, "sp", 0, -1), r"sp: split size 0: expected a positive integer"),
    (lambda n, x: n.split(x, "sp", 2, 0), r"sp: split of dimension 0 of \(-1, 3, 5, 6\), whose size is chosen"),
    (lambda n, x: n.chunk(x, "ch", 0), r"ch: chunks 0: expected a positive integer"),
    (lambda n, x: n.channel_shuffle(x, "cs", 2), r"cs: channel shuffle of 3 channels in groups=2: groups must"),
])
def test_bad_arguments_are_one_line_spec_errors(call, message):
    net = Network({})
    with pytest.raises(SpecError, match=message) as e:
        call(net, net.input("x", (-1, 3, 5, 6)))
    assert "\n" not in str(e.value)


def test_a_layer_norm_weight_no_trailing_dims_make_is_an_error():
    """LayerNorm without normalized_shape takes the trailing dims of its weight's size: a size none make is an
    error naming the key; without weights (`netdef show` alone) the last dim is expected."""
    net = Network({"ln.weight": np.ones(7, np.float32), "ln.bias": np.zeros(7, np.float32)})
    with pytest.raises(SpecError, match=r"^ln: LayerNorm: ln\.weight has 7 values, which no trailing dims of the "
                                        r"input \(-1, 3, 5, 6\) make: give normalized_shape \(or axes\)$"):
        net.layer_norm(net.input("x", (-1, 3, 5, 6)), "ln")
    bare = Network({})
    asked, weight = [], bare.weight
    bare.weight = lambda key, shape: asked.append((key, tuple(shape))) or weight(key, shape)
    bare.layer_norm(bare.input("x", (-1, 3, 5, 6)), "ln")
    assert bare.missing.keys() == {"ln.weight", "ln.bias"} and asked == [("ln.weight", (6,)), ("ln.bias", (6,))]


def test_a_pool_without_a_name_is_named_after_its_row():
    """net.pool's default name is `<row prefix>/pool`, as a raw layer's: a block that leaves it out (DenseNet's
    transition, module `prefix.pool`) gets layers verify compares with `prefix.pool`, not `pool`, `pool#2`, ..."""
    net = define_block(lambda n, x, p: n.pool(n.pool(x, "avg", 2, 2), "max", 2), [(1, 4, 8, 8)], {})
    assert [layer.name for layer in _layers(net)] == [f"{PREFIX}/pool", f"{PREFIX}/pool#2"]
    bare = Network({})  # outside a row
    with pytest.raises(SpecError, match=r"^network/pool: pooling kind 'min'"):
        bare.pool(bare.input("x", (-1, 3, 5, 6)), "min", 2)


def _pool_sizes(n, k, s, p):
    """torch's floor and ceil_mode output sizes, and the ceil before torch drops a window starting in the padding."""
    ceil = -(-(n + 2 * p - k) // s) + 1
    return (n + 2 * p - k) // s + 1, ceil - ((ceil - 1) * s >= n + p), ceil


@pytest.mark.parametrize("kind, include", [("max", True), ("avg", True), ("avg", False)])
def test_pooling_matches_torch_on_cpu_over_a_grid(kind, include):
    """Sizes, kernels, strides (beyond the kernel too), paddings, floor and ceil mode, on the CPU evaluator against
    torch (exactly, shapes first): the grid holds sizes where ceil_mode adds a window reaching past the padding,
    where torch drops one that would start in it, and both at once (H drops, W adds), so an off-by-one fails."""
    seen = set()
    for n, k, s, p, ceil in itertools.product((5, 6, 7, 8), (1, 2, 3, 4), (1, 2, 3, 4), (0, 1, 2), (False, True)):
        if 2 * p > k or n + 2 * p < k:
            continue
        for hw in ((n, n + 1), (n + 1, n)):
            if kind == "max":
                module = torch.nn.MaxPool2d(k, s, p, ceil_mode=ceil)
            else:
                module = torch.nn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=include)
            assert check_block(lambda net, x, pre: net.pool(x, kind, k, s, p, pre, ceil_mode=ceil,
                                                            count_include_pad=include),
                               module, (1, 2, *hw), cpu=True, tolerance=1e-12) <= 1e-12
            sizes = [_pool_sizes(v, k, s, p) for v in hw]
            seen.update(("adds" if c > f else "drops") for f, c, naive in sizes if ceil and naive > f)
            seen.update(["both"] if ceil and sizes[0][1] < sizes[0][2] and sizes[1][1] > sizes[1][0] else [])
    assert seen == {"adds", "drops", "both"}


@pytest.mark.parametrize("shape, out", [((2, 3, 10, 13), (7, 7)), ((1, 4, 6, 6), 6), ((1, 2, 9, 5), (4, 2)),
                                        ((1, 2, 7, 7), 1), ((1, 2, 3, 2), (5, 7))])
def test_adaptive_avg_pool_matches_torch_on_cpu(shape, out):
    """nn.AdaptiveAvgPool2d (VGG's 7x7 and AlexNet's 6x6 avgpool) at sizes whose windows overlap, divide evenly,
    are the identity, the global mean, or smaller than the output (windows repeated), as net.adaptive_avg_pool and
    the AdaptiveAvgPool block; a dynamic input size is a SpecError saying to build with --input-shape."""
    module = torch.nn.AdaptiveAvgPool2d(out)
    assert check_block("AdaptiveAvgPool", module, shape, kwargs={"output_size": out}, cpu=True) <= 1e-6
    assert check_block("AdaptiveAvgPool", module, shape, kwargs={"output_size": out}, cpu=True,
                       precision="fp16") <= 2e-3
    net = Network({})
    x = net.input("x", (-1, 2, -1, -1))
    with pytest.raises(SpecError, match=r"^avgpool: AdaptiveAvgPool2d\(\[7, 7\]\) needs a static input size"):
        net.adaptive_avg_pool(x, "avgpool", 7)


def test_adaptive_avg_pool_keeps_a_none_size_and_refuses_bad_sizes():
    """None in output_size keeps that axis (torch's rule); 0, a negative size or a string is a SpecError naming
    the layer (were an AttributeError from an empty constant, numpy's negative dimensions, _pair's kernel words)."""
    assert check_block("AdaptiveAvgPool", torch.nn.AdaptiveAvgPool2d((None, 3)), (1, 2, 5, 8),
                       kwargs={"output_size": [None, 3]}, cpu=True) <= 1e-6
    for bad in (0, (7, 0), -1, "7", (1, 2, 3)):
        net = Network({})
        x = net.input("x", (1, 2, 8, 8))
        with pytest.raises(SpecError, match=r"^avgpool: AdaptiveAvgPool2d output_size .*: expected a positive "):
            net.adaptive_avg_pool(x, "avgpool", bad)


@pytest.mark.parametrize("mode, align", [("nearest", None), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("shapes", [[(2, 3, 4, 5), (2, 1, 7, 9)], [(2, 3, 6, 6), (2, 4, 4, 3)],
                                    [(2, 3, 1, 1), (2, 2, 5, 6)]])
def test_resize_like_matches_interpolate_on_cpu(mode, align, shapes):
    """net.resize(x, like=ref) as F.interpolate(x, size=ref.shape[2:]) (up, down, from 1x1), and the ResizeLike
    block of a row `from: [x, ref]`."""
    def fn(net, xs, p):
        return net.resize(xs[0], p, mode=mode, align_corners=align, like=xs[1])

    module = Fn(lambda a, b: F.interpolate(a, size=b.shape[2:], mode=mode, align_corners=align))
    assert check_block(fn, module, shapes, cpu=True, tolerance=1e-12) <= 1e-12
    kwargs = {"mode": mode, "align_corners": align}
    assert check_block("ResizeLike", module, shapes, kwargs=kwargs, cpu=True, tolerance=1e-12) <= 1e-12
    net = define_block("ResizeLike", shapes, {}, kwargs=kwargs)
    assert [layer.name for layer in _layers(net) if layer.type == net.trt.LayerType.RESIZE] == [PREFIX]


@pytest.mark.parametrize("shifts, dims", [((-2, 3), (2, 3)), (7, 1), ((1, -1), (1, -1)), ((1, 2), (3, -1))])
def test_roll_matches_torch_on_cpu(shifts, dims):
    """One slice layer in wrap mode is torch.roll, shifts past the size and negative dims included; a dimension
    named twice (3 and -1) rolls by both shifts, as torch's does."""
    shape = (2, 3, 5, 6)
    err = check_block(lambda n, x, p: n.roll(x, p, shifts, dims), Fn(lambda x: torch.roll(x, shifts, dims)), shape,
                      cpu=True)
    assert err < 1e-12


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("first", [True, False])
def test_add_and_mul_broadcast_a_static_input_of_lower_rank_as_torch(op, first):
    """A (heads, N, N) bias added to (B, heads, N, N) scores (Swin's relative position bias): torch broadcasts it with
    leading 1s; netdef refused it ('inputs have different ranks'; mul: TensorRT rejected the layer)."""
    c = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    f = torch.add if op == "add" else torch.mul

    def fn(n, x, p):
        k = n.constant(c, f"{p}/c")
        return getattr(n, op)(*((k, x) if first else (x, k)), p)

    err = check_block(fn, Fn(lambda x: f(torch.from_numpy(c).to(x), x)), (2, 3, 5, 6), cpu=True)
    assert err < 1e-12
    net = Network({})
    with pytest.raises(SpecError, match=rf"s: {op} of ranks 4 and 3: the lower-rank input must be static"):
        getattr(net, op)(net.input("x", (-1, 3, 5, 6)), net.input("y", (-1, 5, 6)), "s")


def test_resize_like_block_takes_two_inputs():
    with pytest.raises(SpecError, match=r"^m: ResizeLike takes two inputs \(from: \[x, ref\]\)$"):
        define_block("ResizeLike", [(1, 3, 4, 4)], {})


def test_flatten_keeps_its_default_and_generalises():
    net = Network({})
    x = net.input("x", (-1, 3, 5, 6))
    assert tuple(net.flatten(x, "f").shape) == (-1, 90)
    layer = next(layer for layer in _layers(net) if layer.name == "f")
    layer.__class__ = net.trt.IShuffleLayer
    assert tuple(layer.reshape_dims) == (0, -1)  # as before: the batch kept, the rest inferred
    assert tuple(net.flatten(x, "f0", 0, 1).shape) == (-1, 5, 6)
    assert tuple(net.flatten(x, "f1", 1, 2).shape) == (-1, 15, 6)


def test_upsample_block_keeps_its_layer_name_and_matches_the_module():
    from netdef.blocks.common import upsample

    net = Network({})
    y = upsample(net, net.input("x", (-1, 3, 5, 6)), "model.10", None, 2, "nearest")
    assert y.name == "model.10/upsample" and tuple(y.shape) == (-1, 3, 10, 12)
    assert net.matches == {"model.10/upsample": "model.10"}


BAD_ROW = """name: bad
input: {name: x, shape: [3, 4, 4]}
output: y
layers:
  - [-1, 1, GlobalAvgPool, {}, pool]
  - [-1, 1, BadReshapeForTest, {}, bad]
  - [-1, 1, Linear, {c2: 2}, fc]
"""


@pytest.mark.parametrize("c, chunks", [(8, 2), (7, 3), (5, 4), (6, 6), (1, 2)])
def test_chunk_and_split_match_torch_on_cpu(c, chunks):
    """net.chunk is torch.chunk (uneven and fewer pieces included: 5 in 4 chunks is 2, 2, 1), net.split is
    torch.split by a size and by sizes, along a negative dim too; the pieces are slices `name/i`."""
    def joined(pieces):  # the pieces in reverse, so a wrong start or size shows
        return lambda n, x, p: n.concat(pieces(n, x, p)[::-1], f"{p}/cat")

    cat = Fn(lambda x: torch.cat(torch.chunk(x, chunks, 1)[::-1], 1))
    assert check_block(joined(lambda n, x, p: n.chunk(x, p, chunks)), cat, (2, c, 3, 4), cpu=True) == 0
    sizes = Fn(lambda x: torch.cat(torch.split(x, [2, 5, 1], -1)[::-1], -1))
    assert check_block(lambda n, x, p: n.concat(n.split(x, p, [2, 5, 1], -1)[::-1], f"{p}/cat", -1), sizes,
                       (2, 3, 4, 8), cpu=True) == 0
    net = define_block(lambda n, x, p: n.concat(n.split(x, p, 3)[::-1], f"{p}/cat"), [(2, c, 3, 4)], {})
    slices = [layer.name for layer in _layers(net) if layer.type == net.trt.LayerType.SLICE]
    assert slices == [f"{PREFIX}/{i}" for i in range(-(-c // 3))]


def test_channel_shuffle_is_torchs_at_any_input_size():
    """net.channel_shuffle and the ChannelShuffle block are nn.ChannelShuffle; on an input whose H, W are chosen at
    run time (the CPU evaluator at two sizes), with a chunk before it, as ShuffleNet's units use them."""
    from netdef.verify import evaluate

    assert check_block(lambda n, x, p: n.channel_shuffle(x, p, 3), torch.nn.ChannelShuffle(3), (2, 12, 3, 5),
                       cpu=True) == 0
    assert check_block("ChannelShuffle", torch.nn.ChannelShuffle(4), (2, 8, 2, 3), kwargs={"groups": 4}, cpu=True) == 0
    net = Network({})
    a, b = net.chunk(net.input("x", (-1, 12, -1, -1)), "split", 2)
    y = net.output(net.channel_shuffle(net.concat([b, a], "cat"), "shuffle", 2), "y")
    assert tuple(y.shape) == (-1, 12, -1, -1)
    layers = trt_api.describe_layers(net.definition)
    for h, w in [(3, 5), (6, 4)]:
        x = np.random.default_rng(h).standard_normal((2, 12, h, w)).astype(np.float32)
        t = torch.from_numpy(x).double()
        ref = torch.nn.ChannelShuffle(2)(torch.cat(t.chunk(2, 1)[::-1], 1))
        assert torch.equal(evaluate(layers, {"x": x})["y"], ref), (h, w)


def test_a_layer_tensorrt_rejects_is_blamed_on_its_own_row(tmp_path):
    """A block that adds a layer TensorRT rejects (raw API, a reshape to the wrong size) is named, not the next row."""
    from netdef.registry import BLOCKS, block
    from netdef.spec import build_network, load_spec

    @block("BadReshapeForTest")
    def bad(net, x, prefix):
        layer = net.definition.add_shuffle(net.constant(np.ones((5, 6), np.float32), f"{prefix}/w"))
        layer.reshape_dims = (7,)  # 30 values do not make 7
        return layer.get_output(0)

    try:
        p = tmp_path / "bad.yaml"
        p.write_text(BAD_ROW)
        net = Network({"fc.weight": np.ones(6, np.float32), "fc.bias": np.zeros(2, np.float32)})
        with pytest.raises(TensorRTError) as e:
            build_network(load_spec(p), net)
    finally:
        BLOCKS.pop("BadReshapeForTest")
    msg = str(e.value)
    assert "bad.yaml:6: row 1 (BadReshapeForTest)" in msg and "row 2" not in msg
    assert "TensorRT rejected layer bad/shuffle (SHUFFLE) with input shapes [(5, 6)]" in msg
    assert not isinstance(e.value, BlockError) and isinstance(e.value, NetdefError)


def test_a_layer_rejected_inside_a_block_is_named_with_tensorrts_reason(tmp_path):
    """A block whose raw layer TensorRT rejects and which then fails on its output (its shape: RuntimeError) is
    reported as that layer's rejection, with TensorRT's own reason where netdef's logger saw it (a command)."""
    from netdef.registry import BLOCKS, block
    from netdef.spec import build_network, load_spec

    @block("TypeClashForTest")
    def clash(net, x, prefix):
        c = net.definition.raw.add_constant((1, 1), np.ones((1, 1), np.int32)).get_output(0)
        layer = net.name(net.definition.raw.add_elementwise(x, c, net.trt.ElementWiseOperation.PROD),
                         f"{prefix}/elementwise")
        return net.relu(layer.get_output(0), f"{prefix}/act") if tuple(layer.get_output(0).shape) else None

    try:
        p = tmp_path / "bad.yaml"
        p.write_text(BAD_ROW.replace("BadReshapeForTest", "TypeClashForTest"))
        net = Network({"fc.weight": np.ones(6, np.float32), "fc.bias": np.zeros(2, np.float32)})
        with pytest.raises(TensorRTError) as e:
            build_network(load_spec(p), net)
    finally:
        BLOCKS.pop("TypeClashForTest")
    msg = str(e.value)
    assert "bad.yaml:6: row 1 (TypeClashForTest): TensorRT rejected layer bad/elementwise (ELEMENTWISE)" in msg
    assert not isinstance(e.value, BlockError)


def test_check_block_names_a_layer_rejected_inside_the_block():
    """A function block whose reshape TensorRT rejects (a 0 placeholder past the input's rank: torch's
    view(B, g, C // g, H, W) written with TensorRT's 0s) and which then reads that layer's shape is a
    TensorRTError naming the layer, in define_block and check_block as in a YAML row, not RuntimeError
    'Could not get tensor shape.'."""
    def shuffle(net, x, p):
        y = net.reshape(x, f"{p}/view", (0, 2, 4, 0, 0))
        return net.permute(y, f"{p}/transpose", (0, 2, 1, 3, 4))

    with pytest.raises(TensorRTError, match=r"TensorRT rejected layer m/view \(SHUFFLE\) with input shapes"):
        define_block(shuffle, [(2, 8, 5, 7)], {})
    with pytest.raises(TensorRTError, match=r"rejected layer m/view "):
        check_block(shuffle, Fn(lambda x: x), (2, 8, 5, 7), cpu=True)


def test_gelu_uses_tensorrts_activation_where_it_has_one():
    net = Network({})
    net.gelu(net.input("x", (-1, 4)), "g")
    types = [layer.type for layer in _layers(net)]
    if trt_api.gelu_activation("none") is not None:
        assert types[-1] == net.trt.LayerType.ACTIVATION and len(types) == 1 + (net.dtype != np.float32)
    else:  # 8.6: x/2 * (1 + erf(x / sqrt 2))
        assert net.trt.LayerType.UNARY in types and _layers(net)[-1].name == "g"


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_primitive_matches_torch_on_cpu(case_id):
    """Every case's network definition, evaluated in float64 on the CPU (`verify`'s evaluator), equals torch's."""
    fn, module, shapes, kwargs, _ = _case(case_id)
    err = check_block(fn, module, shapes if len(shapes) > 1 else shapes[0], kwargs=kwargs, cpu=True, tolerance=1e-9)
    assert err <= 1e-9


# ---------------------------------------------------------------- GPU: against torch


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case_id", sorted(CASES))
def test_primitive_matches_torch(case_id, precision):
    fn, module, shapes, kwargs, _ = _case(case_id)
    check_block(fn, module, shapes if len(shapes) > 1 else shapes[0], precision=precision, kwargs=kwargs)


@pytest.mark.parametrize("given, error, message", [
    ({"input_shape": 8}, "OptionError", r"check_block: input_shape 8: expected a shape of positive integers"),
    ({"input_shape": [(1, 3, 4, 4), 5]}, "OptionError", r"input_shape \[\(1, 3, 4, 4\), 5\]: expected"),
    ({"input_shape": (1, 0, 4, 4)}, "OptionError", r"input_shape \(1, 0, 4, 4\): expected"),
    ({"block_or_fn": 42}, "OptionError", r"check_block: block 42: expected a block's name or a function"),
    ({"block_or_fn": "Conv2D"}, "SpecError", r"unknown block 'Conv2D': did you mean 'Conv2d'\?; known blocks"),
    ({"tolerance": "1e-3"}, "OptionError", r"check_block: tolerance '1e-3': expected a number >= 0"),
    ({"weights": torch.nn.Conv2d(3, 4, 3)}, "OptionError", r"check_block: weights: expected a mapping .* got Conv2d"),
])
def test_check_block_names_a_bad_argument(given, error, message):
    """check_block's own arguments of the wrong kind are errors naming them, before anything is built (were
    TypeErrors from inside netdef: 'int' object is not subscriptable, not callable, '<=' not supported)."""
    from netdef import errors

    call = {"block_or_fn": "Conv2d", "torch_module": torch.nn.Conv2d(3, 4, 3), "input_shape": (1, 3, 6, 6),
            "kwargs": {"c2": 4, "k": 3}, "cpu": True, **given}
    with pytest.raises(getattr(errors, error), match=message):
        check_block(**call)


@pytest.mark.gpu
def test_check_block_fails_on_a_wrong_block():
    """The comparison can fail: GELU's tanh form against the erf form differs by more than 1e-5."""
    with pytest.raises(AssertionError, match="max relative error"):
        check_block(lambda n, x, p: n.gelu(x, p, "tanh"), torch.nn.GELU(), (2, 64), precision="fp32")


@pytest.mark.gpu
def test_weakly_typed_fp32_layers_get_their_precision():
    """TensorRT 8.6: layers under `net.fp32` have float32 precision set, and the builder then honours it; the
    helpers' `strict=False` leaves softmax to the builder and gives a layer norm float32 statistics only."""
    net = Network({}, precision="fp16")
    if net.strongly_typed:
        pytest.skip("weakly typed TensorRT (8.6) only")
    x = net.input("x", (-1, 4, 6))
    with net.fp32("kept"):
        kept = net.softmax(net.gelu(x, "g"), "sm", -1)
    y = net.layer_norm(net.softmax(kept, "sm2", -1), "ln", 6, affine=False)
    net.output(y, "y")
    layers = {layer.name: layer for layer in _layers(net)}
    assert layers["sm"].precision_is_set and layers["sm"].precision == net.trt.float32
    assert not layers["sm2"].precision_is_set and not layers["ln"].precision_is_set
    layers["ln"].__class__ = net.trt.INormalizationLayer  # get_layer gives the base class
    assert layers["ln"].compute_precision == net.trt.float32
    config = net.builder.create_builder_config()
    trt_api.configure_precision(config, "fp16", False, definition=net.definition)
    assert config.get_flag(net.trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)


def test_keep_fp32_strict_or_statistics_only():
    """trt_api.keep_fp32 on weakly typed layers: strict sets precision and output types (a normalization layer
    also gets float32 compute precision); strict=False gives a normalization layer the compute precision alone
    and leaves other layers to the builder; shape arithmetic is never constrained."""
    trt = trt_api.module()

    class Layer:
        def __init__(self, kind, dtype=trt.float32):
            self.type, self.num_outputs, self.precision, self.types, self.dtype = kind, 1, None, {}, dtype
            if kind == trt.LayerType.NORMALIZATION:
                self.compute_precision = None

        def get_output(self, i):
            return SimpleNamespace(dtype=self.dtype)

        def set_output_type(self, i, t):
            self.types[i] = t

    loose, strict = Layer(trt.LayerType.NORMALIZATION), Layer(trt.LayerType.NORMALIZATION)
    trt_api.keep_fp32(loose, strict=False)
    trt_api.keep_fp32(strict)
    assert loose.compute_precision == trt.float32 and loose.precision is None and not loose.types
    assert strict.compute_precision == strict.precision == strict.types[0] == trt.float32
    soft, shape = Layer(trt.LayerType.SOFTMAX), Layer(trt.LayerType.SHAPE, trt.int32)
    trt_api.keep_fp32(soft, strict=False)
    trt_api.keep_fp32(shape)
    assert soft.precision is None and not soft.types and shape.precision is None and not shape.types


def test_weakly_typed_scopes_pass_on_their_strictness(monkeypatch):
    """As on TensorRT 8.6: each layer added inside `net.fp32` is handed to keep_fp32 with its scope's strictness
    (the helpers' scopes are not strict; a strict scope inside one is, until it ends); weights inside a loose
    scope are range-checked (TensorRT may run them in fp16), inside a strict one they are kept in float32."""
    from netdef.errors import WeightKeyError

    calls = []
    monkeypatch.setattr(trt_api, "keep_fp32", lambda layer, strict=True: calls.append((layer.name, strict)))
    net = Network({}, precision="fp16")
    net.strongly_typed, net.dtype = False, np.float32
    x = net.input("x", (-1, 4, 6))
    net.softmax(x, "sm", -1)
    with net.fp32("outer", strict=False):
        net.add(x, x, "a")
        with net.fp32("inner"):
            net.add(x, x, "b")
            with net.fp32("nested", strict=False):
                net.add(x, x, "c")
        net.add(x, x, "d")
        with pytest.raises(WeightKeyError, match="beyond fp16's largest value"):
            net.keep(np.array([70000.0], np.float32), "big.weight")
    with net.fp32("kept"):
        assert net.keep(np.array([70000.0], np.float32), "big.weight") is not None
    net.add(x, x, "e")
    assert calls == [("sm", False), ("a", False), ("b", True), ("c", True), ("d", False)]
    assert net.dtype == np.float32 and net._fp32_scope is None


def test_weights_beyond_fp16_are_kept_inside_fp32():
    """fp16 refuses a weight beyond 65504, as the error says; inside `net.fp32` the layer keeps it in float32."""
    from netdef.errors import WeightKeyError

    net = Network({"s.gamma": np.array([1e6, 1.0, 2.0], np.float32)}, precision="fp16", source="w.wts")
    x = net.input("x", (-1, 3, 4, 4))
    with pytest.raises(WeightKeyError, match=r"'s.gamma' reaches 1e\+06 .*`with net.fp32\(name\):` in its block"):
        net.scale(x, "s.gamma")
    with net.fp32("s"):
        y = net.scale(x, "s.gamma")
    assert y.dtype == net.trt.float32 and net._keepalive[-1].dtype == np.float32


def test_a_layer_scale_is_named_after_its_module_only_where_that_holds_nothing_else():
    """timm's LayerScale module `ls1` (its only key `ls1.gamma`) computes the scale: the layer is `ls1`, compared
    with its output by verify; a ConvNeXt block's own `gamma` beside its sub-modules: `blk/gamma`, never compared
    with the whole block's output (a correct network failed verify on that)."""
    c = 3
    keys = {"ls1.gamma": np.ones(c, np.float32), "blk.gamma": np.ones(c, np.float32),
            "blk.dwconv.weight": np.ones((c, 1, 1, 1), np.float32), "gamma": np.ones(c, np.float32)}
    net = Network(keys)
    x = net.input("x", (-1, c, 4, 4))
    for key, name in (("ls1.gamma", "ls1"), ("blk.gamma", "blk/gamma"), ("gamma", "gamma")):
        net.scale(x, key)
        raw = net.definition.raw
        assert raw.get_layer(raw.num_layers - 1).name == name


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_integer_constants_are_not_held_to_fp16s_range(precision):
    """A gather's int32 index constant past 65504 (a row of a large table) was refused in fp16 builds as a weight
    that 'reaches 70000 in magnitude, beyond fp16's largest value': integers are never cast to fp16."""
    net = Network({}, precision=precision)
    table = net.input("t", (80000, 3))
    index = net.constant(np.array([70000, 1], np.int32), "idx", dtype=np.int32)
    assert index.dtype == net.trt.int32 and net._keepalive[-1].dtype == np.int32
    assert tuple(net.layer("gather", "g", table, index, 0).get_output(0).shape) == (2, 3)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gelu_composed_where_tensorrt_has_no_gelu(monkeypatch, approximate, precision, tmp_path):
    """TensorRT 8.6's path (no GELU activation), built here too: erf or tanh form, the last layer named `name`."""
    from netdef.compiler import compile_engine
    from netdef.options import BuildOptions

    monkeypatch.setattr(trt_api, "gelu_activation", lambda approximate: None)
    net = define_block(lambda n, x, p: n.gelu(x, p, approximate), [X], {}, precision=precision)
    layers = {layer.name: layer for layer in _layers(net)}
    T = net.trt.LayerType
    assert layers[PREFIX].type == T.ELEMENTWISE and T.ACTIVATION not in {layers[n].type for n in layers
                                                                       if approximate == "none"}
    assert (layers.get(f"{PREFIX}/erf") or layers[f"{PREFIX}/tanh"]).type == (T.UNARY if approximate == "none"
                                                                            else T.ACTIVATION)
    compile_engine(net.builder, net.definition, BuildOptions(precision=precision, opt_level=0),
                   tmp_path / "g.engine", strongly_typed=net.strongly_typed, arch={"name": "gelu"},
                   weights={"path": "none", "sha256": ""}, log=lambda m: None)


# ---------------------------------------------------------------- the new blocks in a YAML architecture

TINY_UNET = """name: tiny_unet
input: {name: x, shape: [3, 16, 16]}
output: y
layers:
  - [-1, 1, Conv2d, {c2: 8, k: 3, s: 2, p: 1}, stem]
  - [-1, 1, GroupNorm, {num_groups: 2}, norm]
  - [-1, 1, GELU, {}, act]
  - [-1, 1, LayerNorm, {axes: [1], eps: 1.0e-6}, ln]
  - [-1, 1, ConvTranspose2d, {c2: 4, k: 2, s: 2}, up]
  - [[-1, -6], 1, Concat, {}, cat]
  - [-1, 1, Upsample, {scale_factor: 0.5, mode: bilinear, align_corners: false}, down]
  - [-1, 1, Conv2d, {c2: 2, k: 1}, head]
"""


class TinyUnet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.norm = torch.nn.GroupNorm(2, 8)
        self.ln = ChannelsFirstLayerNorm(8)
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, 2)
        self.head = torch.nn.Conv2d(7, 2, 1)

    def forward(self, x):
        y = self.up(self.ln(F.gelu(self.norm(self.stem(x)))))
        y = F.interpolate(torch.cat([y, x], 1), scale_factor=0.5, mode="bilinear", align_corners=False)
        return self.head(y)


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    path = tmp_path_factory.mktemp("unet") / "tiny_unet.yaml"
    path.write_text(TINY_UNET)
    model = _randomized(TinyUnet())
    return path, model, {k: v.detach().numpy().ravel() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_new_blocks_build_from_yaml_with_every_key_used(tiny_unet, precision, tmp_path):
    from netdef.build import BuildOptions, build_engine, define_network

    path, model, weights = tiny_unet
    opts = BuildOptions(precision=precision, opt_level=0)
    net = define_network(path, weights, opts, log=lambda m: None)  # strict: every key used, none missing
    assert tuple(net.definition.get_output(0).shape) == (-1, *_torch_shape(model, [(1, 3, 16, 16)])[1:])
    names = {layer.name for layer in _layers(net)}
    assert {"stem", "norm", "act", "ln", "up", "head", "down/upsample", "cat/concat"} <= names
    assert net.matches["down/upsample"] == "down" and net.matches["cat/concat"] == "cat"
    assert build_engine(path, weights, tmp_path / "u.engine", opts, log=lambda m: None).built


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_new_blocks_from_yaml_match_torch(tiny_unet, precision, tmp_path):
    from netdef.build import BuildOptions, build_engine
    from netdef.runtime import Engine
    from netdef.tools.verify import max_rel_error

    path, model, weights = tiny_unet
    res = build_engine(path, weights, tmp_path / "u.engine", BuildOptions(precision=precision, batch=(1, 2, 2),
                                                                           tf32=False), log=lambda m: None)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    limit = 1e-4 if precision == "fp32" else 2e-2  # eight layers deep: fp32 rounding adds up past 1e-5
    assert max_rel_error(Engine(res.path).infer(x, as_numpy=True)["y"], ref) <= limit


def test_layer_norm_axes_may_be_one_integer():
    """`axes: 1` (LayerNorm2d over channels) as `axes: [1]`; a float or a name is a SpecError naming the row's
    prefix, not a TypeError from inside the block."""
    from netdef.errors import SpecError

    c = 4
    net = Network({"n.weight": np.ones(c, np.float32), "n.bias": np.zeros(c, np.float32)})
    x = net.input("x", (-1, c, 3, 3))
    assert tuple(net.layer_norm(x, "n", axes=1).shape) == (-1, c, 3, 3)
    with pytest.raises(SpecError, match=r"n: LayerNorm axes 'one': expected a list of integer\(s\)"):
        net.layer_norm(x, "n", axes="one")


@pytest.mark.parametrize("op, fn", [("amax", np.max), ("amin", np.min)])
def test_reduce_takes_torchs_names_of_max_and_min(op, fn):
    """`op="amax"` (torch.amax, as the blocks' table writes it) was refused: only `max` was taken."""
    from netdef import trt_api
    from netdef.verify import evaluate

    net = Network({})
    y = net.reduce(net.input("x", (-1, 3, 4, 4)), "r", op, dims=[2, 3], keepdim=True)
    net.definition.raw.mark_output(y)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    out = evaluate(trt_api.describe_layers(net.definition), {"x": x})["r"]
    assert np.array_equal(np.asarray(out), fn(x, axis=(2, 3), keepdims=True))
