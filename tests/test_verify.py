"""`netdef verify`: the CPU evaluator of network definitions (per layer type, against torch), the layer-by-layer
comparison with PyTorch (resnet18, YOLOv5n, planted mistakes named first) and the GPU engine mode."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from netdef import trt_api  # noqa: E402
from netdef.cli import main  # noqa: E402
from netdef.errors import NetdefError, OptionError, WeightKeyError  # noqa: E402
from netdef.options import BuildOptions  # noqa: E402
from netdef.verify import UnsupportedLayer, evaluate, verify  # noqa: E402

RNG = np.random.default_rng(0)


def rand(*shape, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a


def run(build, *arrays):
    """Build a raw network with inputs `arrays` (x0, x1, ...) and `build(net, trt, inputs, W)` adding layers (W(arr)
    makes kept-alive trt.Weights); returns the evaluator's value of the returned layer's output as numpy."""
    trt = trt_api.module()
    builder = trt_api.create_builder()
    net, _ = trt_api.create_network(builder)
    xs = [net.add_input(f"x{i}", trt_api.trt_dtype(a.dtype), a.shape) for i, a in enumerate(arrays)]
    keep = []

    def W(arr):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        keep.append(arr)
        return trt.Weights(arr)

    layer = build(net, trt, xs, W)
    layer.name = "under_test"
    net.mark_output(layer.get_output(0))
    values = evaluate(trt_api.describe_layers(net), {f"x{i}": a for i, a in enumerate(arrays)})
    return values[layer.get_output(0).name].numpy()


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def close(out, ref, tol=1e-6):
    ref = ref.numpy() if hasattr(ref, "numpy") else np.asarray(ref)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


# ---------------------------------------------------------------- layer descriptions (trt_api)

def test_describe_layer_reads_attributes_and_weights():
    trt = trt_api.module()
    net, _ = trt_api.create_network(trt_api.create_builder())
    x = net.add_input("x", trt.float32, (1, 2, 5, 5))
    w = np.arange(4 * 2 * 3 * 3, dtype=np.float32)
    conv = net.add_convolution_nd(x, 4, (3, 3), trt.Weights(w), trt.Weights(np.ones(4, np.float32)))
    conv.stride_nd, conv.pre_padding, conv.post_padding = (2, 1), (1, 0), (0, 1)
    conv.name = "c"
    act = net.add_activation(conv.get_output(0), trt.ActivationType.LEAKY_RELU)
    act.alpha = 0.25
    d_conv, d_act = trt_api.describe_layers(net)
    assert (d_conv.type, d_conv.name, d_conv.inputs, d_conv.output_dtypes) == ("CONVOLUTION", "c", ["x"], ["float32"])
    assert d_conv.attrs["stride_nd"] == (2, 1) and d_conv.attrs["pre_padding"] == (1, 0)
    assert d_conv.attrs["post_padding"] == (0, 1) and d_conv.attrs["num_output_maps"] == 4
    np.testing.assert_array_equal(d_conv.weights["kernel"], w)
    assert d_act.type == "ACTIVATION" and d_act.attrs["type"] == "LEAKY_RELU" and d_act.attrs["alpha"] == 0.25
    assert d_act.inputs == [d_conv.outputs[0]]


# ---------------------------------------------------------------- the evaluator, per layer type

def test_convolution_groups_stride_dilation_asymmetric_padding():
    x, w, b = rand(1, 4, 9, 8), rand(6, 2, 3, 3), rand(6)

    def build(net, trt, xs, W):
        c = net.add_convolution_nd(xs[0], 6, (3, 3), W(w), W(b))
        c.num_groups, c.stride_nd, c.dilation_nd = 2, (2, 1), (1, 2)
        c.pre_padding, c.post_padding = (1, 0), (2, 1)
        return c

    close(run(build, x), F.conv2d(F.pad(t(x), [0, 1, 1, 2]), t(w), t(b), stride=(2, 1), dilation=(1, 2), groups=2))


def test_deconvolution_with_padding():
    x, w, b = rand(1, 4, 5, 5), rand(4, 3, 4, 4), rand(3)

    def build(net, trt, xs, W):
        d = net.add_deconvolution_nd(xs[0], 3, (4, 4), W(w), W(b))
        d.stride_nd, d.padding_nd = (2, 2), (1, 1)
        return d

    close(run(build, x), F.conv_transpose2d(t(x), t(w), t(b), stride=2, padding=1))


ACTIVATIONS = [
    ("RELU", 0, 0, F.relu), ("SIGMOID", 0, 0, torch.sigmoid), ("TANH", 0, 0, torch.tanh),
    ("LEAKY_RELU", 0.1, 0, lambda x: F.leaky_relu(x, 0.1)), ("ELU", 0.7, 0, lambda x: F.elu(x, 0.7)),
    ("SELU", 1.6732632423543772, 1.0507009873554805, F.selu), ("SOFTSIGN", 0, 0, F.softsign),
    ("SOFTPLUS", 1.0, 1.0, F.softplus), ("CLIP", -0.5, 0.7, lambda x: F.hardtanh(x, -0.5, 0.7)),
    ("HARD_SIGMOID", 1 / 6, 0.5, F.hardsigmoid), ("SCALED_TANH", 1.5, 0.5, lambda x: 1.5 * torch.tanh(0.5 * x)),
    ("THRESHOLDED_RELU", 0.3, 0, lambda x: F.threshold(x, 0.3, 0.0)), ("GELU_ERF", 0, 0, F.gelu),
    ("GELU_TANH", 0, 0, lambda x: F.gelu(x, approximate="tanh")),
]


@pytest.mark.parametrize("kind, alpha, beta, fn", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation(kind, alpha, beta, fn):
    if not hasattr(trt_api.module().ActivationType, kind):
        pytest.skip(f"{trt_api.version_string()} has no {kind}")
    x = rand(2, 3, 4) * 3

    def build(net, trt, xs, W):
        a = net.add_activation(xs[0], getattr(trt.ActivationType, kind))
        a.alpha, a.beta = alpha, beta
        return a

    close(run(build, x), fn(t(x)), tol=1e-6)


ELEMENTWISE = [("SUM", torch.add), ("PROD", torch.mul), ("MAX", torch.maximum), ("MIN", torch.minimum),
               ("SUB", torch.sub), ("DIV", torch.div), ("POW", torch.pow), ("FLOOR_DIV", torch.floor_divide),
               ("EQUAL", torch.eq), ("GREATER", torch.gt), ("LESS", torch.lt)]


@pytest.mark.parametrize("op, fn", ELEMENTWISE, ids=[e[0] for e in ELEMENTWISE])
def test_elementwise_broadcasting(op, fn):
    a, b = rand(2, 3, 4, positive=True), rand(1, 3, 1, positive=True)
    b[0, 1, 0] = a[0, 1, 0]  # EQUAL sees one equal pair
    out = run(lambda net, trt, xs, W: net.add_elementwise(xs[0], xs[1], getattr(trt.ElementWiseOperation, op)), a, b)
    close(out.astype(np.float64), fn(t(a), t(b)).double())


@pytest.mark.parametrize("op", ["AND", "OR", "XOR"])
def test_elementwise_logical(op):
    a, b = RNG.random((2, 5)) > 0.5, RNG.random((1, 5)) > 0.5
    out = run(lambda net, trt, xs, W: net.add_elementwise(xs[0], xs[1], getattr(trt.ElementWiseOperation, op)), a, b)
    ref = {"AND": np.logical_and, "OR": np.logical_or, "XOR": np.logical_xor}[op](a, b)
    np.testing.assert_array_equal(out, ref)


UNARY = [("EXP", torch.exp), ("LOG", torch.log), ("SQRT", torch.sqrt), ("RECIP", torch.reciprocal),
         ("ABS", torch.abs), ("NEG", torch.neg), ("SIN", torch.sin), ("COS", torch.cos), ("ERF", torch.erf),
         ("FLOOR", torch.floor), ("CEIL", torch.ceil), ("SIGN", torch.sign), ("ATAN", torch.atan)]


@pytest.mark.parametrize("op, fn", UNARY, ids=[u[0] for u in UNARY])
def test_unary(op, fn):
    x = rand(3, 4, positive=op in ("LOG", "SQRT"))
    close(run(lambda net, trt, xs, W: net.add_unary(xs[0], getattr(trt.UnaryOperation, op)), x), fn(t(x)))


@pytest.mark.parametrize("mode", ["UNIFORM", "CHANNEL", "ELEMENTWISE"])
def test_scale_with_power(mode):
    x = rand(1, 3, 2, 2, positive=True)
    shape = {"UNIFORM": (1,), "CHANNEL": (3,), "ELEMENTWISE": (3, 2, 2)}[mode]
    scale, shift, power = rand(*shape, positive=True), rand(*shape, positive=True), rand(*shape, positive=True)
    M = trt_api.module().ScaleMode
    out = run(lambda net, trt, xs, W: net.add_scale(xs[0], getattr(M, mode), W(shift), W(scale), W(power)), x)
    view = {"UNIFORM": (), "CHANNEL": (3, 1, 1), "ELEMENTWISE": (3, 2, 2)}[mode]
    close(out, (t(x) * t(scale).reshape(view) + t(shift).reshape(view)) ** t(power).reshape(view))


@pytest.mark.parametrize("kind, exclude", [("MAX", True), ("AVERAGE", False), ("AVERAGE", True)])
def test_pooling_with_padding(kind, exclude):
    x = rand(1, 2, 7, 6)

    def build(net, trt, xs, W):
        p = net.add_pooling_nd(xs[0], getattr(trt.PoolingType, kind), (3, 3))
        p.stride_nd, p.padding_nd, p.average_count_excludes_padding = (2, 2), (1, 1), exclude
        return p

    ref = F.max_pool2d(t(x), 3, 2, 1) if kind == "MAX" else F.avg_pool2d(t(x), 3, 2, 1, count_include_pad=not exclude)
    close(run(build, x), ref)


ROUNDED_UP = [((7, 6), 3, 2, 1, 1, (4, 4)),  # torch's ceil_mode: no window starts in the padding
              ((6, 9), 2, 2, 1, 1, (4, 6)),  # ceil((M - k) / s) + 1: torch drops the last along W, (4, 5)
              ((5, 7), 3, 2, 0, 1, (3, 4))]  # asymmetric; the last windows reach 1 past the post-padding


@pytest.mark.parametrize("kind, exclude, size, k, s, pre, post, want", [
    (kind, exclude, *case) for kind, exclude in (("MAX", True), ("AVERAGE", False), ("AVERAGE", True))
    for case in ROUNDED_UP if not (exclude and kind == "AVERAGE" and case is ROUNDED_UP[1])])
def test_pooling_rounded_up(kind, exclude, size, k, s, pre, post, want):
    """EXPLICIT_ROUND_UP as TensorRT defines it: ceil((I + pre + post - k) / s) + 1 windows; an average divides by
    the window's overlap with the input (excluding padding) or with the padded input [-pre, I + post). (TensorRT
    refuses an excluding average whose padding and reach past it make a window of padding alone.)"""
    x = rand(1, 2, *size)

    def build(net, trt, xs, W):
        p = net.add_pooling_nd(xs[0], getattr(trt.PoolingType, kind), (k, k))
        p.stride_nd, p.pre_padding, p.post_padding = (s, s), (pre, pre), (post, post)
        p.padding_mode, p.average_count_excludes_padding = trt.PaddingMode.EXPLICIT_ROUND_UP, exclude
        return p

    out = run(build, x)
    assert out.shape[2:] == want
    reach = [(n - 1) * s + k - (i + pre + post) for n, i in zip(want, size)]  # past the post-padding
    padded = F.pad(t(x), [pre, post + reach[1], pre, post + reach[0]], value=-math.inf if kind == "MAX" else 0.0)
    if kind == "MAX":
        close(out, F.max_pool2d(padded, k, s))
    else:
        inside = F.pad(torch.ones(1, 1, *size, dtype=torch.float64), [pre, post, pre, post],
                       value=0.0 if exclude else 1.0)
        close(out, F.avg_pool2d(padded, k, s) / F.avg_pool2d(F.pad(inside, [0, reach[1], 0, reach[0]]), k, s))
    if size == (7, 6):  # torch's ceil_mode
        close(out, F.max_pool2d(t(x), k, s, 1, ceil_mode=True) if kind == "MAX" else
              F.avg_pool2d(t(x), k, s, 1, ceil_mode=True, count_include_pad=not exclude))


@pytest.mark.parametrize("op, fn", [("SUM", torch.sum), ("AVG", torch.mean), ("MAX", torch.amax),
                                    ("MIN", torch.amin), ("PROD", None)])
@pytest.mark.parametrize("keep", [True, False])
def test_reduce(op, fn, keep):
    x = rand(2, 3, 4, 5)
    out = run(lambda net, trt, xs, W: net.add_reduce(xs[0], getattr(trt.ReduceOperation, op), 0b1010, keep), x)
    ref = t(x).prod(3, keepdim=True).prod(1, keepdim=True) if fn is None else fn(t(x), dim=(1, 3), keepdim=True)
    close(out, ref if keep else ref.reshape(2, 4))


def test_shuffle_transposes_and_reshape_with_placeholders():
    x = rand(2, 3, 4, 5)

    def build(net, trt, xs, W):
        s = net.add_shuffle(xs[0])
        s.first_transpose, s.reshape_dims, s.second_transpose = (0, 2, 1, 3), (0, -1, 5), (0, 2, 1)
        return s

    close(run(build, x), t(x).permute(0, 2, 1, 3).reshape(2, -1, 5).permute(0, 2, 1))


def test_concatenation():
    a, b = rand(1, 2, 3), rand(1, 4, 3)

    def build(net, trt, xs, W):
        c = net.add_concatenation(xs)
        c.axis = 1
        return c

    close(run(build, a, b), torch.cat([t(a), t(b)], 1))


@pytest.mark.parametrize("op0, op1", [("NONE", "NONE"), ("TRANSPOSE", "NONE"), ("NONE", "TRANSPOSE"),
                                      ("TRANSPOSE", "TRANSPOSE"), ("VECTOR", "NONE"), ("NONE", "VECTOR")])
def test_matrix_multiply_with_broadcasting(op0, op1):
    a = rand(1, 4, 3) if op0 == "TRANSPOSE" else rand(2, 3) if op0 == "VECTOR" else rand(1, 3, 4)
    b = rand(2, 5, 4) if op1 == "TRANSPOSE" else rand(2, 4) if op1 == "VECTOR" else rand(2, 4, 5)
    if op0 == "VECTOR":
        a, b = rand(2, 4), rand(2, 4, 5)
    M = trt_api.module().MatrixOperation
    out = run(lambda net, trt, xs, W: net.add_matrix_multiply(xs[0], getattr(M, op0), xs[1], getattr(M, op1)), a, b)
    ta, tb = t(a), t(b)
    ta = ta.transpose(-1, -2) if op0 == "TRANSPOSE" else ta
    tb = tb.transpose(-1, -2) if op1 == "TRANSPOSE" else tb
    if op0 == "VECTOR":
        ref = (ta.unsqueeze(-2) @ tb).squeeze(-2)
    elif op1 == "VECTOR":
        ref = (ta @ tb.unsqueeze(-1)).squeeze(-1)
    else:
        ref = ta @ tb
    close(out, ref)


def test_softmax_axis_bitmask():
    x = rand(2, 3, 4)

    def build(net, trt, xs, W):
        s = net.add_softmax(xs[0])
        s.axes = 1 << 1
        return s

    close(run(build, x), torch.softmax(t(x), 1))


@pytest.mark.parametrize("mode, align", [("nearest", None), ("bilinear", False), ("bilinear", True)])
@pytest.mark.parametrize("by_shape", [False, True])
def test_resize(mode, align, by_shape):  # nearest: asymmetric, floor; bilinear: half-pixel or corner-aligned
    x = rand(1, 2, 3, 4)
    size = (7, 10) if by_shape and mode == "bilinear" else (6, 8)

    def build(net, trt, xs, W):
        r = net.add_resize(xs[0])
        if by_shape:
            r.shape = (1, 2, *size)
        else:
            r.scales = [1.0, 1.0, 2.0, 2.0]
        trt_api.set_resize_mode(r, mode, bool(align))
        return r

    kwargs = {"mode": "nearest"} if mode == "nearest" else {"mode": "bilinear", "align_corners": align}
    close(run(build, x), F.interpolate(t(x), size=size, **kwargs))


@pytest.mark.parametrize("mode, pad_mode", [("FILL", "constant"), ("REFLECT", "reflect"), ("CLAMP", "replicate"),
                                            ("WRAP", "circular")])
def test_slice_modes_as_padding(mode, pad_mode):
    x = rand(1, 2, 4, 5)

    def build(net, trt, xs, W):
        s = net.add_slice(xs[0], (0, 0, -2, -1), (1, 2, 4 + 3, 5 + 3), (1, 1, 1, 1))
        s.mode = getattr(getattr(trt, "SampleMode", None) or trt.SliceMode, mode)  # 8.6: SliceMode
        return s

    close(run(build, x), F.pad(t(x), [1, 2, 2, 1], mode=pad_mode))


def test_slice_strided():
    x = rand(2, 3, 8)
    out = run(lambda net, trt, xs, W: net.add_slice(xs[0], (1, 0, 1), (1, 3, 3), (1, 1, 3)), x)
    close(out, t(x)[1:2, :, 1::3])


def test_constant_cast_identity():
    c = rand(1, 3, 1)
    x = rand(2, 3, 4)

    def build(net, trt, xs, W):
        k = net.add_constant(c.shape, W(c))
        s = net.add_elementwise(xs[0], k.get_output(0), trt.ElementWiseOperation.SUM)
        h = net.add_cast(s.get_output(0), trt.float16)
        return net.add_identity(net.add_cast(h.get_output(0), trt.float32).get_output(0))

    close(run(build, x), (t(x) + t(c)).half().double(), tol=0)  # rounded to float16 at the cast


def test_normalization_layer_norm():
    x, g, b = rand(2, 3, 6), rand(1, 1, 6), rand(1, 1, 6)

    def build(net, trt, xs, W):
        gs = net.add_constant(g.shape, W(g)).get_output(0)
        bs = net.add_constant(b.shape, W(b)).get_output(0)
        n = net.add_normalization(xs[0], gs, bs, 1 << 2)
        n.epsilon = 1e-5
        return n

    close(run(build, x), F.layer_norm(t(x), (6,), t(g).reshape(6), t(b).reshape(6), 1e-5))


def test_normalization_group_norm():
    x, g, b = rand(2, 4, 3, 3), rand(1, 4, 1, 1), rand(1, 4, 1, 1)

    def build(net, trt, xs, W):
        gs = net.add_constant(g.shape, W(g)).get_output(0)
        bs = net.add_constant(b.shape, W(b)).get_output(0)
        n = net.add_normalization(xs[0], gs, bs, (1 << 2) | (1 << 3))
        n.epsilon, n.num_groups = 1e-5, 2
        return n

    close(run(build, x), F.group_norm(t(x), 2, t(g).reshape(4), t(b).reshape(4), 1e-5))


def test_padding_and_select_and_gather():
    x = rand(1, 2, 3, 4)
    close(run(lambda net, trt, xs, W: net.add_padding_nd(xs[0], (1, 2), (0, 1)), x), F.pad(t(x), [2, 1, 1, 0]))

    a, b = rand(2, 3), rand(2, 3)
    cond = a > b
    out = run(lambda net, trt, xs, W: net.add_select(xs[0], xs[1], xs[2]), cond, a, b)
    close(out, torch.where(torch.from_numpy(cond), t(a), t(b)))

    idx = np.array([[2, 0], [1, 1]], np.int32)

    def gather(net, trt, xs, W):
        return net.add_gather(xs[0], xs[1], 2)

    close(run(gather, x, idx), t(x)[:, :, idx])


def test_unsupported_layer_is_named():
    x = rand(1, 5)
    with pytest.raises(UnsupportedLayer, match=r"layer 'under_test'.*NON_ZERO"):
        run(lambda net, trt, xs, W: net.add_non_zero(xs[0]), x)


@pytest.mark.parametrize("op", ["MAX", "MIN"])
def test_topk_and_a_batched_gather(op):
    """TopK (sorted values and indices over one axis) and a gather with one element-wise dimension (each batch
    entry with its own indices), as YOLO26's end-to-end head uses them."""
    x = rand(2, 3, 7)

    def topk(net, trt, xs, W):
        return net.add_topk(xs[0], getattr(trt.TopKOperation, op), 4, 1 << 2)

    values, index = t(x).topk(4, dim=2, largest=op == "MAX")
    close(run(topk, x), values)
    idx = np.array([[0, 2], [1, 1]], np.int32)

    def gather(net, trt, xs, W):
        layer = net.add_gather(xs[0], net.add_constant(idx.shape, trt.Weights(idx)).get_output(0), 2)
        layer.num_elementwise_dims = 1
        return layer
    close(run(gather, x), torch.stack([t(x)[0][:, [0, 2]], t(x)[1][:, [1, 1]]]))


