"""INT8 through explicit quantization: Quantize/Dequantize (Q/DQ) pairs placed from a calibration table.

`Network` calls the hooks of `net.quantizer` (set by `build.define_network` for `--precision int8`):

- convolution: the input activation gets a per-tensor Q/DQ (scale amax/127 from the table, key = the
  convolution's prefix); the BN-folded weights become a float32 constant with a per-output-channel
  Q/DQ (axis 0) that feeds the kernel input (`set_input(1, ...)`); the bias stays a weight.
- linear: the weight matrix (c2, c1) gets a per-row Q/DQ, the matmul input a per-tensor one (key = prefix).
- residual add: following NVIDIA's Q/DQ placement advice, only the shortcut input is quantized (key = the
  add's name), so TensorRT can fuse the add into the epilogue of the convolution producing the other
  input. An add with no convolution output among its inputs is left in floating point.

A tensor feeding several quantized consumers gets one Q/DQ pair (under the first consumer's key).
`RecordingQuantizer` places the same points in a plain FP32 network and marks each as an extra output
(`calib:<key>`) for calibration (`netdef.calibrate`).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import trt_api
from .calibration import CalibrationTable, per_channel_weight_scales, scale_from_amax
from ..errors import NetdefError

CALIB_PREFIX = "calib:"  # output-name prefix of the tensors a recording network exposes
CALIBRATE_HINT = ("run `netdef calibrate ARCH --weights W --data IMAGES_OR_NPY -o table.json` (on a GPU machine) "
                  "and pass --calibration table.json")


def network_input_shape(spec: Any, input_hw: Sequence[int] | None = None) -> tuple[int, ...]:
    """The (C, H, W) input shape a build uses: the YAML's, with H, W replaced by `input_hw`."""
    shape = tuple(int(s) for s in spec.input_shape)
    if input_hw is not None:
        shape = (*shape[:-2], *(int(v) for v in input_hw))
    return shape


def fingerprint(spec: Any, weights_path: str | Path, input_shape: Sequence[int]) -> str:
    """sha256 over the architecture YAML's hash, the weights file's hash and the input shape (no batch)."""
    from ..build import file_sha256

    shape = "x".join(str(int(s)) for s in input_shape)
    text = f"arch={spec.sha256}\nweights={file_sha256(weights_path)}\ninput={shape}\n"
    return hashlib.sha256(text.encode()).hexdigest()


