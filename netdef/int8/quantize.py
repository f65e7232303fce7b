"""INT8 through explicit quantization: Quantize/Dequantize (Q/DQ) pairs placed from a calibration table.

`Network` calls the hooks of `net.quantizer` (set by `build.define_network` for `--precision int8`) on
the layers it is about to add; a layer whose name matches an `--int8-exclude` pattern (fnmatch, e.g.
'model.24.*') is left unquantized, so it runs in the build's float precision (fp16 on TensorRT 8.6 and
in strongly typed int8 builds), and so is a layer a block keeps in float32 (`with net.fp32(name):`):

- convolution: the input activation gets a per-tensor Q/DQ (scale amax/127 from the table, key = the
  convolution's prefix); the BN-folded weights become a float32 constant with a per-output-channel
  Q/DQ (axis 0) that feeds the kernel input (`set_input(1, ...)`); the bias stays a weight.
- linear: the weight matrix (c2, c1) gets a per-row Q/DQ, the matmul input a per-tensor one (key = prefix).
- residual add (`net.add(..., residual=True)`): following NVIDIA's Q/DQ placement advice, only the
  shortcut input is quantized (key = the add's name), so TensorRT can fuse the add into the epilogue of
  the convolution producing the other input. An add with no convolution output among its inputs (YOLOv8's,
  after a SiLU) is left in floating point, and --int8-exclude cannot name it.

A tensor feeding several quantized consumers gets one Q/DQ pair, under the key of its first consumer in the
calibration network (where nothing is excluded), so an excluded layer moves no range to another key.
`RecordingQuantizer` places the same points in a plain FP32 network and marks each as an extra output
(`calib:<key>`) for calibration (`netdef.int8.calibrate`).
"""
from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import trt_api
from .calibration import CalibrationTable, per_channel_weight_scales, scale_from_amax
from ..errors import NetdefError
from ..options import FP16_MAX, unmatched_patterns

CALIB_PREFIX = "calib:"  # output-name prefix of the tensors a recording network exposes
CALIBRATE_HINT = ("run `netdef calibrate ARCH --weights W --data IMAGES_OR_NPY -o table.json` (on a GPU machine; "
                  "without one, netdef.int8.calibrate.calibrate_torch with the PyTorch model: README's INT8 section) "
                  "and pass --calibration table.json")


def fingerprint(spec: Any, weights_sha: str, input_shape: Sequence[int]) -> str:
    """sha256 over the architecture's hash, the weights' hash and the input shape (no batch)."""
    shape = "x".join(str(int(s)) for s in input_shape)
    text = f"arch={spec.sha256}\nweights={weights_sha}\ninput={shape}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint_parts(spec: Any, weights_sha: str, input_shape: Sequence[int]) -> dict[str, Any]:
    """What `fingerprint` covers, kept in a table's meta so that a refusal can say which part differs."""
    return {"arch_sha256": spec.sha256, "weights_sha256": weights_sha, "input_shape": [int(s) for s in input_shape]}


def require_table(spec: Any, opts: Any) -> None:
    """An int8 build of `spec` needs `opts.calibration`: refused without one (before the weights are read)."""
    if opts.precision == "int8" and not opts.calibration:
        raise NetdefError(f"--precision int8 needs a calibration table for {spec.name}: {CALIBRATE_HINT}")


def _calibrated_size(spec: Any, opts: Any, table: CalibrationTable) -> tuple[int, ...]:
    """The (C, H, W) a dynamic-size int8 build checks its `table` against: the size the table was made at, which
    must lie within the build's range (a tensor's range measured at one size serves the others), else the
    range's OPT size."""
    from ..options import format_hw_range

    lo, opt, hi = opts.input_range
    made = table.meta.get("input_shape")
    if not (isinstance(made, list) and len(made) == 3 and all(isinstance(v, int) for v in made)):
        return spec.input_shape_for(tuple(opt))
    h, w = made[1:]
    if not (lo[0] <= h <= hi[0] and lo[1] <= w <= hi[1]):
        raise NetdefError(f"calibration table {opts.calibration} was made at input {h}x{w}, outside this build's "
                          f"--input-shape {format_hw_range(opts.input_range)}: calibrate at a size within it, e.g. "
                          f"its OPT size (--input-shape {opt[0]}x{opt[1]})")
    return spec.input_shape_for((h, w))