def test_a_layer_the_cpu_cannot_compute_names_the_setting_without_it():
    from netdef.spec import load_spec
    from netdef.trt_api import LayerDescription
    from netdef.verify import _check_evaluable

    plugin = LayerDescription(0, "model.24/yolo_decode_nms", "PLUGIN_V2", ["x"], ["num_dets"], ["int32"], [(1, 1)],
                              {}, {})
    with pytest.raises(UnsupportedLayer, match=r"layer 'model.24/yolo_decode_nms' is a plugin \(PLUGIN_V2\), which "
                                               r"the CPU evaluator cannot compute: verify the network without it "
                                               r"\(--set head=decode\) or without --cpu on a GPU$"):
        _check_evaluable([plugin], load_spec("yolov5n"), {"head": "plugin"})
    with pytest.raises(UnsupportedLayer, match=r"\(--set head=decode, leaving out --set conf_thres\)"):
        _check_evaluable([plugin], load_spec("yolov5n"), {"head": "plugin", "conf_thres": 0.4})  # plugin-only
    other = LayerDescription(1, "model.23/nonzero", "NON_ZERO", ["x"], ["y"], ["int32"], [(1, 300)], {}, {})
    with pytest.raises(UnsupportedLayer, match=r"^layer 'model.23/nonzero' is a NON_ZERO layer, which the CPU "
                                               r"evaluator cannot compute: verify the network without --cpu on a "
                                               r"GPU$"):
        _check_evaluable([other], load_spec("yolo26n"), {})


# ---------------------------------------------------------------- networks against PyTorch