class Quantizer:
    """Inserts Q/DQ pairs into a `Network` with the activation ranges `amax` (key -> amax)."""

    def __init__(self, amax: Mapping[str, float], *, source: str = "calibration table"):
        self.amax = dict(amax)
        self.source = source
        self.points: dict[str, str] = {}  # key -> kind ("conv", "linear", "residual"), in network order
        self._quantized: dict[str, Any] = {}  # tensor name -> its dequantized stand-in
        self._convs: list[Any] = []  # convolution layers made here (their outputs can absorb an add)

    @classmethod
    def for_build(cls, spec: Any, weights_path: str | Path, opts: Any) -> "Quantizer":
        """The quantizer of an int8 build: loads `opts.calibration` and checks it belongs to this network."""
        if not opts.calibration:
            raise NetdefError(f"--precision int8 needs a calibration table for {spec.name}: {CALIBRATE_HINT}")
        expect = fingerprint(spec, weights_path, network_input_shape(spec, opts.input_hw))
        table = CalibrationTable.load(opts.calibration, expect_fingerprint=expect)
        return cls(table.amax, source=f"calibration table {opts.calibration}")

    # ------------------------------------------------------------ hooks called by Network

    def conv(self, net: Any, x: Any, prefix: str, w: np.ndarray, b: np.ndarray) -> Any:
        """The convolution `prefix` (stride, padding, name: set by the caller) on quantized input and weights."""
        x = self.quantize_activation(net, x, prefix, "conv")
        layer = self._convolution(net, x, prefix, w, b)
        self._convs.append(layer)
        return layer

    def linear_weight(self, net: Any, x: Any, prefix: str, w: np.ndarray) -> Any:
        """The (c2, c1) weight matrix of linear `prefix` as a tensor, Q/DQ'd per output row."""
        return self._weight_qdq(net, w, prefix)

    def activation(self, net: Any, x: Any, prefix: str) -> Any:
        """The input of matmul `prefix`, Q/DQ'd per tensor."""
        return self.quantize_activation(net, x, prefix, "linear")

    def residual(self, net: Any, a: Any, b: Any, name: str) -> tuple[Any, Any]:
        """Quantize the shortcut input of the add `name`: the one that is not a convolution's direct output
        (b when both are). Neither being one: nothing to fuse into, the add stays in floating point."""
        a_conv, b_conv = self._is_conv_output(a), self._is_conv_output(b)
        if b_conv and not a_conv:
            return self.quantize_activation(net, a, name, "residual"), b
        if a_conv:
            return a, self.quantize_activation(net, b, name, "residual")
        return a, b

    # ------------------------------------------------------------ building blocks

    def quantize_activation(self, net: Any, x: Any, key: str, kind: str) -> Any:
        """x through a per-tensor Q/DQ with the table's range for `key` (shared when x was quantized before)."""
        done = self._quantized.get(x.name)
        if done is not None:
            return done
        self.points[key] = kind
        out = self._activation_qdq(net, x, key)
        self._quantized[x.name] = out
        return out

    def _activation_qdq(self, net: Any, x: Any, key: str) -> Any:
        if key not in self.amax:
            raise NetdefError(f"{self.source} has no range for '{key}' (input of a {self.points[key]} layer"
                              f"{', ' + net.context if net.context else ''}): it does not match this network; "
                              f"recalibrate")
        scale = np.array(scale_from_amax(self.amax[key]), np.float32)
        return self._qdq(net, x, scale, None, f"{key}/input", x.dtype)

    def _weight_qdq(self, net: Any, w: np.ndarray, prefix: str) -> Any:
        """Weights as a float32 constant -> per-output-channel Q/DQ (axis 0) -> compute dtype."""
        scales = per_channel_weight_scales(w, 0, name=f"{prefix}.weight")
        const = net.constant(w, f"{prefix}/weight", dtype=np.float32)
        return self._qdq(net, const, scales, 0, f"{prefix}/weight", trt_api.trt_dtype(net.dtype))

    @staticmethod
    def _qdq(net: Any, x: Any, scale: np.ndarray, axis: int | None, name: str, out_type: Any) -> Any:
        s = net.constant(scale, f"{name}_scale", dtype=np.float32)
        q = net.name(trt_api.add_quantize(net.definition, x, s, axis), f"{name}_quantize")
        dq = trt_api.add_dequantize(net.definition, q.get_output(0), s, axis, out_type)
        return net.name(dq, f"{name}_dequantize").get_output(0)

    def _convolution(self, net: Any, x: Any, prefix: str, w: np.ndarray, b: np.ndarray) -> Any:
        c2, _, kh, kw = w.shape
        layer = net.definition.add_convolution_nd(x, int(c2), (int(kh), int(kw)), net.trt.Weights(), net.keep(b))
        layer.set_input(1, self._weight_qdq(net, w, prefix))
        return layer

    def _is_conv_output(self, t: Any) -> bool:
        return any(layer.get_output(0).name == t.name for layer in self._convs)


class RecordingQuantizer(Quantizer):
    """Places the same quantization points in a plain (unquantized) network and marks each point's
    tensor as an extra output `calib:<key>`, so an FP32 engine reports the values to calibrate on."""

    def __init__(self) -> None:
        super().__init__({}, source="recording network")

    def _activation_qdq(self, net: Any, x: Any, key: str) -> Any:
        probe = net.name(net.definition.add_identity(x), f"{key}/calib")  # an input can't be an output itself
        net.output(probe.get_output(0), CALIB_PREFIX + key)
        return x

    def _weight_qdq(self, net: Any, w: np.ndarray, prefix: str) -> Any:
        return net.constant(w, f"{prefix}/weight")

    def _convolution(self, net: Any, x: Any, prefix: str, w: np.ndarray, b: np.ndarray) -> Any:
        c2, _, kh, kw = w.shape
        return net.definition.add_convolution_nd(x, int(c2), (int(kh), int(kw)), net.keep(w), net.keep(b))
