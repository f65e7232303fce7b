"""Tests of netdef.int8.calibration: range collection, amax methods, weight scales, the table."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from netdef.int8.calibration import (METHODS, MIN_SCALE, CalibrationTable, RangeCollector, _entropy_amax, collect_ranges,
                                compute_amax, per_channel_weight_scales, scale_from_amax)
from netdef.errors import NetdefError


def bin_width(c: RangeCollector) -> float:
    return c.range / c.bins


# ---------------------------------------------------------------- reference entropy (slow, plain loops)

def reference_entropy_amax(hist, edges, num_quant_bins=128, stride=1, ignore_zero_bin=True, eps=1e-4):
    """Straightforward KL-threshold search, written independently of the module with plain loops."""
    h = [float(v) for v in hist]
    if ignore_zero_bin:
        h[0] = h[1]
    n = len(h)
    best_i, best_kl = None, None
    for i in range(num_quant_bins, n + 1, stride):
        # reference distribution: first i bins, outliers folded into the last one
        p = h[:i]
        p[i - 1] += sum(h[i:])
        total = sum(p)
        if sum(h[:i]) == 0:
            continue
        # candidate: merge the first i bins (no outliers) into num_quant_bins levels,
        # spread each level's mass evenly over the bins that are non-empty in p
        width = i // num_quant_bins
        q = [0.0] * i
        for j in range(num_quant_bins):
            start = j * width
            stop = i if j == num_quant_bins - 1 else start + width
            level_mass = sum(h[start:stop])
            nonempty = [b for b in range(start, stop) if p[b] != 0]
            for b in nonempty:
                q[b] = level_mass / len(nonempty)
        q_total = sum(q)
        p = [v / total for v in p]
        q = [v / q_total for v in q]
        # smoothing: each empty bin gets eps / i, the others shrink to keep the sum at 1
        e = eps / i
        for dist in (p, q):
            zeros = sum(1 for v in dist if v == 0)
            for b in range(i):
                dist[b] = e if dist[b] == 0 else dist[b] * (1 - e * zeros)
        kl = 0.0
        for b in range(i):
            kl += p[b] * math.log(p[b] / q[b])
        if best_kl is None or kl <= best_kl:
            best_i, best_kl = i, kl
    return float(edges[best_i])


# ---------------------------------------------------------------- max

def test_max_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(0, s, size=(4, 3, 8, 8)).astype(np.float32) for s in (1.0, 3.0, 0.5, 2.0)]
    c = RangeCollector()
    for b in batches:
        c.update(b)
    assert c.amax("max") == float(np.abs(np.concatenate([b.ravel() for b in batches])).max())
    assert c.count == sum(b.size for b in batches)
    assert int(c.hist.sum()) == c.count


def test_unknown_method_lists_valid_ones():
    c = RangeCollector()
    c.update(np.ones(10))
    with pytest.raises(NetdefError, match="max, percentile, entropy"):
        c.amax("kl")


def test_no_data_and_nan_raise():
    with pytest.raises(NetdefError, match="no calibration data"):
        RangeCollector(name="conv1").amax("max")
    c = RangeCollector(name="conv1")
    with pytest.raises(NetdefError, match="conv1.*NaN"):
        c.update(np.array([1.0, np.nan]))
    with pytest.raises(NetdefError, match="bins"):
        RangeCollector(bins=10)


def test_zeros_first_then_values_and_all_zero_guard():
    c = RangeCollector()
    c.update(np.zeros(100))
    assert c.amax("percentile", percentile=50) == 0.0
    c.update(np.linspace(0.5, 1, 100))
    assert c.hist[0] == 100 and c.hist.sum() == 200
    assert c.amax("percentile", percentile=40) <= bin_width(c)
    cols = collect_ranges([{"dead": np.zeros((2, 3))}])
    for method in ("max", "percentile", "entropy"):
        amax = compute_amax(cols, method)["dead"]
        assert amax > 0 and math.isfinite(amax)


# ---------------------------------------------------------------- percentile

def test_percentile_gaussian_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=2_000_000).astype(np.float32)
    c = RangeCollector()
    for chunk in np.split(x, 4):
        c.update(chunk)
    ref = np.percentile(np.abs(x), 99.9)
    assert abs(c.amax("percentile", percentile=99.9) - ref) <= bin_width(c)
    ref = np.percentile(np.abs(x), 99.99)
    assert abs(c.amax("percentile") - ref) <= bin_width(c)  # default 99.99


def test_percentile_with_growing_range():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, size=500_000)
    b = rng.normal(0, 10, size=500_000)  # second batch 10x larger: the histogram must grow and merge
    c = RangeCollector()
    c.update(a)
    first_range = c.range
    c.update(b)
    assert c.range >= np.abs(b).max() and c.range > first_range
    assert int(c.hist.sum()) == a.size + b.size
    both = np.abs(np.concatenate([a, b]))
    for pct in (50, 90, 99.9):
        assert abs(c.amax("percentile", percentile=pct) - np.percentile(both, pct)) <= 2 * bin_width(c)
    # the merged histogram equals a histogram of all data on the final edges (up to edge rounding)
    ref, _ = np.histogram(both, bins=c.bins, range=(0, c.range))
    assert np.abs(ref - c.hist).sum() <= 10


def test_percentile_out_of_range():
    c = RangeCollector()
    c.update(np.arange(10.0))
    with pytest.raises(NetdefError, match="percentile"):
        c.amax("percentile", percentile=0)
    with pytest.raises(NetdefError, match="percentile"):
        c.amax("percentile", percentile=101)


# ---------------------------------------------------------------- entropy

@pytest.mark.parametrize("ignore_zero_bin", [True, False])
def test_entropy_matches_reference_on_collected_histogram(ignore_zero_bin):
    rng = np.random.default_rng(3)
    relu = np.maximum(rng.normal(size=(200_000,)), 0)  # spike of zeros, like a ReLU output
    c = RangeCollector(bins=512)
    c.update(relu)
    c.update(rng.laplace(scale=0.5, size=100_000))
    ref = reference_entropy_amax(c.hist, c.edges(), ignore_zero_bin=ignore_zero_bin)
    got = _entropy_amax(c.hist, c.edges(), ignore_zero_bin=ignore_zero_bin)
    assert got == ref
    assert c.amax("entropy", ignore_zero_bin=ignore_zero_bin) == min(ref, c.max)


def test_entropy_matches_reference_on_odd_histograms():
    rng = np.random.default_rng(4)
    edges = np.linspace(0, 3.0, 301)
    sparse = rng.poisson(lam=np.linspace(50, 0.2, 300))  # decaying, many empty bins at the tail
    sparse[::7] = 0
    bimodal = np.histogram(np.abs(np.concatenate([rng.normal(0.5, 0.1, 5000), rng.normal(2.5, 0.2, 300)])),
                           bins=300, range=(0, 3.0))[0]
    for hist in (sparse, bimodal):
        for stride in (1, 5):
            assert _entropy_amax(hist, edges, stride=stride) == reference_entropy_amax(hist, edges, stride=stride)
    big = np.histogram(np.abs(rng.standard_t(4, 200_000)), bins=2048)
    assert _entropy_amax(big[0], big[1], stride=16) == reference_entropy_amax(big[0], big[1], stride=16)


def test_entropy_gaussian_clips_a_little():
    rng = np.random.default_rng(5)
    x = rng.normal(size=1_000_000)
    c = collect_ranges([{"t": x[:500_000]}, {"t": x[500_000:]}])["t"]
    amax = c.amax("entropy")
    assert amax < c.amax("max")
    clipped = np.mean(np.abs(x) > amax)
    assert 0 < clipped < 0.01, (amax, clipped)


def test_entropy_uniform_is_close_to_max():
    rng = np.random.default_rng(6)
    x = rng.uniform(-4, 4, size=1_000_000)
    c = RangeCollector()
    c.update(x)
    assert c.amax("entropy") >= 0.95 * c.amax("max")


# ---------------------------------------------------------------- weight scales

def test_per_channel_scales_match_numpy():
    rng = np.random.default_rng(7)
    w = rng.normal(size=(16, 8, 3, 3)).astype(np.float32)
    s = per_channel_weight_scales(w)
    assert s.dtype == np.float32 and s.shape == (16,)
    np.testing.assert_allclose(s, np.abs(w).reshape(16, -1).max(axis=1) / 127, rtol=1e-6)
    # deconvolution weights have the output channel on axis 1
    s1 = per_channel_weight_scales(w, axis=1)
    np.testing.assert_allclose(s1, np.abs(w).max(axis=(0, 2, 3)) / 127, rtol=1e-6)


def test_zero_channel_guard():
    w = np.ones((4, 5), dtype=np.float32)
    w[2] = 0
    s = per_channel_weight_scales(w)
    assert np.all(np.isfinite(s)) and np.all(s > 0)
    assert s[2] == np.float32(MIN_SCALE)
    assert np.all(np.isfinite(1 / s))
    assert scale_from_amax(0.0) == pytest.approx(MIN_SCALE)
    assert scale_from_amax(12.7) == pytest.approx(0.1)
    bad = w.copy()
    bad[1, 0] = np.inf
    with pytest.raises(NetdefError, match=r"channel\(s\) \[1\]"):
        per_channel_weight_scales(bad)


# ---------------------------------------------------------------- table

def make_table():
    return CalibrationTable(fingerprint="abc123", method="entropy",
                            amax={"conv1": 123.456, "tiny": 1e-7, "third": 0.1 + 0.2, "np": np.float32(2.5)},
                            meta={"batches": np.int64(8), "images": 64, "date": "2024-01-01"})


def test_table_round_trip(tmp_path):
    path = tmp_path / "calib.json"
    t = make_table()
    t.save(path)
    u = CalibrationTable.load(path).check_made_for(path, "abc123")
    assert u.fingerprint == t.fingerprint and u.method == t.method
    assert u.amax == {"conv1": 123.456, "tiny": 1e-7, "third": 0.1 + 0.2, "np": 2.5}
    assert u.meta == {"batches": 8, "images": 64, "date": "2024-01-01"}
    text = path.read_text()
    assert text.startswith("{\n  ")  # pretty
    keys = list(json.loads(text)["amax"])
    assert keys == sorted(keys)
    assert sorted(os.listdir(tmp_path)) == ["calib.json"]  # no temp files left
    t.save(path)  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["calib.json"]


def test_stale_fingerprint(tmp_path):
    path = tmp_path / "calib.json"
    make_table().save(path)
    with pytest.raises(NetdefError, match=r"calib\.json was made for a different network.*abc123≠zzz.*recalibrate"):
        CalibrationTable.load(path).check_made_for(path, "zzz")


def write(tmp_path, doc) -> str:
    path = tmp_path / "bad_table.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_malformed_tables(tmp_path):
    good = {"fingerprint": "f", "method": "max", "amax": {"a": 1.0}, "meta": {}}
    with pytest.raises(NetdefError, match="bad_table.json.*not valid JSON"):
        CalibrationTable.load(write(tmp_path, '{"fingerprint": "f", '))
    with pytest.raises(NetdefError, match="bad_table.json.*amax"):
        CalibrationTable.load(write(tmp_path, {k: v for k, v in good.items() if k != "amax"}))
    for bad in (-1.0, 0.0, "3", None, True):
        with pytest.raises(NetdefError, match="bad_table.json.*'conv2'.*positive finite"):
            CalibrationTable.load(write(tmp_path, dict(good, amax={"a": 1.0, "conv2": bad})))
    with pytest.raises(NetdefError, match="bad_table.json.*'conv2'"):
        CalibrationTable.load(write(tmp_path, '{"fingerprint": "f", "method": "max", "amax": {"conv2": NaN}}'))
    with pytest.raises(NetdefError, match="JSON, but no object"):
        CalibrationTable.load(write(tmp_path, "[1, 2]"))
    for other, what in ((b"102\nconv1.weight 9408 3c", "a .wts weights file"), (b"\x80\x02}q", "a pickle")):
        path = tmp_path / "mistyped"
        path.write_bytes(other)  # another file named by mistake: named as what it is, never "delete it"
        with pytest.raises(NetdefError, match=rf"mistyped is not a calibration table \(it looks like {what}.*give the "
                                              r"JSON table `netdef calibrate` wrote") as info:
            CalibrationTable.load(path)
        assert "delete" not in str(info.value)
    with pytest.raises(NetdefError, match="not found"):
        CalibrationTable.load(tmp_path / "missing.json")
    assert CalibrationTable.load(write(tmp_path, good)).amax == {"a": 1.0}


def test_unknown_keys_and_methods_are_refused_by_name(tmp_path):
    """A table with a key netdef never writes, or a method no calibration has, is refused naming the file and the
    key or method (save refuses such a method too); every key and method netdef writes loads."""
    good = {"format": 1, "fingerprint": "f", "method": "max", "amax": {"a": 1.0}, "meta": {"anything": [1]}}
    for method in METHODS:
        assert CalibrationTable.load(write(tmp_path, dict(good, method=method))).method == method
    with pytest.raises(NetdefError, match=r"bad_table\.json: unknown key\(s\) 'amx', 'note' \(a table has format, "
                                          r"fingerprint, method, amax, meta; free-form notes belong in 'meta'\)"):
        CalibrationTable.load(write(tmp_path, dict(good, amx={"a": 2.0}, note="x")))
    for method in ("minmax", "Entropy", ""):
        with pytest.raises(NetdefError, match=rf"bad_table\.json: 'method' '{method}' is not a calibration method "
                                              r"\(netdef writes max, percentile, entropy\)"):
            CalibrationTable.load(write(tmp_path, dict(good, method=method)))
    with pytest.raises(NetdefError, match=r"t\.json: 'method' 'kl' is not a calibration method"):
        CalibrationTable("f", "kl", {"a": 1.0}).save(tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


def test_save_rejects_bad_amax_and_leaves_nothing(tmp_path):
    t = CalibrationTable("f", "max", {"conv3": float("inf")})
    with pytest.raises(NetdefError, match="'conv3'"):
        t.save(tmp_path / "t.json")
    t = CalibrationTable("f", "max", {"a": 1.0}, meta={"x": object()})
    with pytest.raises(NetdefError, match="meta"):
        t.save(tmp_path / "t.json")
    assert os.listdir(tmp_path) == []


def test_end_to_end_collect_compute_save(tmp_path):
    rng = np.random.default_rng(8)
    batches = [{"in": rng.normal(size=(2, 3, 16, 16)), "relu1": np.maximum(rng.normal(size=(2, 8, 8, 8)), 0)}
               for _ in range(3)]
    cols = collect_ranges(batches, bins=256)
    assert set(cols) == {"in", "relu1"} and cols["in"].bins == 256
    amax = compute_amax(cols, "percentile", percentile=99.9)
    t = CalibrationTable("fp", "percentile", amax, {"batches": 3, "percentile": 99.9})
    t.save(tmp_path / "c.json")
    assert CalibrationTable.load(tmp_path / "c.json").check_made_for(tmp_path / "c.json", "fp") == t


def test_calibration_images_fail_as_detect_images_do(tmp_path, monkeypatch):
    """`netdef calibrate` reads images through netdef.tools.images: a truncated file and an image Pillow refuses
    as too large are one error naming the file (the large one used to escape as a DecompressionBombError)."""
    from PIL import Image

    from netdef.int8.calibrate import load_image

    Image.new("RGB", (64, 64), (255, 0, 0)).save(tmp_path / "big.png")
    x = load_image(tmp_path / "big.png", (3, 8, 4))
    assert x.shape == (3, 8, 4) and np.allclose(x[0], 1) and np.allclose(x[1:], 0)
    assert load_image(tmp_path / "big.png", (1, 2, 2)).shape == (1, 2, 2)
    (tmp_path / "cut.png").write_bytes((tmp_path / "big.png").read_bytes()[:60])
    with pytest.raises(NetdefError, match=r"cannot read image .*cut\.png: "):
        load_image(tmp_path / "cut.png", (3, 8, 8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels: over twice the limit, a "bomb"
    with pytest.raises(NetdefError, match=r"cannot read image .*big\.png: .* \(Pillow refuses images this large"):
        load_image(tmp_path / "big.png", (3, 8, 8))


def test_calibration_images_without_pillow_are_one_error(tmp_path, monkeypatch):
    """Without Pillow (no dependency of netdef's), an image folder is the one NetdefError saying to install it, as
    before netdef.tools.images, not a ModuleNotFoundError traceback from load_image's own import."""
    import sys

    from netdef.int8.calibrate import load_image

    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    for name in [m for m in sys.modules if m == "PIL" or m.startswith("PIL.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "PIL", None)  # `import PIL` raises ImportError
    with pytest.raises(NetdefError, match=r"^reading images needs Pillow: pip install pillow$"):
        load_image(tmp_path / "a.png", (3, 8, 8))


def test_yolo_calibration_images_are_letterboxed_as_detect_feeds_them(tmp_path, monkeypatch):
    """A YOLO detector's calibration images were stretched to the input size, while `netdef detect` letterboxes
    them (aspect kept, grey 114 around): the ranges were measured on other inputs. `resize="letterbox"` gives
    detect's own pixels (tools.preprocess.letterbox), the default for a YOLO detection head, said on the log;
    classifiers keep the stretch."""
    pytest.importorskip("PIL")
    from PIL import Image

    from netdef import trt_api
    from netdef.int8 import calibrate as calibration_run
    from netdef.int8.calibrate import calibration_batches
    from netdef.tools.preprocess import letterbox

    rgb = np.random.default_rng(0).integers(0, 256, (20, 40, 3), np.uint8)  # wide: padded above and below
    (tmp_path / "imgs").mkdir()
    Image.fromarray(rgb).save(tmp_path / "imgs" / "a.png")
    _, batches = calibration_batches(tmp_path / "imgs", (3, 32, 32), 4, resize="letterbox")
    x = next(batches)
    assert np.array_equal(x[0], letterbox([rgb], (32, 32), bgr=False, device="cpu")[0][0].numpy())
    assert np.allclose(x[0, :, 0, :], 114 / 255) and not np.allclose(x[0, :, 16, :], 114 / 255)
    _, stretched = calibration_batches(tmp_path / "imgs", (3, 32, 32), 4)
    assert not np.allclose(next(stretched)[0, :, 0, :], 114 / 255)
    with pytest.raises(NetdefError, match=r"calibration resize 'crop': use stretch or letterbox"):
        calibration_batches(tmp_path / "imgs", (3, 32, 32), 4, resize="crop")
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 32, 32), np.float32))  # an array is taken as it is
    with pytest.raises(NetdefError, match=r"--mean/--std/--resize apply to image folders; the array"):
        calibration_batches(tmp_path / "x.npy", (3, 32, 32), 4, resize="letterbox")
    said: list[str] = []
    (tmp_path / "w.wts").write_text("1\nx 1 3f800000\n")  # hashed, not read: no GPU here
    monkeypatch.setattr(trt_api, "can_run_engines", lambda: False)  # the default is chosen (and said) before
    for arch, how in (("yolov5n", "letterboxed (grey 114 around, as netdef detect feeds yolov5n) to 640x640 "
                                  "(--resize stretch for the other)"),
                      ("resnet18", "resized to 224x224 (--resize letterbox for the other)")):
        with pytest.raises(NetdefError, match="calibration runs the FP32 network on a CUDA GPU"):
            calibration_run.calibrate(arch, tmp_path / "w.wts", tmp_path / "imgs", tmp_path / "t.json", log=said.append)
        assert said[-1] == f"[netdef] calibration images {how}", said