def test_resnet18_cpu_matches_every_layer(tmp_path, capsys):
    wts = tmp_path / "r18.wts"
    assert main(["export", "torchvision:resnet18", "-o", str(wts), "--randomize-bn", "--seed", "3"]) == 0
    rc = main(["verify", "resnet18", "-w", str(wts), "--model", "torchvision:resnet18", "--cpu",
               "--input-shape", "64,64"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASS: 32 of 32 matched layers within 1e-05" in out and ", 0 skipped" in out
    assert "layer1.0.conv1         layer1.0.bn1" in out  # BatchNorm folded in: compared with the BN module
    # torchvision's BasicBlock reuses its ReLU (called twice, not comparable): the unit's output is compared instead
    assert re.search(r"\nlayer1\.0/relu +layer1\.0 +1x64x16x16 .* pass", out), out


def test_a_row_output_no_module_checks_is_named_before_the_failure_it_causes(torchvision_wts, tmp_path, capsys):
    """torchvision's stem row (prefix "", conv1 + bn1 + the model's relu) without its activation passed at conv1
    (compared with bn1) and failed at maxpool, with no word of the row before it; the report now names the row
    whose own output nothing compared. A shape failure (a wrong stride: the layer's own fault) names none."""
    from netdef.spec import load_spec

    _, wts = torchvision_wts("resnet18")
    arch = tmp_path / "r18none.yaml"
    text = load_spec("resnet18").path.read_text()
    arch.write_text(text.replace('bn: bn1, act: relu}, ""]', 'bn: bn1, act: none}, ""]'))
    assert main(["verify", str(arch), "-w", str(wts), "--model", "torchvision:resnet18", "--cpu",
                 "--input-shape", "64,64"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("first divergent layer: maxpool (PyTorch module maxpool): max rel error")
    assert lines[1] == f"  made by {arch}:9: row 1 (MaxPool)"  # the YAML row of the layer, as build errors name it
    assert lines[2] == ("  the divergence may begin before it, at a row whose output no PyTorch module of its name "
                        f"could check: {arch}:8: row 0 (ConvBnAct) (layer conv1)")


SEQUENTIAL_YAML = """
name: seq
input: {name: input, shape: [3, 16, 16]}
output: out
layers:
  - [-1, 1, ConvBnAct, {c2: 8, k: 3, conv: "0", bn: "1"}, enc]
  - [-1, 1, ConvBnAct, {c2: 8, k: 3, conv: "3", bn: "4"}, enc]
  - [-1, 1, Conv2d, {c2: 2, k: 1}, head]
"""


def test_rows_that_share_a_prefix_are_compared_with_it_at_the_last():
    """A Sequential of conv-BN-ReLU twice written as two ConvBnAct rows of one prefix: the first row's output was
    compared with the whole Sequential's (1.57 off: a correct network failed); the module ends at the last row."""
    from netdef.export import randomize_batchnorm
    from netdef.spec import parse_spec

    torch.manual_seed(0)
    enc = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    model = torch.nn.Sequential()
    model.add_module("enc", enc)
    model.add_module("head", torch.nn.Conv2d(8, 2, 1))
    model.eval()
    randomize_batchnorm(model, seed=2)
    report = verify(parse_spec(SEQUENTIAL_YAML, "seq"), model.state_dict(), model, cpu=True, log=lambda m: None)
    assert report.ok, report.table()
    assert [r.layer for r in report.rows if r.module == "enc"] == ["enc.3/relu"]


def test_resnet18_report_values(torchvision_wts):
    model, wts = torchvision_wts("resnet18")
    report = verify("resnet18", wts, model, cpu=True, opts=BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    compared = [r for r in report.rows if r.status != "skip"]
    assert report.ok and len(compared) == 36  # with the 8 residual units, and each layerN row as its module
    assert all(r.error is not None and r.error <= 1e-5 for r in compared)
    assert compared[0].layer == "conv1" and compared[0].module == "bn1"
    assert compared[-1].module == "(model output)" and compared[-1].shape == (1, 1000)


def test_a_classifier_of_another_class_count_says_how_to_make_the_model(tmp_path):
    """Weights of a 10-class ResNet-18 against `--model torchvision:resnet18` (1000 classes): the size error says
    the count and gives the --model that makes it."""
    from netdef.export import export_wts

    wts = tmp_path / "r18_10.wts"
    export_wts("torchvision:resnet18(num_classes=10)", wts, log=lambda m: None)
    with pytest.raises(WeightKeyError, match=r"fc\.bias \(10 values, model \(1000,\)\)\nThe weights' fc has 10 "
                                             r"outputs, the model's 1000: make the model with 10 classes, --model "
                                             r'"torchvision:resnet18\(num_classes=10\)"$'):
        verify("resnet18", wts, "torchvision:resnet18", cpu=True, opts=BuildOptions(input_hw=(64, 64)),
               log=lambda m: None)


def test_a_dynamic_size_is_verified_at_sizes_of_its_range(torchvision_wts, tmp_path, capsys):
    """A network defined with a dynamic input size gets images of the range's OPT size (or the size asked for),
    not the batch in every dynamic dimension; the CLI checks MIN, OPT and MAX in turn."""
    model, wts = torchvision_wts("resnet18")
    rng = ((32, 32), (48, 64), (64, 64))
    report = verify("resnet18", wts, model, cpu=True, opts=BuildOptions(input_range=rng), batch=2,
                    log=lambda m: None)
    assert report.ok and "batch 2, input 48x64" in report.summary()
    assert report.rows[0].layer == "conv1" and report.rows[0].shape == (2, 64, 24, 32)
    assert verify("resnet18", wts, model, cpu=True, opts=BuildOptions(input_range=rng), size=(32, 40),
                  log=lambda m: None).rows[0].shape == (1, 64, 16, 20)
    with pytest.raises(OptionError, match=r"verify size 80x64: outside the input range 32x32:48x64:64x64"):
        verify("resnet18", wts, model, cpu=True, opts=BuildOptions(input_range=rng), size=(80, 64))
    with pytest.raises(OptionError, match=r"the network's input size is static"):
        verify("resnet18", wts, model, cpu=True, opts=BuildOptions(input_hw=(64, 64)), size=(64, 64))
    capsys.readouterr()
    assert main(["verify", "resnet18", "-w", str(wts), "--model", "torchvision:resnet18", "--cpu",
                 "--input-shape", "32x32:48x64:64x64"]) == 0
    out = capsys.readouterr().out
    assert [line.split("fp32, ")[1].split(")")[0] for line in out.splitlines() if line.startswith("verify resnet18")] \
        == ["input 32x32", "input 48x64", "input 64x64"]


def test_yolov5n_cpu_matches_reference(yolov5_models, yolov5_wts):
    pytest.importorskip("netdef.testing.yolov5_reference")
    from netdef.testing import yolov5_reference as ref

    if not ref.yolov5_available():
        pytest.skip("needs the yolov5 package (pip install --no-deps yolov5==7.0.14)")
    model, _ = yolov5_models("yolov5n")
    report = verify("yolov5n", yolov5_wts("yolov5n"), model, cpu=True, opts=BuildOptions(input_hw=(128, 160)),
                    log=lambda m: None)
    compared = [r for r in report.rows if r.status != "skip"]
    assert report.ok, report.summary()
    assert len(compared) >= 61 and compared[-1].shape == (1, 1260, 85)  # every convolution, the output
    assert {r.module for r in compared} >= {"model.0.bn", "model.24.m.2", "(model output)"}


def test_every_output_of_a_segmentation_model_is_compared(tmp_path):
    """yolov8n-seg has two outputs (predictions and prototypes): each is compared with the model's output tensor
    of its shape (the report's last rows), all pass; the predictions part by part (boxes, scores, mask
    coefficients: boxes of hundreds of pixels would hide an error in scores of 1e-4, the whole tensor's max being
    the bound)."""
    from netdef.testing import ultralytics_reference as ref
    from netdef.wts import write_wts

    if not ref.ultralytics_available():
        pytest.skip("needs the ultralytics package (pip install --no-deps ultralytics==8.4.190)")
    model, sd = ref.reference_model("yolov8n-seg", nc=3)
    write_wts(tmp_path / "seg.wts", sd)
    report = verify("yolov8n-seg", str(tmp_path / "seg.wts"), model, cpu=True,
                    opts=BuildOptions(input_hw=(96, 128)), log=lambda m: None)
    outs = [r for r in report.rows if r.module == "(model output)"]
    assert report.ok, report.summary()
    assert [r.status for r in outs] == ["pass"] * 4
    assert [(r.layer, r.shape) for r in outs] == [
        ("(output) output[boxes]", (1, 4, 252)), ("(output) output[scores]", (1, 3, 252)),
        ("(output) output[mask coefficients]", (1, 32, 252)), ("(output) proto", (1, 32, 24, 32))], outs
    assert outs[0].where == outs[1].where == outs[2].where != ""  # the head's row, as the whole output's


def test_a_checkpoint_of_another_ultralytics_model_is_named(tmp_path):
    """--model the wrong checkpoint (yolo11n weights, a yolov8n model as Ultralytics makes it from its YAML, which
    it records): the key error says which model that is."""
    from netdef.testing import ultralytics_reference as ref
    from netdef.wts import write_wts

    if not ref.ultralytics_available():
        pytest.skip("needs the ultralytics package (pip install --no-deps ultralytics==8.4.190)")
    write_wts(tmp_path / "y11n.wts", ref.reference_model("yolo11n", nc=3)[1])
    logged = []
    with pytest.raises(WeightKeyError, match=r"does not fit the PyTorch model: .*\nThe PyTorch model is an "
                                             r"Ultralytics yolov8n, the weights are yolo11n's") as e:
        verify("yolo11n", str(tmp_path / "y11n.wts"), ref.import_tasks().DetectionModel("yolov8n.yaml", nc=3,
               verbose=False), cpu=True, opts=BuildOptions(input_hw=(64, 64)), log=logged.append)
    assert "The PyTorch model is an Ultralytics yolov8n" in e.value.hint  # the error's parts kept (netdef show's)
    assert not any("differ from" in m for m in logged), logged  # no note on weights of another model's keys


def test_tensorrtx_yolov5_buffers_are_checked_and_accepted(yolov5_models, tmp_path):
    """tensorrtx's gen_wts.py for YOLOv5 v7.0 adds `anchor_grid` (pixels) and `strides` to the state_dict: netdef
    checks both against the anchors and its own strides, and neither verify nor calibrate_torch asks the PyTorch
    model for them (calibrate_torch refused the model it was exported from: 'file only: anchor_grid, strides')."""
    from netdef.testing import yolov5_reference as ref
    from netdef.wts import write_wts

    if not ref.yolov5_available():
        pytest.skip("needs the yolov5 package (pip install --no-deps yolov5==7.0.14)")
    model, sd = yolov5_models("yolov5n")
    strides = np.float32([8, 16, 32])
    trtx = dict(sd) | {"model.24.anchor_grid": sd["model.24.anchors"].numpy() * strides[:, None, None],
                       "model.24.strides": strides}
    write_wts(tmp_path / "trtx.wts", trtx)
    report = verify("yolov5n", tmp_path / "trtx.wts", model, cpu=True, opts=BuildOptions(input_hw=(128, 160)),
                    log=lambda m: None)
    assert report.ok, report.summary()
    # calibrated on the CPU from that file, with the model it came from (which lacks the two buffers), and built
    from netdef.build import define_network
    from netdef.int8.calibrate import calibrate_torch

    batches = [np.random.default_rng(0).random((2, 3, 128, 160), dtype=np.float32)]
    table = calibrate_torch(model, "yolov5n", tmp_path / "trtx.wts", batches, tmp_path / "t.json", method="max",
                            input_hw=(128, 160), log=lambda m: None)
    assert table.amax and define_network("yolov5n", tmp_path / "trtx.wts", BuildOptions(
        precision="int8", calibration=str(tmp_path / "t.json"), input_hw=(128, 160)), log=lambda m: None).quantizer
    write_wts(tmp_path / "bad.wts", trtx | {"model.24.strides": np.float32([8, 16, 64])})
    with pytest.raises(WeightKeyError, match=r"model\.24: 'model\.24\.strides' \[8\.0, 16\.0, 64\.0\] disagrees "
                                             r"with the network's strides \[8, 16, 32\]"):
        verify("yolov5n", tmp_path / "bad.wts", model, cpu=True, opts=BuildOptions(input_hw=(128, 160)),
               log=lambda m: None)


TINY_MODEL = '''
import torch
from torch import nn
from netdef.export import randomize_batchnorm


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        self.conv3 = nn.Conv2d(16, 16, 3, 1, 1)

    def forward(self, x):
        return self.conv3(self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))))


def make():
    torch.manual_seed(0)
    model = Tiny()
    randomize_batchnorm(model, 0)
    return model.eval()
'''

TINY_YAML = '''
name: tiny
input: {{name: input, shape: [3, 16, 16]}}
output: out
layers:
  - [-1, 1, ConvBnAct, {{c2: 8, k: 3, s: 1, p: 1, conv: conv1, bn: bn1, act: relu}}, ""]
  - [-1, 1, ConvBnAct, {{c2: 16, k: 3, s: {stride}, p: 1, conv: conv2, bn: bn2, act: relu}}, ""]
  - [-1, 1, {last}, {{c2: 16, k: 3, act: none}}, conv3]
'''

PLANTED_BLOCK = '''
from netdef.registry import block


@block("PlantedPadConv")
def planted_pad_conv(net, x, prefix, c2, k, act):
    """A 3x3 convolution padded (0, 0) before and (2, 2) after, where PyTorch pads (1, 1) on each side: the
    output has the right shape and wrong values."""
    padded = net.definition.add_padding_nd(x, (0, 0), (2, 2)).get_output(0)
    return net.conv(padded, prefix, c2, k, 1, p=0, bias=True, act=act)
'''


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """(yaml(stride, last) -> path, .wts path): the tiny model's module on sys.path, its weights exported."""
    (tmp_path / "tiny_model.py").write_text(TINY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    wts = tmp_path / "tiny.wts"
    assert main(["export", "tiny_model:make", "-o", str(wts)]) == 0

    def yaml(stride: int = 2, last: str = "ConvBnAct") -> str:
        path = tmp_path / f"tiny_s{stride}_{last}.yaml"
        path.write_text(TINY_YAML.format(stride=stride, last=last))
        return str(path)

    return yaml, str(wts)


def test_tiny_network_passes(tiny, capsys):
    yaml, wts = tiny
    assert main(["verify", yaml(), "-w", wts, "--model", "tiny_model:make", "--cpu"]) == 0
    assert "PASS: 4 of 4 matched layers" in capsys.readouterr().out


def test_a_model_file_of_your_own_is_a_source(tiny, tmp_path, capsys):
    """--model path/to/file.py:make (as --blocks takes a file), imported from its path, not from sys.path."""
    yaml, wts = tiny
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "my_tiny.py").write_text(TINY_MODEL)
    assert main(["verify", yaml(), "-w", wts, "--model", f"{tmp_path}/elsewhere/my_tiny.py:make", "--cpu"]) == 0
    assert "PASS: 4 of 4 matched layers" in capsys.readouterr().out
    with pytest.raises(NetdefError, match=r"cannot import '.*nothere\.py:make': no Python file .*nothere\.py$"):
        verify(yaml(), wts, f"{tmp_path}/nothere.py:make", cpu=True, log=lambda m: None)


def test_a_checkpoint_of_the_pickled_model_is_a_source_on_the_command_line(tiny, tmp_path, capsys):
    """`netdef verify --model CHECKPOINT`: a .pt of the pickled nn.Module (torch.save(model)) and a trainer's
    checkpoint dict holding it (its 'model') are loaded, the .wts put in, and every layer compared; a .pt of a bare
    state_dict is refused as no model, exit status 1."""
    from tiny_model import make  # the tiny fixture's module: the checkpoints unpickle its class

    yaml, wts = tiny
    model = make()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # the checkpoint's own values: replaced by the .wts's
    torch.save(model, tmp_path / "tiny.pt")
    torch.save({"epoch": 3, "model": model, "optimizer": None}, tmp_path / "best.pt")
    for ckpt in ("tiny.pt", "best.pt"):
        assert main(["verify", yaml(), "-w", wts, "--model", str(tmp_path / ckpt), "--cpu"]) == 0
        out, err = capsys.readouterr()
        assert "PASS: 4 of 4 matched layers" in out, out + err
        assert f"loading {tmp_path / ckpt} with PyTorch" in err
        # its own (zeroed) weights are not the .wts's: PASS is about the .wts, and the note says so
        assert f"note: the weights in {tmp_path / ckpt} differ from {wts} in " in err and "another checkpoint" in err
    from netdef.wts import read_wts

    model.load_state_dict({k: torch.from_numpy(v).reshape(model.state_dict()[k].shape)
                           for k, v in read_wts(wts).items()})
    torch.save(model, tmp_path / "same.pt")  # the checkpoint the .wts came from: no note
    assert main(["verify", yaml(), "-w", wts, "--model", str(tmp_path / "same.pt"), "--cpu"]) == 0
    assert "differ from" not in capsys.readouterr().err
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    assert main(["verify", yaml(), "-w", wts, "--model", str(tmp_path / "sd.pt"), "--cpu"]) == 1
    err = capsys.readouterr().err
    assert ("gives a mapping of type OrderedDict (weights without the model's code), not a torch.nn.Module; verify "
            "needs the model's code") in err
    assert "\"ultralytics.nn.tasks:DetectionModel(cfg='yolo11n.yaml', nc=3)\"" in err  # as a command line takes it
    assert main(["verify", yaml(), "-w", wts, "--model", wts, "--cpu"]) == 1  # the .wts for the model
    assert f"--model {wts} is a .wts weights file: verify builds the network from the .wts given to -w" in \
        capsys.readouterr().err


def test_planted_wrong_stride_is_named_first(tiny, capsys):
    yaml, wts = tiny
    assert main(["verify", yaml(stride=1), "-w", wts, "--model", "tiny_model:make", "--cpu"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("first divergent layer: conv2 (PyTorch module bn2): shape (1, 16, 16, 16) != "
                                   "PyTorch's (1, 16, 8, 8)")
    assert out.splitlines()[1] == f"  made by {yaml(stride=1)}:7: row 1 (ConvBnAct)"  # the YAML row that made it
    assert "the divergence may begin before it" not in out  # a shape: conv2's own stride
    assert re.search(r"^conv1 +bn1 +1x8x16x16 +\S+ +pass$", out, re.M) and "FAIL: 1 of 4 matched layers" in out


def test_planted_wrong_padding_is_named_first(tiny, tmp_path, capsys):
    yaml, wts = tiny
    blocks = tmp_path / "planted_blocks.py"
    blocks.write_text(PLANTED_BLOCK)
    assert main(["verify", yaml(last="PlantedPadConv"), "-w", wts, "--model", "tiny_model:make", "--cpu",
                 "--blocks", str(blocks)]) == 1
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("first divergent layer: conv3 (PyTorch module conv3): max rel error ")
    assert float(first.rsplit("error ", 1)[1].split(" >")[0]) > 1e-2  # values, not shapes, differ
    assert re.search(r"^conv2 +bn2 +1x16x8x8 +\S+ +pass$", out, re.M) and "(output) out" in out


def test_fp16_network_is_evaluated_in_half_precision(tiny):
    yaml, wts = tiny
    report = verify(yaml(), wts, "tiny_model:make", cpu=True, opts=BuildOptions(precision="fp16"), log=lambda m: None)
    errors = [r.error for r in report.rows]
    assert report.ok and report.tol == 1e-2 and len(errors) == 4
    if trt_api.info().strongly_typed:  # the definition holds float16 tensors: their rounding shows
        assert all(1e-5 < e < 1e-2 for e in errors)
    else:  # 8.6: fp16 is a builder flag, the definition stays float32
        assert all(e < 1e-5 for e in errors)


def test_a_half_precision_model_takes_the_weights_unrounded(tiny, tmp_path):
    """A checkpoint saved in half precision (Ultralytics' and YOLOv5's trainers save model.half()) takes the .wts's
    float32 values as they are, as the network does: a .wts of other float32 weights (a plain state_dict, say)
    passes, not fails on the checkpoint's float16 rounding."""
    from tiny_model import make  # the tiny fixture's module

    yaml, wts = tiny
    model = make().half()
    report = verify(yaml(), wts, model, cpu=True, log=lambda m: None)
    assert report.ok, [(r.layer, r.error) for r in report.rows]
    assert next(model.parameters()).dtype == torch.float16  # the caller's module left as it was
    ckpt = tmp_path / "best.pt"
    torch.save({"epoch": -1, "model": model, "ema": None}, ckpt)  # as the trainers save it
    assert verify(yaml(), wts, str(ckpt), cpu=True, log=lambda m: None).ok


def test_weights_must_fit_the_model(tiny, tmp_path):
    from netdef.wts import read_wts, write_wts

    yaml, wts = tiny
    tensors = read_wts(wts)
    tensors["extra.weight"] = np.zeros(3, np.float32)
    del tensors["bn1.running_var"]
    bad = tmp_path / "bad.wts"
    write_wts(bad, tensors)
    with pytest.raises(WeightKeyError, match=r"(?s)bad\.wts: 1 key\(s\) the architecture needs are missing:\n  "
                                             r"bn1\.running_var .*not used by the architecture:\n  extra\.weight"):
        verify(yaml(), bad, "tiny_model:make", cpu=True, log=lambda m: None)
    (tmp_path / "renamed_model.py").write_text(TINY_MODEL.replace("self.conv1, self.bn1", "self.first, self.bn1")
                                                .replace("self.conv1(x)", "self.first(x)"))
    with pytest.raises(WeightKeyError, match=r"does not fit the PyTorch model: 1 model key\(s\) missing from it: "
                                             r"first\.weight; 1 key\(s\) the model does not have: conv1\.weight"):
        verify(yaml(), wts, "renamed_model:make", cpu=True, log=lambda m: None)  # the file fits the YAML only


def test_weights_load_with_the_modules_versions():
    """A module that reads its version from the state_dict's metadata (torchvision's MNASNet raises without it)
    loads the .wts as with `model.load_state_dict(model.state_dict())`."""
    from netdef.verify.reference import load_weights_strict

    class Versioned(torch.nn.Linear):
        _version = 2

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
            if local_metadata.get("version") != 2:
                raise ValueError(f"version should be 2, not {local_metadata.get('version')}")
            super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    model = torch.nn.Sequential(Versioned(3, 2))
    load_weights_strict(model, {"0.weight": np.ones((2, 3), np.float32), "0.bias": np.zeros(2, np.float32)}, "w.wts")
    assert model[0].weight.sum().item() == 6
    Versioned._version = 3  # a module whose own loading code raises: one NetdefError naming the file, no traceback
    with pytest.raises(NetdefError, match=r"^w\.wts: the PyTorch model failed to load it: ValueError: version should "
                                          r"be 2, not 3$"):
        load_weights_strict(torch.nn.Sequential(Versioned(3, 2)), {"0.weight": np.ones((2, 3), np.float32),
                                                                  "0.bias": np.zeros(2, np.float32)}, "w.wts")


def test_state_dict_source_is_refused(tiny, tmp_path):
    yaml, wts = tiny
    sd = tmp_path / "sd.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, sd)
    with pytest.raises(NetdefError, match=r"not a torch\.nn\.Module; verify needs the model's code: .* or "
                                          r"file\.py:callable"):
        verify(yaml(), wts, str(sd), cpu=True, log=lambda m: None)


def test_engine_mode_needs_a_gpu_else_says_use_cpu(tiny, capsys):
    if trt_api.can_run_engines():
        pytest.skip("this machine runs engines")
    yaml, wts = tiny
    assert main(["verify", yaml(), "-w", wts, "--model", "tiny_model:make"]) == 1
    assert "use --cpu" in capsys.readouterr().err


# ---------------------------------------------------------------- GPU: an engine with marked outputs

@pytest.mark.gpu
def test_gpu_resnet18_engine_matches(tmp_path, capsys):
    wts = tmp_path / "r18.wts"
    assert main(["export", "torchvision:resnet18", "-o", str(wts), "--randomize-bn", "--seed", "3"]) == 0
    rc = main(["verify", "resnet18", "-w", str(wts), "--model", "torchvision:resnet18"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASS: 32 of 32 matched layers within 0.0001" in out and "GPU engine" in out


@pytest.mark.gpu
@pytest.mark.parametrize("name, source, extra", [
    ("resnet50", "torchvision:resnet50", []),
    ("unet", "netdef.testing.unet_reference:UNet", ["--input-shape", "100,75"]),  # not multiples of 16: F.pad
])
def test_gpu_engine_verify_of_resnet50_and_unet(name, source, extra, tmp_path, capsys):
    """`netdef verify` on the GPU (an engine with every compared layer marked as an output) passes for ResNet-50 and
    the UNet; the summary line is printed as a RESULT line."""
    wts = tmp_path / f"{name}.wts"
    assert main(["export", source, "-o", str(wts), "--randomize-bn", "--seed", "3"]) == 0
    rc = main(["verify", name, "-w", str(wts), "--model", source, *extra])
    out = capsys.readouterr().out
    print(f"RESULT verify-gpu {name}: " + " | ".join(line for line in out.splitlines() if "PASS" in line))
    assert rc == 0, out
    assert re.search(r"PASS: (\d+) of \1 matched layers", out) and "GPU engine" in out, out


@pytest.mark.gpu
def test_gpu_planted_wrong_padding_is_named_first(tiny, tmp_path, capsys):
    yaml, wts = tiny
    blocks = tmp_path / "planted_blocks.py"
    blocks.write_text(PLANTED_BLOCK)
    assert main(["verify", yaml(last="PlantedPadConv"), "-w", wts, "--model", "tiny_model:make",
                 "--blocks", str(blocks)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("first divergent layer: conv3 (PyTorch module conv3): max rel error ")
    assert math.isfinite(float(out.splitlines()[0].rsplit("error ", 1)[1].split(" >")[0]))



# ---------------------------------------------------------------- check_block's CPU mode on netdef's primitives

CPU_BLOCKS = [
    ("LayerNorm", lambda: torch.nn.LayerNorm(8), (2, 5, 8), {"normalized_shape": 8}),
    ("GroupNorm", lambda: torch.nn.GroupNorm(2, 6), (2, 6, 4, 4), {"num_groups": 2}),
    ("GELU", lambda: torch.nn.GELU("tanh"), (2, 3, 4, 4), {"approximate": "tanh"}),
    ("Softmax", lambda: torch.nn.Softmax(1), (2, 5, 3), {"dim": 1}),
    ("ConvTranspose2d", lambda: torch.nn.ConvTranspose2d(4, 3, 3, 2, 1, output_padding=1), (1, 4, 5, 5),
     {"c2": 3, "k": 3, "s": 2, "p": 1, "output_padding": 1}),
    ("Pad", lambda: (lambda x: F.pad(x, [1, 2, 2, 0], mode="reflect")), (1, 2, 4, 5),
     {"pads": [1, 2, 2, 0], "mode": "reflect"}),
    ("Resize", lambda: torch.nn.Upsample(size=(7, 9), mode="bilinear", align_corners=False), (1, 2, 4, 5),
     {"size": [7, 9], "mode": "bilinear", "align_corners": False}),
    ("Linear", lambda: torch.nn.Linear(6, 4), (2, 3, 6), {"c2": 4}),
]


@pytest.mark.parametrize("name, make, shape, kwargs", CPU_BLOCKS, ids=[b[0] for b in CPU_BLOCKS])
def test_check_block_cpu_on_primitives(name, make, shape, kwargs):
    from netdef.verify.block import check_block_cpu

    torch.manual_seed(0)
    module = make()
    if isinstance(module, torch.nn.Module):
        with torch.no_grad():  # non-trivial affine parameters
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.5)
    assert check_block_cpu(name, module, shape, kwargs=kwargs) <= 1e-6


def test_check_block_cpu_catches_a_wrong_block():
    from netdef.verify.block import check_block_cpu

    with pytest.raises(AssertionError, match=r"fp32 \(CPU\): max relative error .* > 1e-05"):
        check_block_cpu(lambda net, x, p: net.gelu(x, p, "tanh"), torch.nn.GELU(), (2, 3, 8, 8))  # erf vs tanh
    from netdef.errors import SpecError

    with pytest.raises(SpecError, match=r"^unknown block 'Conv2e': did you mean 'Conv2d'\?; known blocks: ADown, "
                                        r"Act, "):  # a typo: not a KeyError
        check_block_cpu("Conv2e", torch.nn.Identity(), (1, 3, 4, 4))


def test_check_block_names_a_shape_mismatch_as_a_failed_check():
    """A block whose output shape differs from the module's fails the check (AssertionError naming both shapes),
    not with the comparison's ValueError."""
    from netdef.testing.check_block import check_block

    with pytest.raises(AssertionError, match=r"^fp32 \(CPU\): the block's output has shape \(2, 8, 5, 5\), the "
                                             r"torch module's \(2, 8, 9, 9\)$"):
        check_block(lambda net, x, p: net.conv(x, p, 8, 3, s=2, p=1), torch.nn.Conv2d(4, 8, 3, 1, 1), (2, 4, 9, 9),
                    cpu=True)


def test_check_block_names_a_misspelt_argument_as_a_yaml_row_does():
    """A keyword the block does not take is a SpecError naming the block and what it takes, not the function's
    TypeError."""
    from netdef.errors import SpecError
    from netdef.testing.check_block import check_block

    with pytest.raises(SpecError, match=r"^check_block: bad arguments for LayerNorm: got an unexpected keyword argument "
                                        r"'normalised_shape': did you mean 'normalized_shape'\?; LayerNorm takes "
                                        r"\(normalized_shape"):
        check_block("LayerNorm", torch.nn.LayerNorm(8), (1, 3, 8), kwargs={"normalised_shape": 8}, cpu=True)


def test_check_block_names_a_block_that_returns_nothing():
    """A block function without `return`: a BlockError saying so, not TensorRT's AttributeError on None."""
    from netdef.errors import BlockError
    from netdef.testing.check_block import check_block

    def conv(net, x, prefix):
        net.conv(x, prefix, 8, 1, p=0)

    with pytest.raises(BlockError, match=r"^check_block: test_check_block_names_a_block_that_returns_nothing\.<locals>"
                                         r"\.conv returned None: a block returns its output tensor \(`return y`\)$"):
        check_block(conv, torch.nn.Conv2d(4, 8, 1), (1, 4, 5, 5), cpu=True)


def test_check_block_compares_a_tuple_output_by_its_first_tensor():
    """A module returning a tuple (nn.MultiheadAttention's (output, weights)) is compared by its first tensor, as verify
    compares it; an output with no tensor to compare is a NetdefError saying so, not an AttributeError."""
    from netdef.testing.check_block import check_block

    class Pair(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x), x

    assert check_block(lambda n, x, p: n.activation(x, "relu", p), Pair(), (2, 4), cpu=True) == 0.0
    with pytest.raises(NetdefError, match=r"^check_block: the torch module returned dict, not a tensor"):
        check_block(lambda n, x, p: n.activation(x, "relu", p), lambda x: {"y": x}, (2, 4), cpu=True)


@pytest.mark.skipif(trt_api.can_run_engines(), reason="engines run here")
def test_check_block_without_a_gpu_suggests_cpu_mode():
    """Without a GPU, check_block's engine mode says so before building and points to cpu=True (not a temporary
    engine file that Engine refuses)."""
    from netdef.errors import TensorRTUnavailable
    from netdef.testing.check_block import check_block

    with pytest.raises(TensorRTUnavailable, match=r"^check_block runs the block's engine, .*; cpu=True evaluates"):
        check_block(lambda net, x, p: net.conv(x, p, 8, 3), torch.nn.Conv2d(4, 8, 3, 1, 1), (2, 4, 9, 9))


def test_modules_whose_weights_are_never_compared_are_named():
    """A block that names a layer freely (not after its module) hides that module from the comparison: behind a
    small layer scale its mistakes pass every compared layer. The summary names such modules; a layer NAME/add_bias
    covers NAME, a convolution whose output is compared as its BatchNorm covers itself."""
    from netdef.verify import _uncompared, _weight_owners
    from netdef.verify.report import Report, Row

    rows = [Row("stem.conv", "stem.bn", (1,), 0.0, "pass"), Row("head/add_bias", "head", (1,), 0.0, "pass"),
            Row("blk.proj", "blk.proj", (1,), None, "skip", "module not run by forward()")]
    tensors = dict.fromkeys(["stem.conv.weight", "stem.bn.weight", "stem.bn.num_batches_tracked", "head.weight",
                             "blk.fc.weight", "blk.proj.weight", "blk.gamma", "scale"])
    report = Report("m", "CPU", 1e-5, rows, 0)
    report.uncompared = _uncompared(_weight_owners(tensors), report)
    assert report.uncompared == ["blk.fc", "blk.proj", "blk"]
    assert report.summary().endswith("; 3 module(s) whose weights are read were never compared (blk.fc, blk.proj, "
                                     "blk): a mistake there shows only through later layers (not at all behind a "
                                     "small layer scale); a block author names a layer after each of the others to "
                                     "have it compared; 1 of them (blk.proj) cannot be: the model never runs their "
                                     "forward() (it passes their weights to a function), so no output of theirs "
                                     "exists")
    report.rows.append(Row("blk.fc", "blk.fc", (1,), None, "skip", "module not run by forward()"))
    report.uncompared = ["blk.fc", "blk.proj"]  # Swin's qkv and proj: nothing a block author can do
    assert report.summary().endswith("were never compared (blk.fc, blk.proj): a mistake there shows only through "
                                     "later layers (not at all behind a small layer scale); all of them (blk.fc, "
                                     "blk.proj) cannot be: the model never runs their forward() (it passes their "
                                     "weights to a function), so no output of theirs exists")
    report.uncompared, report.shared = ["blk.fc", "blk.proj", "blk"], {"blk": 2}  # CBAM's MLP: run twice
    assert report.summary().endswith("; 1 of them (blk (2 calls)) cannot be: the model runs each several times, so "
                                     "no one output of theirs stands for the module; 2 of them (blk.fc, blk.proj) "
                                     "cannot be: the model never runs their forward() (it passes their weights to a "
                                     "function), so no output of theirs exists")
    assert "names a layer after" not in report.summary()


def test_verify_with_a_batch_of_two_and_attention_compared(tmp_path):
    """--batch 2 feeds two images (a block mixing the batch up differs there only); MultiheadAttention, which
    returns (output, weights), is compared by its output."""
    from torch import nn

    from netdef.export import export_wts
    from netdef.verify.reference import run_hooked

    wts = tmp_path / "r18.wts"
    export_wts("torchvision:resnet18", wts, randomize_bn=True)
    report = verify("resnet18", wts, "torchvision:resnet18", cpu=True, batch=2, log=lambda m: None)
    assert report.ok and "batch 2" in report.mode and not report.uncompared

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0] * 2

    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    outs = run_hooked(Attention(), x, ["attn"])
    assert "attn" not in outs.skipped and np.allclose(outs.outputs["attn"] * 2, outs.finals[0])


def test_fp32_cpu_bounds_widen_to_pytorchs_own_float32_error():
    """A layer beyond the tolerance passes within FLOOR_FACTOR x PyTorch's own float32 error at that module (random
    deep networks amplify float32 rounding past 1e-5); beyond that it fails, the floor named; without a floor run
    (engines) the tolerance alone decides; an fp16 network's floor is PyTorch's float16 run."""
    from types import SimpleNamespace

    from netdef.verify.reference import ModuleOutputs
    from netdef.verify.report import FLOOR_FACTOR, compare

    ref = np.linspace(1.0, 2.0, 12).reshape(1, 12)
    layers = [SimpleNamespace(name=n, outputs=[n], output_shapes=[(1, 12)]) for n in ("a", "b", "c")]
    values = {"a": ref * (1 + 3e-5), "b": ref * (1 + 9e-5), "c": ref * (1 + 5e-6), "y": ref}
    refs = ModuleOutputs(outputs={"a": ref, "b": ref, "c": ref}, finals=[ref])
    floor = ModuleOutputs(outputs={"a": ref * (1 + 2e-5), "b": ref * (1 + 2e-5), "c": ref}, finals=[ref])
    matched = {"a": "a", "b": "b", "c": "c"}
    report = compare("m", "CPU", 1e-5, layers, values, refs, matched, ["y"], floor)
    a, b, c, out = report.rows
    assert (a.status, b.status, c.status, out.status) == ("pass", "FAIL", "pass", "pass")
    assert "(PyTorch in float32: 2.00e-05)" == a.note and "2.00e-05" in b.note and c.note == ""
    assert report.first_failure is b and f"or {FLOOR_FACTOR:g}x PyTorch's own float32 error" in report.summary()
    plain = compare("m", "CPU", 1e-5, layers, values, refs, matched, ["y"])
    assert [r.status for r in plain.rows] == ["FAIL", "FAIL", "pass", "pass"] and "float32" not in plain.summary()
    wild = ModuleOutputs(outputs={"a": ref * 1.5, "b": ref * np.inf, "c": ref}, finals=[ref])  # top-k ties, say
    capped = compare("m", "CPU", 1e-5, layers, {**values, "a": ref * 1.3, "b": ref * 1.3}, refs, matched, ["y"],
                     wild)
    assert [r.status for r in capped.rows][:2] == ["FAIL", "FAIL"]  # never beyond FLOOR_CAPS x the tolerance
    # the model's own float32 run that far off: the row says it cannot tell (YOLO26's top-k of random weights)
    assert "this row cannot tell a mistake from rounding" in capped.rows[0].note
    assert "cannot tell" not in b.note
    # an fp16 network: PyTorch's own float16 run is the floor, capped at FLOOR_CAPS["float16"] x the tolerance
    half = {"a": ref * (1 + 3e-2), "b": ref * (1 + 9e-2), "c": ref * (1 + 5e-3), "y": ref}
    own = ModuleOutputs(outputs={"a": ref * (1 + 2e-2), "b": ref * (1 + 2e-2), "c": ref}, finals=[ref])
    fp16 = compare("m", "CPU", 1e-2, layers, half, refs, matched, ["y"], own, half=True)
    assert [r.status for r in fp16.rows] == ["pass", "FAIL", "pass", "pass"] and fp16.floor == "float16"
    assert fp16.rows[0].note == "(PyTorch in float16: 2.00e-02)" and "PyTorch's own float16 error" in fp16.summary()
    assert "up to 0.05)" in fp16.summary()


def test_a_layer_torch_cannot_compute_is_named_with_its_input_shapes():
    """Sizes TensorRT's definition left open (-1) that disagree at the fed size: one error naming the layer and
    the shapes, not a traceback from inside the evaluator."""
    from netdef.trt_api import LayerDescription
    from netdef.verify import evaluate

    cat = LayerDescription(0, "classifier.0/cat", "CONCATENATION", ["a", "b"], ["y"], ["float32"], [(1, 16, -1, -1)],
                           {"axis": 1}, {})
    with pytest.raises(NetdefError, match=r"^layer 'classifier.0/cat' \(CONCATENATION\) cannot be computed on inputs "
                                          r"of shapes \(1, 8, 21, 25\), \(1, 8, 28, 28\): Sizes of tensors must "
                                          r"match"):
        evaluate([cat], {"a": np.zeros((1, 8, 21, 25), np.float32), "b": np.zeros((1, 8, 28, 28), np.float32)})


def test_a_module_the_model_lacks_is_told_from_one_forward_did_not_run():
    """A row (or a block's net.match) naming a module the model does not have is skipped saying so, not as a
    module forward() left out."""
    from types import SimpleNamespace

    from netdef.verify.reference import ModuleOutputs
    from netdef.verify.report import compare

    layers = [SimpleNamespace(name=n, outputs=[n], output_shapes=[(1,)]) for n in ("up", "aux")]
    report = compare("m", "CPU", 1e-5, layers, {}, ModuleOutputs(), {"up": "upsample", "aux": "aux"}, [],
                     modules={"aux", "backbone"})
    assert [(r.status, r.note) for r in report.rows] == [("skip", "the model has no module of this name"),
                                                         ("skip", "module not run by forward()")]


def test_an_fp16_overflow_is_named():
    """inf where PyTorch's values pass float16's 65504: the row says so (an unexplained 'inf' before)."""
    from netdef.verify.report import _compare_row

    ref = np.array([[1.0, -66319.0, 3.0]])
    out = ref.clip(-65504, 65504) * [1, np.inf, 1]
    row = _compare_row("Mixed_6c.branch7x7_3.conv", "Mixed_6c.branch7x7_3.bn", out, ref, 1e-2, half=True)
    assert row.status == "FAIL" and row.note.startswith("values not finite (PyTorch's values reach 66319, beyond "
                                                        "float16's 65504: an fp16 overflow")
    assert _compare_row("a", "a", out, ref, 1e-5).note == "values not finite"  # an fp32 network: no fp16 to blame
    assert _compare_row("a", "a", np.array([[np.nan]]), np.array([[1.0]]), 1e-2, half=True).note == "values not finite"


def test_an_fp16_underflow_is_named():
    """A failing row whose PyTorch values all lie below float16's smallest normal says so (a randomly initialised
    MNASNet decays to 2e-6 there), in fp16 networks only."""
    from netdef.verify.report import _compare_row

    ref = np.linspace(1e-7, 2.2e-6, 12).reshape(1, 12)
    out = ref.astype(np.float16).astype(np.float64)
    row = _compare_row("layers.11.1.layers.3", "layers.11.1.layers.4", out, ref, 1e-2, half=True)
    assert row.status == "FAIL" and row.note.startswith("(PyTorch's values peak at 2.2e-06, below float16's smallest "
                                                        "normal 6.1e-05: an fp16 underflow")
    assert _compare_row("a", "a", out, ref, 1e-5).note == ""  # an fp32 network: no fp16 to blame
    big = _compare_row("a", "a", out * 100, ref * 100, 1e-2, half=True)  # as wrong, but float16 holds such values
    assert big.status == "FAIL" and big.note == ""
    # many such rows: the table explains it once, as a footnote the rows point to
    from netdef.verify.report import Report

    rows = [_compare_row(f"l{i}", f"l{i}", out, ref, 1e-2, half=True) for i in range(3)] + [big]
    table = Report("m", "CPU", 1e-2, rows, 0).table()
    assert table.count("an fp16 underflow) [1]") == 3 and table.count("Randomly initialised deep models") == 1
    assert table.splitlines()[-1].startswith("[1] float16 keeps only a few bits") and "--randomize-bn" in table


def test_a_convolution_computed_in_parts_is_compared_part_by_part():
    """An attention's qkv is convolutions over its k and v rows (no tensor holds the whole output): each is
    compared with its channels of the module's output, so a wrong part fails by name."""
    from types import SimpleNamespace

    from netdef.verify.reference import ModuleOutputs
    from netdef.verify.report import compare

    ref = np.arange(1.0, 17.0).reshape(1, 4, 2, 2)
    layers = [SimpleNamespace(name=n, outputs=[n], output_shapes=[(1, 2, 2, 2)]) for n in ("qkv.conv/k", "qkv.conv/v")]
    values = {"qkv.conv/k": ref[:, :2], "qkv.conv/v": ref[:, 2:] * 1.01}
    report = compare("m", "CPU", 1e-5, layers, values, ModuleOutputs(outputs={"qkv.bn": ref}),
                     {"qkv.conv/k": "qkv.bn", "qkv.conv/v": "qkv.bn"}, [],
                     channels={"qkv.conv/k": np.arange(2), "qkv.conv/v": np.arange(2, 4)})
    assert [r.status for r in report.rows] == ["pass", "FAIL"] and report.first_failure.layer == "qkv.conv/v"


def test_yolo_blocks_leave_no_module_with_weights_uncompared(tmp_path):
    """netdef's own C3k2 / C2f / attention name (or match by channels) a layer for every module they read, and DFL's
    fixed bins (folded into dist2bbox: Network.fixed_weight) are no block's computation, so verify's 'never
    compared' list, meant for researchers' blocks, is empty: every YOLO verify ended with a note about DFL."""
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel

    from netdef.export import export_wts
    from netdef.verify import verify

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", verbose=False).eval()
    export_wts(model.state_dict(), tmp_path / "y.wts")
    report = verify("yolo11n", tmp_path / "y.wts", model, cpu=True, opts=BuildOptions(input_hw=(64, 64)),
                    log=lambda m: None)
    assert report.ok and report.uncompared == [] and "never compared" not in report.summary(), report.uncompared


def test_modules_a_block_skips_are_not_named_as_read_but_never_compared(tmp_path):
    """Keys a block knowingly leaves out (Network.skip: YOLO26's branch not built, GoogLeNet's auxiliary heads)
    are not read, so their modules are not in verify's 'never compared' list."""
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel

    from netdef.export import export_wts
    from netdef.verify import verify

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", verbose=False).eval()
    export_wts(model.state_dict(), tmp_path / "y.wts")
    report = verify("yolo26n", tmp_path / "y.wts", model, cpu=True, log=lambda m: None,
                    opts=BuildOptions(input_hw=(64, 64), params={"head": "one2many"}))  # one2one_* skipped
    assert report.ok and report.uncompared == [], report.uncompared


def test_an_end_to_end_heads_output_row_that_rounding_fails_names_the_comparison_that_can_tell(tmp_path):
    """A random-weight YOLO26 ties scores ahead of its top-k, whose rows then come in either order: the failing output
    row says so and names --set head=one2many, with which the same model passes."""
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import SegmentationModel

    from netdef.export import export_wts
    from netdef.verify import verify

    torch.manual_seed(0)
    model = SegmentationModel("yolo26n-seg.yaml", verbose=False).eval()
    export_wts(model.state_dict(), tmp_path / "y.wts")
    report = verify("yolo26n-seg", tmp_path / "y.wts", model, cpu=True, opts=BuildOptions(input_hw=(64, 64)),
                    log=lambda m: None)
    failed = [r for r in report.rows if r.status == "FAIL"]
    assert [r.layer for r in failed] == ["(output) output"], failed
    assert "cannot tell a mistake from rounding" in failed[0].note
    assert "`--set head=one2many` compares the branch without it" in report.table()
    report = verify("yolo26n-seg", tmp_path / "y.wts", model, cpu=True, log=lambda m: None,
                    opts=BuildOptions(input_hw=(64, 64), params={"head": "one2many"}))
    assert report.ok


def test_a_model_of_another_conv_activation_gets_the_set_that_builds_it(tmp_path):
    """An Ultralytics model whose YAML sets `activation: nn.ReLU()`: verify names --set default_act=relu before
    comparing (the first layers would only show a divergence), and with it passes."""
    pytest.importorskip("ultralytics")
    import yaml
    from ultralytics.nn.tasks import DetectionModel

    from netdef.errors import OptionError
    from netdef.export import export_wts
    from netdef.testing.ultralytics_reference import cfg_text
    from netdef.verify import verify

    torch.manual_seed(0)
    model = DetectionModel(dict(yaml.safe_load(cfg_text("yolo11")), activation="nn.ReLU()", scale="n"),
                           verbose=False).eval()
    export_wts(model.state_dict(), tmp_path / "y.wts")
    with pytest.raises(OptionError, match=r"the PyTorch model's YAML sets `activation: nn.ReLU\(\)` for its Conv "
                                          r"layers, the network builds silu: build and verify with --set "
                                          r"default_act=relu"):
        verify("yolo11n", tmp_path / "y.wts", model, cpu=True, opts=BuildOptions(input_hw=(64, 64)),
               log=lambda m: None)
    report = verify("yolo11n", tmp_path / "y.wts", model, cpu=True, log=lambda m: None,
                    opts=BuildOptions(input_hw=(64, 64), params={"default_act": "relu"}))
    assert report.ok


def test_verify_leaves_the_callers_model_as_it_is_and_takes_weights_in_memory(tmp_path):
    """verify loads the weights into a copy of a module passed in and runs that copy in float64: the caller's
    module keeps its own weights, dtype, device and mode. Weights may be a mapping, as build_engine takes them."""
    import torchvision

    from netdef.export import export_wts
    from netdef.verify import verify
    from netdef.wts import read_wts

    model = torchvision.models.resnet18(num_classes=10)
    export_wts(model, tmp_path / "r18.wts")
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # the caller's unsaved change
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = dict(read_wts(tmp_path / "r18.wts"))  # a mapping: key -> array
    report = verify("resnet18", weights, model, cpu=True, opts=BuildOptions(input_hw=(64, 64)), log=lambda m: None)
    assert report.ok
    assert model.training and model.fc.weight.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_explicit_tolerance_is_not_widened(tmp_path):
    from netdef.export import export_wts
    from netdef.verify import verify

    wts = tmp_path / "r18.wts"
    export_wts("torchvision:resnet18", wts)
    strict = verify("resnet18", wts, "torchvision:resnet18", cpu=True, opts=BuildOptions(input_hw=(64, 64)),
                    tol=1e-5, log=lambda m: None)
    assert not strict.floor and "float32" not in strict.summary()


def test_library_arguments_of_the_wrong_type_are_option_errors(tmp_path):
    """verify's batch and seed, build_engine's opts and force: a type mistake from Python is a netdef error naming
    the argument, not a TypeError from deep inside."""
    from netdef.build import build_engine
    from netdef.verify import verify

    for kw, needle in (({"batch": "2"}, "verify batch '2'"), ({"seed": -1}, "verify seed -1"),
                       ({"tol": "1e-3"}, "verify tol '1e-3': expected a number >= 0"), ({"tol": -1}, "verify tol -1"),
                       ({"opts": {"precision": "fp16"}}, "expected a netdef.options.BuildOptions")):
        with pytest.raises(OptionError, match=re.escape(needle)):
            verify("resnet18", tmp_path / "none.wts", "torchvision:resnet18", cpu=True, **kw)
    with pytest.raises(OptionError, match=r"opts \{'precision': 'fp16'\}: expected a netdef.options.BuildOptions"):
        build_engine("resnet18", tmp_path / "none.wts", tmp_path / "x.engine", {"precision": "fp16"})
    with pytest.raises(OptionError, match=r"force 'no': expected True or False"):
        build_engine("resnet18", tmp_path / "none.wts", tmp_path / "x.engine", force="no")


def test_a_linear_whose_output_is_matched_again_is_not_compared_before_its_bias(tmp_path):
    """A block that matches a Linear's bias add again with the Sequential around it (torchvision's MLP: `mlp.3`'s
    output is `mlp`'s) leaves the matrix multiply named `mlp.3` without its bias: it is not compared with module
    `mlp.3` (it was reported as diverging, and named first, though every output agreed); the bias add, matched with
    both, is compared with both."""
    import torch
    from torch import nn

    from netdef.registry import block
    from netdef.spec import load_spec

    @block("TestRematchedMLP")
    def rematched_mlp(net, x, prefix):
        y = net.gelu(net.linear(x, f"{prefix}.0", 16), f"{prefix}.1")
        return net.match(net.linear(y, f"{prefix}.2", 8), prefix)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

        def forward(self, x):
            return self.mlp(x.flatten(1))

    torch.manual_seed(0)
    model = Model()
    for p in model.parameters():  # nonzero biases: the bias-less matrix multiply then differs from the module
        nn.init.uniform_(p, -1, 1)
    arch = tmp_path / "rematched.yaml"
    arch.write_text("name: rematched\ninput: {name: input, shape: [8, 1, 1]}\noutput: y\nlayers:\n"
                    "  - [-1, 1, Flatten, {}, flat]\n  - [-1, 1, TestRematchedMLP, {}, mlp]\n")
    spec = load_spec(str(arch))
    wts = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    report = verify(spec, wts, model, cpu=True, log=lambda m: None)
    assert report.ok, report.summary()
    assert {r.module for r in report.rows} >= {"mlp", "mlp.0", "mlp.1"}
    assert [(r.layer, r.module) for r in report.rows if r.module in ("mlp.2", "mlp")] == \
        [("mlp.2/add_bias", "mlp.2"), ("mlp.2/add_bias", "mlp")]


def test_a_row_for_a_function_forward_calls_is_compared_with_no_module(tmp_path):
    """An Act row whose prefix has '/' (`conv/relu` for F.relu in forward(), as `features/avgpool` names a pooling
    forward() does) is the output of no module: it was compared with module `conv/relu`, a 'skip: the model has
    no module of this name' that every such model carried."""
    from netdef.spec import load_spec

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return F.relu(self.conv(x))

    torch.manual_seed(0)
    model = Model()
    arch = tmp_path / "functional.yaml"
    arch.write_text("name: functional\ninput: {name: input, shape: [3, 8, 8]}\noutput: y\nlayers:\n"
                    "  - [-1, 1, Conv2d, {c2: 4, k: 3}, conv]\n  - [-1, 1, Act, {kind: relu}, conv/relu]\n")
    wts = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    report = verify(load_spec(str(arch)), wts, model, cpu=True, log=lambda m: None)
    assert report.ok and [(r.module, r.status) for r in report.rows] == [("conv", "pass"), ("(model output)", "pass")]


def test_a_fixed_size_joined_with_the_batch_is_named_where_the_output_is_static():
    """A (-1, 3, 4) tensor (batch-dependent) plus a (2, 1, 4) constant: TensorRT's broadcasting fixes the output to
    (2, 3, 4), so the definition holds only at the one batch that gives 2 (a Swin mask added before the windows
    are split from the batch). At another batch it is one error naming the layer, not an evaluator traceback."""
    from netdef.trt_api import LayerDescription
    from netdef.verify import evaluate

    add = LayerDescription(0, "attn/add_mask", "ELEMENTWISE", ["x", "mask"], ["y"], ["float32"], [(2, 3, 4)],
                           {"op": "SUM"}, {})
    mask = LayerDescription(1, "attn/mask", "CONSTANT", [], ["mask"], ["float32"], [(2, 1, 4)],
                            {"shape": (2, 1, 4)}, {"weights": np.zeros((2, 1, 4), np.float32)})
    evaluate([mask, add], {"x": np.zeros((2, 3, 4), np.float32)})  # the one batch it holds at
    with pytest.raises(NetdefError, match=r"^layer 'attn/add_mask' \(ELEMENTWISE\) cannot be computed on inputs of "
                                          r"shapes \(4, 3, 4\), \(2, 1, 4\)"):
        evaluate([mask, add], {"x": np.zeros((4, 3, 4), np.float32)})


def test_summary_gives_the_largest_error_and_the_outputs():
    """A passing report says how close it came: the largest error, at which layer, and the model output's."""
    from netdef.verify.report import OUTPUT_MODULE, Report, Row

    rows = [Row("a", "a", (1,), 3e-8, "pass"), Row("b", "b", (1,), 5e-7, "pass"), Row("c", "c", (1,), None, "skip"),
            Row("(output) out", OUTPUT_MODULE, (1,), 2e-8, "pass")]
    assert "; max rel error 5e-07 at b, the output's 2e-08" in Report("m", "CPU", 1e-5, rows, 0).summary()


def test_the_summary_counts_layers_without_a_module_in_words():
    """'1 layer without a PyTorch module', '2 layers ...': the count and its noun agree."""
    from netdef.verify.report import Report, Row

    rows = [Row("stem.conv", "stem.conv", (1,), 0.0, "pass")]
    assert ", 1 layer without a PyTorch module;" in Report("m", "CPU", 1e-5, rows, 1).summary()
    assert ", 2 layers without a PyTorch module;" in Report("m", "CPU", 1e-5, rows, 2).summary()


def test_a_printed_report_is_its_table_and_summary():
    """print(verify(...)) in Python shows what `netdef verify` prints (table, then summary), not the dataclass's fields;
    repr keeps them."""
    from netdef.verify.report import Report, Row

    report = Report("m", "CPU", 1e-5, [Row("stem.conv", "stem.conv", (1, 8), 2e-8, "pass")], 0)
    assert str(report) == f"{report.table()}\n{report.summary()}"
    assert str(report).startswith("layer ") and repr(report).startswith("Report(arch='m'")


@pytest.mark.parametrize("cpu", [True, False])
def test_check_block_refuses_int8(cpu):
    """An int8 block alone has no calibration scales: it would be checked unquantized (an fp16 check under
    another name), so check_block refuses int8 in both modes, before any build."""
    import torch

    from netdef.errors import OptionError
    from netdef.testing.check_block import check_block

    with pytest.raises(OptionError, match=r"^check_block: precision 'int8': use fp32 or fp16 .*netdef calibrate"):
        check_block("Conv2d", torch.nn.Conv2d(3, 4, 3), (1, 3, 8, 8), kwargs={"c2": 4, "k": 3}, precision="int8",
                    cpu=cpu)


SPLIT_MODEL = '''
import torch
from torch import nn


class Split(nn.Module):
    """cat(a(x), relu(b(x))): a block whose own output no layer is named after."""
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.cat([self.a(x), torch.relu(self.b(x))], 1)


def make():
    torch.manual_seed(0)
    return nn.Sequential(Split(), nn.Conv2d(8, 4, 3, 1, 1)).eval()
'''

SPLIT_BLOCK = '''
from netdef.registry import block


@block("PlantedSplit")
def planted_split(net, x, prefix, relu):
    a = net.conv(x, f"{prefix}.a", 4, 1, bias=True)
    b = net.conv(x, f"{prefix}.b", 4, 1, bias=True, act="relu" if relu else "none")
    return net.concat([a, b], f"{prefix}/cat")
'''


def test_a_rows_output_is_compared_with_its_module(tmp_path, capsys, monkeypatch):
    """A block of one's own that matches only its parts (its convolutions) has its row's output compared with the
    row's module: a mistake after the last matched layer (a forgotten activation) is named at its row, not at the
    next row's layers."""
    (tmp_path / "split_model.py").write_text(SPLIT_MODEL)
    (tmp_path / "split_blocks.py").write_text(SPLIT_BLOCK)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["export", "split_model:make", "-o", str(tmp_path / "s.wts")]) == 0
    for relu in (True, False):
        (tmp_path / "split.yaml").write_text(f"input: {{shape: [3, 8, 8]}}\nlayers:\n"
                                             f"  - [-1, 1, PlantedSplit, {{relu: {relu}}}, '0']\n"
                                             "  - [-1, 1, Conv2d, {c2: 4, k: 3, p: 1}, '1']\n")
        capsys.readouterr()
        code = main(["verify", str(tmp_path / "split.yaml"), "-w", str(tmp_path / "s.wts"), "--model",
                     "split_model:make", "--cpu", "--blocks", str(tmp_path / "split_blocks.py")])
        out = capsys.readouterr().out
        assert re.search(r"^0/cat +0 +1x8x8x8 +\S+ +" + ("pass" if relu else "FAIL"), out, re.M), out
        assert code == (0 if relu else 1)
    assert out.startswith("first divergent layer: 0/cat (PyTorch module 0)")


def test_check_block_of_an_identity_block():
    """A block that returns its input (nn.Identity's): its network's output was the input renamed, and the check
    failed with KeyError 'y'; a layer now comes between."""
    import torch

    from netdef.testing.check_block import check_block

    assert check_block(lambda net, x, prefix: x, torch.nn.Identity(), (2, 4), cpu=True) == 0.0


def test_a_tensor_matched_with_several_modules_is_compared_with_each(tmp_path):
    """A block's output that is a BatchNorm's, the Sequential's around it and an nn.Identity's (net.match three
    times) is compared with all three modules: only the last was, and the BatchNorm, whose weights the network
    reads, was reported as never compared."""
    from torch import nn

    from netdef.registry import BLOCKS, block
    from netdef.spec import parse_spec

    @block("BnSequentialIdentity")
    def bn_sequential_identity(net, x, prefix):
        y = net.conv(x, "body.0", 8, 3, bn="body.1")  # matched with body.1 (the BatchNorm folded in)
        net.match(y, "body")
        return net.match(y, "id")

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.id = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8)), nn.Identity()

        def forward(self, x):
            return self.id(self.body(x))

    torch.manual_seed(0)
    model = Model().eval()
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    spec = parse_spec("input: {name: x, shape: [3, 8, 8]}\noutput: y\nlayers:\n"
                      "  - [-1, 1, BnSequentialIdentity, {}, blk]\n", "m")
    try:
        report = verify(spec, weights, model, cpu=True, log=lambda m: None)
    finally:
        BLOCKS.pop("BnSequentialIdentity", None)
    assert [(r.layer, r.module, r.status) for r in report.rows[:3]] == [
        ("body.0", "body.1", "pass"), ("body.0", "body", "pass"), ("body.0", "id", "pass")]
    assert report.ok and report.uncompared == []


def test_the_summary_counts_layers_not_comparisons():
    """A layer compared with two modules (its BatchNorm's and its Sequential's output) is one matched layer in the
    summary, failed where either comparison fails."""
    from netdef.verify.report import Report, Row

    rows = [Row("conv1", "bn1", (1, 4), 1e-7, "pass"), Row("conv1", "stem", (1, 4), 2e-7, "pass"),
            Row("conv2", "bn2", (1, 4), 1e-7, "pass"), Row("conv2", "block", (1, 4), 1e-3, "FAIL"),
            Row("relu", "act", (1, 4), None, "skip")]
    summary = Report("m", "CPU", 1e-5, rows, unmatched=0).summary()
    assert ": FAIL: 1 of 2 matched layers within 1e-05, 1 skipped," in summary, summary


def test_a_row_whose_output_is_matched_with_an_inner_module_is_compared_with_its_own_too():
    """A ConvBnAct row whose act is left out: its output (the convolution, matched with its BatchNorm `stem.1`) is
    also compared with the row's module `stem` (Conv, BN, ReLU), so the missing ReLU is named at the stem, not first at
    the next row's convolution."""
    import torch
    from torch import nn

    from netdef.spec import parse_spec

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("stem", nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()))
    model.add_module("conv", nn.Conv2d(8, 4, 3, padding=1))
    model.eval()

    def spec(act):
        return parse_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "output": "y",
                           "layers": [[-1, 1, "ConvBnAct", {"c2": 8, "k": 3, "conv": "0", "bn": "1", "act": act},
                                       "stem"], [-1, 1, "Conv2d", {"c2": 4, "k": 3, "p": 1}, "conv"]]}, "tiny")

    good = verify(spec("relu"), model.state_dict(), model, cpu=True, log=lambda m: None)
    assert good.ok and [(r.layer, r.module) for r in good.rows][:2] == [("stem.0", "stem.1"), ("stem.0/relu", "stem")]
    bad = verify(spec("none"), model.state_dict(), model, cpu=True, log=lambda m: None)
    assert not bad.ok and (bad.first_failure.layer, bad.first_failure.module) == ("stem.0", "stem")
    assert [(r.module, r.status) for r in bad.rows][:2] == [("stem", "FAIL"), ("stem.1", "pass")]


def test_a_convbnact_row_named_after_its_conv_is_not_compared_with_the_bare_conv():
    """A ConvBnAct row whose prefix is its Conv2d's own name (keys `conv1.weight`, `bn1.*`: the README's
    `parse_spec` example's layout) was compared with module `conv1`, the convolution before BatchNorm and ReLU, and
    failed a correct network; the convolution layer `conv1` is that module's, so the row's output is compared with
    none, and a wrong activation still fails (at the output)."""
    import torch
    from torch import nn

    from netdef.spec import parse_spec

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.bn1(self.conv1(x))).mean((2, 3)))

    torch.manual_seed(0)
    model = Net().eval()

    def spec(act):
        return parse_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "output": "y",
                           "layers": [[-1, 1, "ConvBnAct", {"c2": 8, "k": 3, "bn": "/bn1", "act": act}, "conv1"],
                                      [-1, 1, "GlobalAvgPool", {}, "pool"], [-1, 1, "Linear", {"c2": 4}, "fc"]]},
                          "tiny")

    good = verify(spec("relu"), model.state_dict(), model, cpu=True, log=lambda m: None)
    assert good.ok, good.rows
    assert [(r.layer, r.module) for r in good.rows][:1] == [("conv1", "bn1")]
    assert "conv1" not in {r.module for r in good.rows}
    bad = verify(spec("silu"), model.state_dict(), model, cpu=True, log=lambda m: None)
    assert not bad.ok


