"""INT8 calibration maths and the calibration table (numpy only, no TensorRT).

Activation ranges: feed each calibration batch into a :class:`RangeCollector` per tensor
(or use :func:`collect_ranges`), then turn the statistics into amax values with
:func:`compute_amax` ("max", "percentile" or "entropy"). Weights use symmetric
per-output-channel scales (:func:`per_channel_weight_scales`). The results are stored in a
:class:`CalibrationTable` tied to one network by a fingerprint.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import NetdefError
from ..fileio import CALIBRATION_CACHE, JSON_FILE, atomic_write, describe_head, json_kind, read_head, recognised

METHODS = ("max", "percentile", "entropy")
MIN_SCALE = 1e-8  # scale given to an all-zero channel/tensor: positive, and 1/scale is finite in float32
_FORMAT = 1  # version of the JSON table layout
_KEYS = ("format", "fingerprint", "method", "amax", "meta")  # a table's keys, as `save` writes them
TABLE_FILE = json_kind("a netdef calibration table",
                       lambda d: isinstance(d, dict) and "fingerprint" in d and "method" in d)


def scale_from_amax(amax: float) -> float:
    """Symmetric INT8 scale amax/127; an amax of 0 (or too small for float32) gives MIN_SCALE."""
    return float(per_channel_weight_scales(np.array([amax], dtype=np.float64), name="amax")[0])


def per_channel_weight_scales(w: np.ndarray, axis: int = 0, *, name: str = "weights") -> np.ndarray:
    """Symmetric INT8 scales amax/127 along `axis` (the output channel), as float32.

    A channel whose scale would be 0 (all zero) or a float32 subnormal gets MIN_SCALE instead.
    """
    w = np.asarray(w)
    if w.ndim == 0 or w.size == 0:
        raise NetdefError(f"{name}: cannot compute per-channel scales of an empty or scalar array "
                          f"(shape {w.shape}); check the weight shape")
    a = np.moveaxis(np.abs(w.astype(np.float64, copy=False)), axis, 0).reshape(w.shape[axis], -1)
    amax = a.max(axis=1)
    if not np.all(np.isfinite(amax)):
        bad = np.flatnonzero(~np.isfinite(amax)).tolist()
        raise NetdefError(f"{name}: NaN or Inf in output channel(s) {bad[:10]}; fix the weights file")
    scales = (amax / 127.0).astype(np.float32)
    return np.where(scales >= np.finfo(np.float32).tiny, scales, np.float32(MIN_SCALE)).astype(np.float32)


class RangeCollector:
    """Streaming statistics of ONE tensor: running abs-max and a histogram of |x|.

    The histogram has a fixed number of bins over [0, R] with R >= the abs-max seen so far.
    When a batch exceeds R, the range grows by the smallest integer factor k that covers it
    and every k old bins are summed into one new bin. Old bin edges fall on new edges, so the
    merge is exact: earlier batches keep their counts (like pytorch-quantization's
    HistogramCalibrator, which grows the range at constant width; here the bin count stays fixed).
    """

    def __init__(self, bins: int = 2048, name: str = "tensor"):
        if not isinstance(bins, (int, np.integer)) or bins < 128:
            raise NetdefError(f"{name}: histogram bins must be an integer >= 128, got {bins!r}")
        self.name, self.bins = name, int(bins)
        self.hist: np.ndarray | None = None  # int64 counts, None until a non-zero value is seen
        self.range = 0.0  # R: the histogram covers [0, R]
        self.max = 0.0  # running abs-max
        self.count = 0  # number of values seen
        self._zeros = 0  # zeros seen before the histogram exists

    def update(self, x: np.ndarray) -> None:
        """Add a batch of any shape and float dtype."""
        a = np.abs(np.asarray(x)).ravel()
        if a.size == 0:
            return
        if a.dtype.kind != "f":
            a = a.astype(np.float64)
        m = float(a.max())
        if not math.isfinite(m):
            raise NetdefError(f"{self.name}: calibration batch contains NaN or Inf; check the input "
                              f"data and that the FP32 engine does not overflow")
        self.count += a.size
        self.max = max(self.max, m)
        if m == 0.0 and self.hist is None:
            self._zeros += a.size
            return
        if self.hist is None:
            self.range, self.hist = m, np.zeros(self.bins, dtype=np.int64)
            self.hist[0] = self._zeros
        elif m > self.range:
            k = math.ceil(m / self.range)
            while self.range * k < m:  # guard against rounding in the division
                k += 1
            padded = np.zeros(-(-self.bins // k) * k, dtype=np.int64)
            padded[: self.bins] = self.hist
            merged = padded.reshape(-1, k).sum(axis=1)
            self.hist = np.zeros(self.bins, dtype=np.int64)
            self.hist[: merged.size] = merged
            self.range *= k
        counts, _ = np.histogram(a, bins=self.bins, range=(0.0, self.range))
        self.hist += counts

    def edges(self) -> np.ndarray:
        """The bins+1 histogram edges (float64)."""
        return np.linspace(0.0, self.range, self.bins + 1)

    def amax(self, method: str, **kw) -> float:
        """The clipping threshold by `method`: "max"; "percentile" (percentile=99.99);
        "entropy" (num_quant_bins=128, stride=1, ignore_zero_bin=True). 0.0 if all data was zero."""
        if method not in METHODS:
            raise NetdefError(f"unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
        if self.count == 0:
            raise NetdefError(f"{self.name}: no calibration data was collected; feed at least one batch")
        if method == "max":
            if kw:
                raise NetdefError(f"calibration method 'max' takes no options, got {sorted(kw)}")
            return self.max
        if self.hist is None:  # only zeros so far
            return 0.0
        if method == "percentile":
            return min(self.max, _percentile_amax(self.hist, self.edges(), **kw))
        return min(self.max, _entropy_amax(self.hist, self.edges(), **kw))


def _percentile_amax(hist: np.ndarray, edges: np.ndarray, percentile: float = 99.99) -> float:
    """Upper edge of the bin where the CDF of `hist` reaches `percentile` %."""
    if not 0.0 < percentile <= 100.0:
        raise NetdefError(f"percentile must be in (0, 100], got {percentile!r}")
    cdf = np.cumsum(hist, dtype=np.float64)
    idx = int(np.searchsorted(cdf, cdf[-1] * percentile / 100.0))
    return float(edges[min(idx, hist.size - 1) + 1])


def _smooth(d: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Probability vector -> same with empty bins given eps/len each, the rest scaled to keep sum 1."""
    zero = d == 0
    n0 = int(zero.sum())
    if n0 == 0:
        return d
    e = eps / d.size
    return np.where(zero, e, d * (1.0 - e * n0))


