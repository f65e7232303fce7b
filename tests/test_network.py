"""Network core: BatchNorm folding numerics, key accounting, size checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from netdef.errors import NetdefError, WeightKeyError
from netdef.network import Network, fold_batchnorm
from netdef.spec import build_network, load_spec


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


def test_wrong_size_names_key_and_row(resnet18_weights):
    w = dict(resnet18_weights)
    w["layer1.0.conv1.weight"] = w["layer1.0.conv1.weight"][:-1]
    with pytest.raises(WeightKeyError) as e:
        _define(w)
    msg = str(e.value)
    assert "layer1.0.conv1.weight" in msg and "36863" in msg and "(64, 64, 3, 3)" in msg
    assert "resnet18.yaml:" in msg and "row 2" in msg


def test_fp16_network_is_typed_where_strong_typing_exists(resnet18_weights):
    net = Network(resnet18_weights, precision="fp16")
    build_network(load_spec("resnet18"), net)
    out = net.definition.get_output(0)
    assert out.dtype == net.trt.float32  # outputs stay fp32 for the caller
    conv = next(net.definition.get_layer(i) for i in range(net.definition.num_layers)
                if net.definition.get_layer(i).name == "conv1")
    expected = net.trt.float16 if net.strongly_typed else net.trt.float32
    assert conv.get_output(0).dtype == expected


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
    with pytest.raises(NetdefError, match=r"fc: Linear takes \(B, C\) or pooled \(B, C, 1, 1\) input, got "
                                          r"\(-1, 8, 2, 2\); add a Flatten or GlobalAvgPool row"):
        net2.linear(net2.input("x", (-1, 8, 2, 2)), "fc", 4)