def test_fp16_cpu_floor_is_pytorchs_float16_run_and_says_when_there_is_none(monkeypatch):
    """verify --cpu of an fp16 network runs the model in float16 on the CPU for its floor; where this PyTorch
    cannot (an op without a CPU float16 kernel), it says so and holds each layer to the tolerance."""
    import netdef.verify as v
    from netdef.verify.reference import ModuleOutputs

    calls = []
    monkeypatch.setattr(v, "run_hooked", lambda model, x, hooked, dtype: calls.append(dtype) or ModuleOutputs())
    assert isinstance(v._own_run(None, None, [], "fp16", print), ModuleOutputs) and calls == ["float16"]
    assert isinstance(v._own_run(None, None, [], "fp32", print), ModuleOutputs) and calls[-1] == "float32"

    def fails(model, x, hooked, dtype):
        raise NetdefError('the PyTorch model failed on a (1, 3) float16 input: "slow_conv2d" not implemented')

    monkeypatch.setattr(v, "run_hooked", fails)
    logs = []
    assert v._own_run(None, None, [], "fp16", logs.append) is None
    assert logs == ["[netdef] PyTorch's own float16 run on the CPU failed, so each layer is held to the tolerance "
                    "alone: the PyTorch model failed on a (1, 3) float16 input: \"slow_conv2d\" not implemented"]