class Quantizer:
    """Inserts Q/DQ pairs into a `Network` with the activation ranges `amax` (key -> amax)."""

    def __init__(self, amax: Mapping[str, float], *, source: str = "calibration table",
                 exclude: Sequence[str] = ()):
        self.amax = dict(amax)
        self.source = source
        self.exclude = tuple(exclude)
        self.points: dict[str, str] = {}  # key -> kind ("conv", "linear", "residual"), in network order
        self._keys: dict[str, str] = {}  # tensor name -> the key an excluded first consumer gave it
        self._layers: list[str] = []  # the layers --int8-exclude can name, in network order
        self._matched: set[str] = set()  # the --int8-exclude patterns that named one
        self._quantized: dict[str, Any] = {}  # tensor name -> its dequantized stand-in
        self._convs: list[Any] = []  # convolution layers made here, excluded ones too (their outputs can absorb an add)

    @classmethod
    def for_build(cls, spec: Any, weights_sha: str, opts: Any, weights_from: str | None = None) -> "Quantizer":
        """The quantizer of an int8 build: loads `opts.calibration` and checks it belongs to this network (whose
        weights come from `weights_from`, `define.weights_identity`'s source: said where the table's differ)."""
        require_table(spec, opts)
        table = CalibrationTable.load(opts.calibration)
        shape = spec.input_shape_for(opts.input_hw) if opts.input_range is None else \
            _calibrated_size(spec, opts, table)
        table.check_made_for(opts.calibration, fingerprint(spec, weights_sha, shape),
                             dict(fingerprint_parts(spec, weights_sha, shape), weights=weights_from))
        return cls(table.amax, source=f"calibration table {opts.calibration}", exclude=opts.int8_exclude)

    def excluded(self, name: str, inputs: Sequence[Any] = (), *, fp32: bool = False) -> bool:
        """True when layer `name` stays in floating point: it matches an --int8-exclude pattern, or `fp32` (a
        block keeps it in float32: `net.fp32`). Its `inputs` keep the key this layer gives them in the calibration
        network, where nothing is excluded: a later consumer quantizes them with the table's range of that key."""
        self._layers.append(name)
        hits = [p for p in self.exclude if fnmatch.fnmatchcase(name, p)]
        self._matched.update(hits)
        for t in inputs if hits or fp32 else ():
            self._keys.setdefault(t.name, name)
        return bool(hits) or fp32

    def check_exclude(self, where: str) -> None:
        """OptionError naming each --int8-exclude pattern that matched no layer of the network `where` (a typo
        would leave the layers it meant quantized)."""
        unmatched = [p for p in self.exclude if p not in self._matched]
        if unmatched:
            raise unmatched_patterns("--int8-exclude", unmatched, f"no layer of {where} that int8 quantizes; their "
                                     "names are weight-key prefixes (fnmatch patterns: 'layer4.*')", self._layers)

    # ------------------------------------------------------------ hooks called by Network

    def conv(self, net: Any, x: Any, prefix: str, w: np.ndarray, b: np.ndarray) -> Any:
        """The convolution `prefix` (stride, padding: set by the caller) on quantized input and weights, or on
        floating ones where --int8-exclude names it; either way a convolution whose output a residual add can
        absorb, as in the calibration network (so that the add quantizes the input the table has its range of)."""
        if self.excluded(prefix, [x], fp32=net.in_fp32):
            layer = net.convolution(x, prefix, w, b)
        else:
            layer = self._convolution(net, self.quantize_activation(net, x, prefix, "conv"), prefix, w, b)
        self._convs.append(layer)
        return layer

    def linear_weight(self, net: Any, x: Any, prefix: str, w: np.ndarray) -> Any:
        """The (c2, c1) weight matrix of linear `prefix` as a tensor, Q/DQ'd per output row."""
        return self._weight_qdq(net, w, prefix)

    def activation(self, net: Any, x: Any, prefix: str) -> Any:
        """The input of matmul `prefix`, Q/DQ'd per tensor."""
        return self.quantize_activation(net, x, prefix, "linear")

    def fuses(self, a: Any, b: Any) -> bool:
        """Whether a residual add of `a` and `b` can be fused into a convolution (one is a convolution's direct
        output): only such an add is quantized, and only such an add --int8-exclude can name (YOLOv8's, after a
        SiLU, stays in floating point either way)."""
        return self._is_conv_output(a) or self._is_conv_output(b)

    def shortcut(self, a: Any, b: Any) -> Any:
        """The input of a residual add (`fuses`) that is quantized: the one that is not a convolution's direct
        output (b when both are)."""
        return a if self._is_conv_output(b) and not self._is_conv_output(a) else b

    def residual(self, net: Any, a: Any, b: Any, name: str) -> tuple[Any, Any]:
        """`a`, `b` with the shortcut input of the add `name` quantized."""
        if self.shortcut(a, b) is a:
            return self.quantize_activation(net, a, name, "residual"), b
        return a, self.quantize_activation(net, b, name, "residual")

    # ------------------------------------------------------------ building blocks

    def quantize_activation(self, net: Any, x: Any, key: str, kind: str) -> Any:
        """x through a per-tensor Q/DQ with the table's range for `key` (shared when x was quantized before)."""
        done = self._quantized.get(x.name)
        if done is not None:
            return done
        key = self._keys.get(x.name, key)
        self.points[key] = kind
        out = self._activation_qdq(net, x, key)
        self._quantized[x.name] = out
        return out

    def _activation_qdq(self, net: Any, x: Any, key: str) -> Any:
        if key not in self.amax:
            raise NetdefError(f"{self.source} has no range for '{key}' (input of a {self.points[key]} layer): it "
                              f"does not match this network; recalibrate")
        scale = np.array(scale_from_amax(self.amax[key]), np.float32)
        if net.precision != "fp32" and float(scale) > FP16_MAX:  # the table's value, not the weights': say so
            raise NetdefError(f"{self.source}: tensor '{key}' has amax {self.amax[key]:g}, an int8 scale of "
                              f"{float(scale):g}, beyond fp16's largest value {FP16_MAX:g}: recalibrate or fix that "
                              "entry")
        # dequantized to the compute dtype, as the weights are: x may be float32 coming out of an `fp32` block
        return self._qdq(net, x, scale, None, f"{key}/input", trt_api.trt_dtype(net.dtype))

    def _weight_qdq(self, net: Any, w: np.ndarray, prefix: str) -> Any:
        """Weights as a float32 constant -> per-output-channel Q/DQ (axis 0) -> compute dtype."""
        scales = per_channel_weight_scales(w, 0, name=f"{prefix}.weight")
        const = net.constant(w, f"{prefix}/weight", dtype=np.float32, key=f"{prefix}.weight")
        return self._qdq(net, const, scales, 0, f"{prefix}/weight", trt_api.trt_dtype(net.dtype))

    @staticmethod
    def _qdq(net: Any, x: Any, scale: np.ndarray, axis: int | None, name: str, out_type: Any) -> Any:
        s = net.constant(scale, f"{name}_scale", dtype=np.float32)
        q = net.name(trt_api.add_quantize(net.definition.raw, x, s, axis), f"{name}_quantize")
        dq = trt_api.add_dequantize(net.definition.raw, q.get_output(0), s, axis, out_type)
        return net.name(dq, f"{name}_dequantize").get_output(0)

    def _convolution(self, net: Any, x: Any, prefix: str, w: np.ndarray, b: np.ndarray) -> Any:
        c2, _, kh, kw = w.shape
        layer = net.layer("convolution_nd", prefix, x, int(c2), (int(kh), int(kw)), net.trt.Weights(),
                          net.keep(b, f"{prefix}.bias"))
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
        probe = net.layer("identity", f"{key}/calib", x)  # an input can't be an output itself
        net.output(probe.get_output(0), CALIB_PREFIX + key)
        return x

    def _weight_qdq(self, net: Any, w: np.ndarray, prefix: str) -> Any:
        return net.constant(w, f"{prefix}/weight", key=f"{prefix}.weight")

    def _convolution(self, net: Any, x: Any, prefix: str, w: np.ndarray, b: np.ndarray) -> Any:
        return net.convolution(x, prefix, w, b)
