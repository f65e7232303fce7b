"""The netdef block for model.py's DWSepSE: the same layers, named after the PyTorch modules.

    netdef verify docs/examples/own_model/tinynet.yaml -w weights/tinynet.wts \
           --model docs/examples/own_model/model.py:make --cpu --blocks docs/examples/own_model/blocks.py
"""
from netdef.registry import block


@block("DWSepSE", width_args=("c2",))
def dwsep_se(net, x, prefix, c2, s=1, squeeze=8):
    """model.py's DWSepSE(c1, c2, s, squeeze) at `prefix` (a YAML row's key prefix, e.g. blocks.0)."""
    c1 = net.channels(x)
    # dw + bn1 (folded) + act1: the conv layer is named `prefix.dw`, the ReLU6 layer `prefix.dw/relu6`
    y = net.conv(x, f"{prefix}.dw", c1, 3, s, g=c1, bias=False, bn=f"{prefix}.bn1", act="relu6")
    net.match(y, f"{prefix}.act1")
    # squeeze-excitation `prefix.se`: follows netdef.blocks.parts.squeeze_excitation
    se = f"{prefix}.se"
    w = net.global_avg_pool(y, f"{se}.pool", keep_dims=True)
    w = net.match(net.conv(w, f"{se}.fc1", squeeze, 1, bias=True, act="relu"), f"{se}.act")
    w = net.match(net.conv(w, f"{se}.fc2", c1, 1, bias=True, act="sigmoid"), f"{se}.gate")
    y = net.match(net.mul(y, w, f"{se}/scale"), se)
    # pw + bn2 (folded) + act2
    y = net.conv(y, f"{prefix}.pw", c2, 1, bias=False, bn=f"{prefix}.bn2", act="relu6")
    return net.match(y, f"{prefix}.act2")