def test_a_row_failed_on_non_finite_values_names_the_first_layer_that_was_not_finite():
    """An fp16 overflow in a layer no module is compared with (YOLO11's attention scores) showed only as 'values
    not finite' at the next compared layers: each such row now names the first layer whose output is not finite."""
    from types import SimpleNamespace

    from netdef.verify.reference import ModuleOutputs
    from netdef.verify.report import compare

    ref = np.linspace(1.0, 2.0, 4).reshape(1, 4)
    layers = [SimpleNamespace(name=n, outputs=[n], output_shapes=[(1, 4)]) for n in ("a", "attn/scores", "c")]
    values = {"a": ref, "attn/scores": ref * np.inf, "c": ref * np.nan, "y": ref}
    refs = ModuleOutputs(outputs={"a": ref, "c": ref}, finals=[ref])
    report = compare("m", "CPU", 1e-2, layers, values, refs, {"a": "a", "c": "c"}, ["y"], half=True)
    a, c, out = report.rows
    assert (a.status, c.status, out.status) == ("pass", "FAIL", "pass")
    assert c.note == "values not finite (the first layer whose output is not finite: attn/scores)"


def test_verify_names_a_keypoint_layout_the_model_does_not_have():
    """A pose model's 18 keypoint outputs are 9x2 or 6x3 alike, so the weights cannot tell: a network built with
    the other layout failed at the output with no reason given; now the two layouts are named."""
    pytest.importorskip("ultralytics")
    from netdef.errors import OptionError
    from netdef.options import BuildOptions
    from netdef.testing.ultralytics_reference import reference_model
    from netdef.verify import verify

    model, sd = reference_model("yolo11n-pose", kpt_shape=(9, 2))
    with pytest.raises(OptionError, match=r"PyTorch model's keypoints are 9x2 \(kpt_shape \[9, 2\]\), the network's "
                                          r"6x3: build and verify with --set kpt_shape=9,2"):
        verify("yolo11n-pose", sd, model, cpu=True, log=lambda m: None,
               opts=BuildOptions(input_hw=(64, 64), params={"kpt_shape": [6, 3]}))
    report = verify("yolo11n-pose", sd, model, cpu=True, log=lambda m: None,
                    opts=BuildOptions(input_hw=(64, 64), params={"kpt_shape": [9, 2]}))
    assert report.ok, report.first_failure