def _entropy_amax(hist: np.ndarray, edges: np.ndarray, num_quant_bins: int = 128, stride: int = 1,
                  ignore_zero_bin: bool = True) -> float:
    """TensorRT-style entropy calibration: the threshold edges[i] minimising KL(p || q).

    For each candidate i: p = hist[:i] with the outliers hist[i:] added to its last bin;
    q = hist[:i] (without the outliers) merged into `num_quant_bins` levels (i // num_quant_bins
    bins each, the last level taking the remainder), each level's mass spread evenly over the
    bins that are non-empty in p. Both are normalised and smoothed. (Building q from p instead
    would make q == p, KL == 0, for every i < 2 * num_quant_bins.) With ignore_zero_bin, hist[0] is replaced by hist[1]
    first (as pytorch-quantization does) so the spike of exact zeros after a ReLU does not
    decide the threshold.
    """
    h = np.asarray(hist, dtype=np.float64).copy()
    if ignore_zero_bin:
        h[0] = h[1]
    n = h.size
    if n < num_quant_bins or stride < 1:
        raise NetdefError(f"entropy calibration needs >= {num_quant_bins} bins and stride >= 1 "
                          f"(got {n} bins, stride {stride})")
    tail = np.concatenate([np.cumsum(h[::-1])[::-1], [0.0]])  # tail[i] = h[i:].sum()
    best_i, best_kl = n, math.inf
    for i in range(num_quant_bins, n + 1, stride):
        p = h[:i].copy()
        p[-1] += tail[i]
        if tail[0] - tail[i] == 0:  # nothing below the threshold: q would be empty
            continue
        level = np.minimum(np.arange(i) // (i // num_quant_bins), num_quant_bins - 1)
        nonzero = p != 0
        mass = np.bincount(level, weights=h[:i], minlength=num_quant_bins)
        used = np.bincount(level, weights=nonzero, minlength=num_quant_bins)
        q = np.where(nonzero, mass[level] / np.maximum(used[level], 1), 0.0)
        p, q = _smooth(p / p.sum()), _smooth(q / q.sum())
        kl = float(np.sum(p * np.log(p / q)))
        if kl <= best_kl:  # ties go to the larger threshold
            best_i, best_kl = i, kl
    return float(edges[best_i])


def collect_ranges(batches: Iterable[Mapping[str, np.ndarray]], *, bins: int = 2048) -> dict[str, RangeCollector]:
    """Feed each batch dict (tensor name -> values) into one RangeCollector per name."""
    collectors: dict[str, RangeCollector] = {}
    for batch in batches:
        for name, x in batch.items():
            if name not in collectors:
                collectors[name] = RangeCollector(bins, name=name)
            collectors[name].update(x)
    return collectors


def compute_amax(collectors: Mapping[str, RangeCollector], method: str, **kw) -> dict[str, float]:
    """amax per tensor; a tensor that was all zero gets 127 * MIN_SCALE so the table stays valid."""
    return {name: c.amax(method, **kw) or 127.0 * MIN_SCALE for name, c in collectors.items()}


@dataclass
class CalibrationTable:
    """Activation ranges of one network, saved as JSON.

    fingerprint: identifies the network (hash of YAML + weights + input shape, made by the caller);
    method: how the amax values were computed (one of METHODS); amax: tensor name -> amax; meta: free-form info.
    """

    fingerprint: str
    method: str
    amax: dict[str, float]
    meta: dict = field(default_factory=dict)

    def _check(self, where: str) -> None:
        if not isinstance(self.fingerprint, str) or not isinstance(self.method, str):
            raise NetdefError(f"calibration table {where}: 'fingerprint' and 'method' must be strings; "
                              f"recalibrate to write a fresh table")
        if self.method not in METHODS:
            raise NetdefError(f"calibration table {where}: 'method' {self.method!r} is not a calibration method "
                              f"(netdef writes {', '.join(METHODS)}); recalibrate to write a fresh table")
        if not isinstance(self.amax, dict) or not isinstance(self.meta, dict):
            raise NetdefError(f"calibration table {where}: 'amax' and 'meta' must be objects; "
                              f"recalibrate to write a fresh table")
        for name, v in self.amax.items():
            ok = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
            if not ok or not math.isfinite(v) or v <= 0:
                raise NetdefError(f"calibration table {where}: tensor '{name}' has amax {v!r}, which is not "
                                  f"a positive finite number; recalibrate or fix that entry")

    def save(self, path: str | os.PathLike) -> None:
        """Write pretty JSON with sorted keys, atomically (temp file in the same folder + os.replace)."""
        path = os.fspath(path)
        self._check(path)
        doc = {"format": _FORMAT, "fingerprint": self.fingerprint, "method": self.method,
               "amax": {k: float(v) for k, v in self.amax.items()}, "meta": self.meta}
        try:
            text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False, default=_json_default) + "\n"
        except (TypeError, ValueError) as e:
            raise NetdefError(f"calibration table {path}: cannot write meta as JSON ({e}); "
                              f"pass plain numbers, strings, lists and dicts") from None
        atomic_write(path, text.encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationTable":
        """Read and validate a table (`check_made_for` refuses one made for another network)."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise NetdefError(f"calibration table {path} not found: run calibration first or fix the path") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            head = read_head(path)
            if recognised(head) == CALIBRATION_CACHE:
                raise NetdefError(f"{path} is {CALIBRATION_CACHE} from images (TensorRT 11 has no calibrators to "
                                  "read a cache)") from None
            if not JSON_FILE.test(head):  # another file named by mistake: never advise deleting it
                raise NetdefError(f"{path} is not a calibration table ({describe_head(head)}): give the JSON table "
                                  "`netdef calibrate` wrote") from None
            raise NetdefError(f"calibration table {path} is not valid JSON ({e}); delete it and recalibrate") from None
        if not isinstance(doc, dict):
            raise NetdefError(f"{path} is not a calibration table (JSON, but no object): give the table `netdef "
                              "calibrate` wrote")
        if doc.get("format", _FORMAT) != _FORMAT:
            raise NetdefError(f"calibration table {path} has format {doc['format']!r}, this netdef reads "
                              f"format {_FORMAT}; recalibrate")
        missing = [k for k in ("fingerprint", "method", "amax") if k not in doc]
        if missing:
            raise NetdefError(f"{path} is not a calibration table (a JSON object without {', '.join(missing)}): give "
                              "the table `netdef calibrate` wrote")
        unknown = [k for k in doc if k not in _KEYS]
        if unknown:
            raise NetdefError(f"calibration table {path}: unknown key(s) {', '.join(map(repr, unknown))} (a table "
                              f"has {', '.join(_KEYS)}; free-form notes belong in 'meta'): remove them, or give "
                              "the table `netdef calibrate` wrote")
        table = cls(doc["fingerprint"], doc["method"], doc["amax"], doc.get("meta", {}))
        table._check(path)
        table.amax = {k: float(v) for k, v in table.amax.items()}
        return table

    def check_made_for(self, path: str | os.PathLike, fingerprint: str,
                       parts: dict[str, Any] | None = None) -> "CalibrationTable":
        """The table (read from `path`), refused where it was made for another network than the one of
        `fingerprint`, saying which of `parts` (`quantize.fingerprint_parts` and "weights", where the build's come
        from) differs where the table records them."""
        if self.fingerprint != fingerprint:
            why = _differences(self.meta, parts or {}) or f"fingerprint {self.fingerprint}≠{fingerprint}"
            raise NetdefError(f"calibration table {path} was made for a different network ({why}): recalibrate "
                              f"with this network's architecture, weights and input shape, or pass the matching "
                              f"table")
        return self


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"calibration table meta: {type(o).__name__} is not JSON serialisable")


def _differences(recorded: dict[str, Any], expected: dict[str, Any]) -> str:
    """Which fingerprinted parts differ between a table's meta and this build, where the table records them."""
    from ..define import IN_MEMORY

    named = recorded.get("weights")
    named = named if isinstance(named, str) and named != IN_MEMORY else None  # the .wts the table was made from
    made_from = named or "the .wts it was made from"
    weights = (f"this build's are in memory, fingerprinted by their keys and values, and a table made from a .wts "
               f"file, fingerprinted by its bytes, never matches them: build from {made_from}"
               if expected.get("weights") == IN_MEMORY else
               f"the table was made from {named} as its bytes were then: they are fingerprinted" if named else
               "another .wts file: its bytes are fingerprinted")
    said = {"arch_sha256": "another architecture (its YAML or its blocks' code)",
            "weights_sha256": f"other weights ({weights})"}
    out = [said[k] for k in said if k in recorded and k in expected and recorded[k] != expected[k]]
    shape = recorded.get("input_shape"), expected.get("input_shape")
    if None not in shape and list(shape[0]) != list(shape[1]):
        out.append(f"input {'x'.join(map(str, shape[0]))} where this build's is {'x'.join(map(str, shape[1]))}")
    return "made for " + "; ".join(out) if out else ""