def test_each_repeat_of_a_row_is_compared_with_its_module():
    """A row repeated n times (`prefix.0`, `prefix.1`) by a block that matches only its inner layers: each repeat's
    output is compared with its module, so a block that leaves out its residual fails at the first repeat, not
    first inside the second (only the last repeat's output, the row's, was compared)."""
    from torch import nn

    from netdef.registry import BLOCKS, block
    from netdef.spec import parse_spec

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    @block("PlantedRes")
    def planted_res(net, x, prefix, residual):
        y = net.conv(x, f"{prefix}.conv", 4, 3, p=1, bias=True)
        return net.add(x, y, f"{prefix}/add") if residual else y

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("stage", nn.Sequential(Res(), Res()))
    model.add_module("head", nn.Conv2d(4, 2, 1))
    model.eval()
    try:
        reports = {residual: verify(parse_spec({"input": {"name": "x", "shape": [4, 8, 8]}, "output": "y", "layers": [
            [-1, 2, "PlantedRes", {"residual": residual}, "stage"], [-1, 1, "Conv2d", {"c2": 2, "k": 1}, "head"]]},
            "rep"), model.state_dict(), model, cpu=True, log=lambda m: None) for residual in (True, False)}
    finally:
        BLOCKS.pop("PlantedRes", None)
    assert reports[True].ok, reports[True].table()
    assert [(r.layer, r.module) for r in reports[True].rows if r.module.startswith("stage")] == [
        ("stage.0.conv", "stage.0.conv"), ("stage.0/add", "stage.0"), ("stage.1.conv", "stage.1.conv"),
        ("stage.1/add", "stage")]
    first = reports[False].first_failure
    assert (first.layer, first.module) == ("stage.0.conv", "stage.0"), reports[False].table()


def test_the_first_failures_input_is_checked_against_its_modules():
    """A convolution that fails because its input is wrong (a Concat's inputs swapped in the row before) was named
    alone, as if its own weights or arguments were wrong; its input is now compared with its module's and the row
    without a module of its own before it is named. A convolution with a wrong argument (dilation) has a matching
    input, which is said too."""
    from torch import nn

    from netdef.spec import parse_spec

    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(8, 2, 3, padding=1)

        def forward(self, x):
            a = self.a(x)
            return self.head(torch.cat([a, self.b(a)], 1))

    torch.manual_seed(0)
    model = Cat().eval()

    def report(cat, head):
        return verify(parse_spec({"input": {"name": "x", "shape": [3, 8, 8]}, "output": "y", "layers": [
            [-1, 1, "Conv2d", {"c2": 4, "k": 1}, "a"], [-1, 1, "Conv2d", {"c2": 4, "k": 1}, "b"],
            [cat, 1, "Concat", {}, ""], [-1, 1, "Conv2d", {"c2": 2, "k": 3, **head}, "head"]]}, "cat"),
            model.state_dict(), model, cpu=True, log=lambda m: None)

    good = report([0, 1], {"p": 1})
    assert good.ok and good.input_error is None, good.table()
    swapped = report([1, 0], {"p": 1})
    assert swapped.first_failure.layer == "head" and swapped.input_error > 0.1
    assert [w.split(": ", 1)[1] for w in swapped.unchecked_before] == ["row 2 (Concat) (layer /concat)"]
    assert swapped.unchecked_layers == ["/concat"]  # (inside a block of one's own: its mean, max, concatenation)
    dilated = report([0, 1], {"p": 2, "d": 2})
    assert dilated.first_failure.layer == "head" and dilated.input_error < 1e-12 and not dilated.unchecked_before


def test_a_size_a_block_fixed_names_its_row_in_verify_and_in_a_failed_build(tmp_path):
    """A block that reshapes to batch 1 holds at batch 1 only: verify at batch 2 said which layer could not be
    computed but not which YAML row made it, and `netdef build --batch 1:2:4` ended in TensorRT's message alone
    ('TensorRT could not build'); both now name the row."""
    import subprocess
    import sys

    from torch import nn

    from netdef.export import export_wts
    from netdef.spec import load_spec

    (tmp_path / "gate_blocks.py").write_text(
        "from netdef.registry import block\n\n\n@block('BatchOneGate')\ndef batch_one_gate(net, x, prefix):\n"
        "    g = net.global_avg_pool(x, f'{prefix}/avg', keep_dims=True)\n"
        "    return net.mul(x, net.reshape(g, f'{prefix}/flat', (1, net.channels(x), 1, 1)), f'{prefix}/gate')\n")

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return y * y.mean((2, 3), keepdim=True)

    torch.manual_seed(0)
    model = Gate().eval()
    arch = tmp_path / "gate.yaml"
    arch.write_text("input: {name: x, shape: [3, 8, 8]}\noutput: y\nblocks: [gate_blocks.py]\nlayers:\n"
                    "  - [-1, 1, Conv2d, {c2: 4}, conv]\n  - [-1, 1, BatchOneGate, {}, gate]\n")
    spec = load_spec(arch)
    assert verify(spec, model.state_dict(), model, cpu=True, log=lambda m: None).ok
    row = rf"{re.escape(str(arch))}:6: row 1 \(BatchOneGate\)"
    with pytest.raises(NetdefError, match=rf"^{row}: layer 'gate/flat' \(SHUFFLE\) cannot be computed"):
        verify(spec, model.state_dict(), model, cpu=True, batch=2, log=lambda m: None)
    export_wts(model.state_dict(), tmp_path / "g.wts")
    run = subprocess.run([sys.executable, "-m", "netdef", "build", str(arch), "-w", str(tmp_path / "g.wts"), "-o",
                          str(tmp_path / "g.engine"), "--batch", "1:2:4"], capture_output=True, text=True)
    assert run.returncode == 1 and not (tmp_path / "g.engine").exists()
    assert re.search(rf"could not build gate .*; its messages name layers? [^;]*gate/flat[^;]* of {row}\n$",
                     run.stderr), run.stderr


def test_an_output_of_parts_is_compared_part_by_part():
    """A YOLO head's (B, 4 + nc, N): boxes of hundreds of pixels, class scores of 1e-4 (random weights). Scores 1%
    off passed as one tensor (relative to its largest value, a box's); compared part by part they fail."""
    from netdef.verify.report import _output_rows

    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 640, (1, 4, 50)), rng.uniform(1e-5, 1.5e-4, (1, 3, 50))], axis=1)
    out = ref.copy()
    out[:, 4:] *= 1.01
    whole = _output_rows({"output": out}, [ref], ["output"], 1e-5, None)
    assert [r.status for r in whole] == ["pass"]
    split = _output_rows({"output": out}, [ref], ["output"], 1e-5, None,
                         parts={"output": [("boxes", 0, 4), ("scores", 4, 7)]})
    assert [(r.layer, r.status) for r in split] == [("(output) output[boxes]", "pass"),
                                                    ("(output) output[scores]", "FAIL")]


def test_an_ultralytics_model_of_an_edited_yaml_is_noted(tmp_path):
    """verify of netdef's yolov8n against a model whose YAML differs at a row (a C2f's shortcut switched on) named
    the divergence's row but not why: a note names both rows and says to verify a copy of the model's YAML."""
    from netdef.testing import ultralytics_reference as ref
    from netdef.wts import write_wts

    if not ref.ultralytics_available():
        pytest.skip("needs the ultralytics package (pip install --no-deps ultralytics==8.4.190)")
    model, sd = ref.reference_model("yolov8n")
    write_wts(tmp_path / "v8.wts", sd)
    model.yaml["head"][2] = [-1, 3, "C2f", [512, True]]  # row 12 as an edited YAML writes it
    said: list[str] = []
    verify("yolov8n", tmp_path / "v8.wts", model, cpu=True, opts=BuildOptions(input_hw=(64, 64)), log=said.append)
    assert ("[netdef] note: the model's YAML differs from netdef's yolov8n (yolov8.yaml) at row 12 (C2f: [-1, 3, "
            "'C2f', [512, True]], netdef's [-1, 3, 'C2f', [512]]): a divergence there is that difference; to check "
            "the model as it is, verify a copy of its own YAML") in said, said


def test_a_failing_layers_input_differs_only_beyond_what_a_passing_layer_may_differ():
    """The input check held the input to the bare tolerance, while the layers before passed within PyTorch's own
    float32 error (up to 100x): an input off by 1e-4 then 'differed', blaming layers that passed. Between the
    tolerance and the widest bound nothing is said."""
    from netdef.verify.report import Report, Row

    report = Report("m", "CPU", 1e-5, [Row("conv", "conv", (1,), 1.0, "FAIL")], 0, floor="float32")
    for err, differs, matches in ((1e-6, False, True), (1e-4, False, False), (1e-2, True, False)):
        report.input_error = err
        assert (report.input_differs, report.input_matches) == (differs, matches), err
    report.floor = ""  # an explicit tolerance: the bound itself
    report.input_error = 1e-4
    assert report.input_differs
