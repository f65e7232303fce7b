"""Tests for netdef.wts: round trips, format variants, malformed files, atomic writes."""
from __future__ import annotations

import os
import re
import struct

import numpy as np
import pytest

from netdef.errors import NetdefError, OptionError, WtsFormatError
from netdef.wts import read_wts, write_wts, wts_summary

SPECIALS = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                     0x7F800001, 0x7FBFFFFF, 0x00000001, 0x807FFFFF, 0x3F800000, 0x7F7FFFFF],
                    np.uint32).view(np.float32)  # 0, -0, inf, -inf, NaNs (quiet, signalling), denormals


def bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def put(tmp_path, text, name="w.wts") -> str:
    p = tmp_path / name
    p.write_bytes(text.encode("latin-1") if isinstance(text, str) else text)
    return str(p)


def gen_wts_py(path, state_dict) -> None:
    """Literal re-implementation of tensorrtx gen_wts.py."""
    with open(path, "w") as f:
        f.write('{}\n'.format(len(state_dict.keys())))
        for k, v in state_dict.items():
            vr = v.reshape(-1).cpu().numpy()
            f.write('{} {} '.format(k, len(vr)))
            for vv in vr:
                f.write(' ')
                f.write(struct.pack('>f', float(vv)).hex())
            f.write('\n')


# ---------------------------------------------------------------- round trips

def test_round_trip_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "specials": SPECIALS,
        "big": rng.standard_normal(1_000_003).astype(np.float32),
        "bits": rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        "empty": np.zeros(0, np.float32),
        "matrix": rng.standard_normal((3, 4, 5)).astype(np.float32),
        "scalar": np.float32(7.5),
    }
    p = tmp_path / "rt.wts"
    write_wts(p, tensors, allow_nonfinite=True)
    got = read_wts(p, allow_nonfinite=True)
    assert list(got) == list(tensors)
    for k, v in tensors.items():
        a = got[k]
        assert a.dtype == np.float32 and a.ndim == 1 and a.flags.c_contiguous and a.flags.writeable
        assert a.dtype.isnative
        np.testing.assert_array_equal(a.view(np.uint32), bits(v).reshape(-1))
    text = p.read_text()
    assert text.startswith("6\nspecials 12 00000000 80000000 7f800000 ff800000 7fc00000")
    assert "\nempty 0\n" in text and text.endswith("\n") and "\r" not in text


def test_write_converts_dtypes(tmp_path):
    tensors = {"f16": np.array([1.5, -2.0, 65504.0], np.float16), "i64": np.arange(-3, 3, dtype=np.int64),
               "bool": np.array([True, False]), "list": [[1, 2], [3, 4]], "f64": np.array([0.1])}
    write_wts(tmp_path / "d.wts", tensors)
    got = read_wts(tmp_path / "d.wts")
    for k, v in tensors.items():
        np.testing.assert_array_equal(got[k], np.asarray(v, np.float32).reshape(-1))


def test_write_torch_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    tensors = {"bf16": torch.tensor([1.0, -0.5, 3.0], dtype=torch.bfloat16),
               "grad": torch.ones(2, 2, requires_grad=True), "long": torch.tensor(5)}
    write_wts(tmp_path / "t.wts", tensors)
    got = read_wts(tmp_path / "t.wts")
    np.testing.assert_array_equal(got["bf16"], [1.0, -0.5, 3.0])
    np.testing.assert_array_equal(got["grad"], np.ones(4))
    np.testing.assert_array_equal(got["long"], [5.0])


def test_gen_wts_py_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2))
    model.train()(torch.randn(2, 3, 3, 3))  # update running stats and num_batches_tracked
    sd = model.state_dict()
    p = tmp_path / "gen.wts"
    gen_wts_py(p, sd)
    assert "\nnum_batches_tracked" not in p.read_text() and ".num_batches_tracked 1  " in p.read_text()
    got = read_wts(p)
    assert list(got) == list(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k].view(np.uint32), bits(v.float().reshape(-1).numpy()))
    assert got["1.num_batches_tracked"][0] == 1.0
    assert wts_summary(p)["keys"] == [(k, v.numel()) for k, v in sd.items()]


# ---------------------------------------------------------------- format variants

EXPECT = {"a": [1.0, 0.0, -2.0], "b": [], "c": [0.5]}


@pytest.mark.parametrize("text", [
    "3\na 3 3f800000 00000000 c0000000\nb 0\nc 1 3f000000\n",               # single spaces
    "3\na 3  3f800000 00000000 c0000000\nb 0 \nc 1  3f000000\n",             # gen_wts.py double space
    "3\na\t3\t3f800000\t\t00000000 \tc0000000\nb\t0\nc 1\t3F000000\n",       # tabs
    "3\na 3 3F800000 00000000 C0000000\nb 0\nc 1 3F000000\n",                # upper case
    "3\na 3 3f800000 0 c0000000\nb 0\nc 1 3f000000\n",                       # C++ std::hex, unpadded
    "3\na 3 3F800000 000 C0000000\nb 0\nc 1 3f000000",                       # no trailing newline
    "3\r\na 3 3f800000 00000000 c0000000\r\nb 0\r\nc 1 3f000000\r\n",        # CRLF
    "3\r\na 3 3f800000 00000000 c0000000  \r\nb 0  \r\nc 1 3f000000 \t\r\n\r\n\n  \n",  # trailing ws, blanks
    " 3 \na 3 3f800000 00000000 c0000000\nb 0\nc 1 3f000000\n",
    "3\n\na 3 3f800000 00000000 c0000000\n \t\r\n\nb 0\n\r\nc 1 3f000000\n",          # blank lines (tensorrtx skips)
])
def test_variants(tmp_path, text):
    got = read_wts(put(tmp_path, text))
    assert list(got) == list(EXPECT)
    for k, v in EXPECT.items():
        np.testing.assert_array_equal(got[k], np.array(v, np.float32))


def test_unpadded_cpp_tokens_bit_exact(tmp_path):
    rng = np.random.default_rng(1)
    v = np.concatenate([SPECIALS, rng.standard_normal(5000).astype(np.float32),
                        np.array([1, 0xF, 0xFF, 0xABC, 0x1234, 0xABCDE, 0x123456], np.uint32).view(np.float32)])
    tokens = " ".join("%X" % u if i % 2 else "%x" % u for i, u in enumerate(v.view(np.uint32).tolist()))
    got = read_wts(put(tmp_path, f"1\nx {v.size} {tokens}\n"), allow_nonfinite=True)
    np.testing.assert_array_equal(got["x"].view(np.uint32), v.view(np.uint32))
    # 7 digits among 8: a lost digit, not one of the tiny numbers an unpadded writer writes so (below 1.3e-29)
    assert read_wts(put(tmp_path, "1\nx 2 1234567 0\n"))["x"].view(np.uint32).tolist() == [0x1234567, 0]
    line = "1\nx 5 3f800000 bf000000 e224260 20aac8 0\n"  # an unpadded writer's 2e-30 beside its shorter values
    assert read_wts(put(tmp_path, line))["x"].view(np.uint32).tolist()[2] == 0xE224260
    with pytest.raises(WtsFormatError, match=r"w\.wts:2 \(key 'x'\): value 2 has 7 hex digits where the line's others "
                                             r"have 8: it would read as 1\.46e-36"):
        read_wts(put(tmp_path, "1\nx 3 bf800000 3f80000 00000000\n"))


def test_zero_tensors(tmp_path):
    assert read_wts(put(tmp_path, "0\n")) == {}
    assert wts_summary(put(tmp_path, "0"))["tensors"] == 0


def test_summary(tmp_path):
    p = put(tmp_path, "3\na 3 3f800000 00000000 c0000000\nb 0\nc 1 3f000000\n")
    s = wts_summary(p)
    assert s == {"path": p, "size_bytes": os.path.getsize(p), "tensors": 3, "values": 4,
                 "keys": [("a", 3), ("b", 0), ("c", 1)]}


def test_progress_flag(tmp_path):
    p = tmp_path / "p.wts"
    write_wts(p, {"a": np.ones(3)}, progress=True)
    assert list(read_wts(p, progress=True)) == ["a"]


# ---------------------------------------------------------------- malformed files

GOOD2 = "a 2 3f800000 00000000\n"


@pytest.mark.parametrize("text, line, key, parts", [
    ("", None, None, ["empty file"]),
    (" \n\r\n\t", None, None, ["empty file"]),
    ("abc\n" + GOOD2, 1, None, ["line 1 must be the tensor count", "'abc'"]),
    ('{"a": 1}\n', 1, None, ["tensor count", "this is not a .wts file: it looks like a JSON file"]),
    ("-1\n" + GOOD2, 1, None, ["tensor count", "'-1'"]),
    ("1.5\n" + GOOD2, 1, None, ["tensor count"]),
    ("\n1\n" + GOOD2, 1, None, ["tensor count"]),
    ("3\n" + GOOD2 + "b 1 3f800000\n", 3, None, ["declares 3 tensors but ends after 2 (the last, 'b', at line 3): a "
                                                 "copy cut short, or a count line larger than the number of tensors "
                                                 "written"]),
    ("3\n" + GOOD2 + "b 1 3f800000\n\n \n", 3, None, ["declares 3 tensors but ends after 2"]),
    ("2\n", 1, None, ["declares 2 tensors but ends after 0"]),
    ("1\n" + GOOD2 + "b 1 3f800000\n", 3, "b", ["more tensor lines than the 1 declared"]),
    ("1\n" + GOOD2 + "\n\nb 1 3f800000\n", 5, "b", ["more tensor lines"]),
    ("3\n" + GOOD2 + "\n\nb 1 3f800000\n\n", 5, None, ["declares 3 tensors but ends after 2", "line 5"]),
    ("2\n\n" + GOOD2 + " \t\n\r\nb x\n", 6, "b", ["must be a non-negative integer", "'x'"]),
    ("3\n\n" + GOOD2 + "\nb 2 3f800000\n", 5, "b", ["declares 2 values, found 1"]),
    ("2\n" + GOOD2 + "\n\na 1 3f800000\n", 5, "a", ["key 'a' at line 5 was already defined at line 2"]),
    ("1\na x2 3f800000\n", 2, "a", ["must be a non-negative integer", "'x2'"]),
    ("1\na\n", 2, "a", ["must be a non-negative integer", "found nothing"]),
    ("1\na -2 3f800000\n", 2, "a", ["non-negative integer"]),
    ("1\na 3 3f800000 00000000\n", 2, "a", ["declares 3 values, found 2"]),
    ("1\na 1 3f800000 00000000\n", 2, "a", ["declares 1 values, found 2"]),
    ("1\na 0 3f800000\n", 2, "a", ["declares 0 values, found 1"]),
    ("1\na 2\n", 2, "a", ["declares 2 values, found 0"]),
    ("2\na 3 3f800000 0 1\nb 9408 3f800000 3f80", 3, "b", ["declares 9408 values, found 2"]),  # cut
    ("1\na 3 3f800000 3f80000g 0\n", 2, "a", ["value 2 '3f80000g' is not hexadecimal"]),
    ("1\na 3 3f800000 00000000 0x3f8\n", 2, "a", ["value 3 '0x3f8' is not hexadecimal"]),
    ("1\na 2 3f800000,3f800000\n", 2, "a", ["value 1 '3f800000,3f800000' is not hexadecimal"]),
    ("1\na 2 3f800000 13f800000\n", 2, "a", ["value 2 '13f800000' has 9 hex digits, more than 8"]),
    ("1\na 2 3f8000000 3f80000\n", 2, "a", ["value 1", "more than 8"]),
    ("2\n" + GOOD2 + "a 1 3f800000\n", 3, "a", ["key 'a' at line 3 was already defined at line 2"]),
])
def test_malformed(tmp_path, text, line, key, parts):
    p = put(tmp_path, text, "bad_file.wts")
    with pytest.raises(WtsFormatError) as ei:
        read_wts(p)
    err = ei.value
    assert err.path == p and "bad_file.wts" in str(err)
    assert err.line == line and err.key == key, str(err)
    for part in parts:
        assert part in str(err), str(err)


def test_declared_vs_found_message(tmp_path):
    vals = " ".join(["3f800000"] * 9407)
    p = put(tmp_path, f"2\nbn 1 0\nconv1.weight 9408 {vals}\n", "r.wts")
    with pytest.raises(WtsFormatError, match=r"r\.wts:3 \(key 'conv1.weight'\): declares 9408 values, found 9407"):
        read_wts(p)


@pytest.mark.parametrize("data, line", [
    (b"PK\x03\x04\x14\x00\x00\x08\x08\x00\xff\xfe binary junk", 1),  # e.g. a torch .pt zip
    (b"\x89\xfe\x00\x01\n\x00\x00", 1),
    (b"\x7fELF\x02\x01\x01\x00\n", 1),
    (b"1\nconv\xe9 1 3f800000\n", 2),
    (b"1\nconv 1\xff 3f800000\n", 2),
    (b"1\nco\x00nv 1 3f800000\n", 2),
])
def test_not_text(tmp_path, data, line):
    with pytest.raises(WtsFormatError, match="not a text .wts file") as ei:
        read_wts(put(tmp_path, data))
    assert ei.value.line == line


def test_utf8_keys_read_as_tensorrtx_reads_them(tmp_path):
    """gen_wts.py writes a model's non-ASCII attribute names in UTF-8 (its locale's, or encoding="utf-8"), and
    tensorrtx's `input >> name` takes the bytes as they are: the key reads as text, not as a binary file."""
    torch = pytest.importorskip("torch")
    sd = {"model.0.conv.w\u00e9ight": torch.ones(2), "\u5377\u79ef.bias": torch.zeros(1)}
    p = tmp_path / "u.wts"
    gen_wts_py(p, sd)  # open(path, "w"): in the locale's encoding, UTF-8 on Linux
    p.write_bytes(p.read_text(encoding=None).encode("utf-8"))  # UTF-8 whatever this machine's locale
    got = read_wts(p)
    assert list(got) == list(sd) and got["model.0.conv.w\u00e9ight"].tolist() == [1.0, 1.0]
    assert wts_summary(p)["keys"] == [("model.0.conv.w\u00e9ight", 2), ("\u5377\u79ef.bias", 1)]
    with pytest.raises(WtsFormatError, match=r"u\.wts:2 \(key 'a\u00e9'\): the value count after the name must be"):
        read_wts(put(tmp_path, "1\na\u00e9 x\u00e9 3f800000\n".encode("utf-8"), "u.wts"))
    with pytest.raises(WtsFormatError, match=r"u\.wts:3 \(key 'b\u00e9'\): more tensor lines"):
        read_wts(put(tmp_path, "1\na 1 3f800000\nb\u00e9 1 3f800000\n".encode("utf-8"), "u.wts"))
    for bad in (b"1\nconv\xe9 1 3f800000\n", "1\nconv\u00a0x 1 3f800000\n".encode("utf-8")):  # latin-1, NBSP
        with pytest.raises(WtsFormatError, match="not a text .wts file"):
            read_wts(put(tmp_path, bad))


def test_non_ascii_value_is_reported_as_value(tmp_path):
    with pytest.raises(WtsFormatError, match=r"value 2 '3f8\\xe90000' is not hexadecimal"):
        read_wts(put(tmp_path, b"1\na 2 3f800000 3f8\xe90000\n"))


# ---------------------------------------------------------------- writer safety

class Exploding:
    def detach(self):
        raise RuntimeError("boom")


def leftovers(tmp_path, target="w.wts"):
    return sorted(n for n in os.listdir(tmp_path) if n != target)


def test_atomic_write_new_target(tmp_path):
    p = tmp_path / "w.wts"
    with pytest.raises(RuntimeError, match="boom"):
        write_wts(p, {"a": np.ones(1000), "b": Exploding()})
    assert not p.exists() and leftovers(tmp_path) == []


def test_atomic_write_keeps_existing_target(tmp_path, monkeypatch):
    p = tmp_path / "w.wts"
    write_wts(p, {"old": np.ones(3)})
    before = p.read_bytes()
    with pytest.raises(NetdefError, match="'b'"):
        write_wts(p, {"a": np.ones(10), "b": np.array(["x", "y"])})
    assert p.read_bytes() == before and leftovers(tmp_path) == []

    def failing_fsync(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_wts(p, {"a": np.ones(10)})
    assert p.read_bytes() == before and leftovers(tmp_path) == []


def test_a_write_that_cannot_fit_is_refused_before_it_starts(tmp_path, monkeypatch):
    """A .wts's size follows from its tensors, an engine's or plan's from its bytes: one larger than the free space
    of its folder's file system is refused before anything is written (it filled the disk to the last byte first,
    failing other programs' writes meanwhile), naming the folder, the bytes needed and those free."""
    import errno

    from netdef.fileio import atomic_write_all

    torch = pytest.importorskip("torch")
    tensors = {"conv.weight": torch.ones(4, 3, 3, 3), "conv.bias": np.zeros(4, np.float32), "empty": np.zeros(0)}
    write_wts(tmp_path / "real.wts", tensors)
    size = (tmp_path / "real.wts").stat().st_size
    (tmp_path / "w.wts").write_bytes(b"1\nold 0\n")
    real = os.statvfs(tmp_path)

    def free(n_blocks: int, size: int = real.f_blocks):  # the tests' file system with `n_blocks` free
        fields = list(real)
        fields[2], fields[3], fields[4] = size, n_blocks, n_blocks  # f_blocks, f_bfree (root's), f_bavail
        monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result(fields))

    block = real.f_frsize
    free(0)
    left = tmp_path / ".w.wts.netdef-k1ll3d00.tmp"  # what a killed export left (SIGKILL): hidden, and taking space
    left.write_bytes(b"2\n" * 1000)
    with pytest.raises(OSError, match=rf"write elsewhere \(a write of w\.wts that did not finish left "
                                      rf"{re.escape(str(left))}, 2,000 bytes: delete it unless netdef is writing "
                                      r"w\.wts now\)$"):
        write_wts(tmp_path / "w.wts", tensors)

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:  # a size not told beforehand (a list): the write itself finds the disk full
        m.setattr(os, "fsync", full_disk)
        with pytest.raises(OSError, match=r"w\.wts: No space left on device \(a write of w\.wts that did not finish "
                                          r"left .*k1ll3d00\.tmp, 2,000 bytes"):
            write_wts(tmp_path / "w.wts", {"x": [1.0, 2.0]})
    left.unlink()
    with pytest.raises(OSError, match=rf"cannot write .*w\.wts: not enough free space in {re.escape(str(tmp_path))}: "
                                      rf"{size:,} bytes needed, 0 free; free some space there or write elsewhere") as e:
        write_wts(tmp_path / "w.wts", tensors)
    assert e.value.errno == errno.ENOSPC and (tmp_path / "w.wts").read_bytes() == b"1\nold 0\n"
    with pytest.raises(OSError, match=r"cannot write .*a\.plan, .*a\.plan\.json: not enough free space in .*: "
                                      rf"{block + 3:,} bytes needed, 0 free"):
        atomic_write_all({tmp_path / "new" / "a.plan": [b"x" * block, b"y"], tmp_path / "new" / "a.plan.json": b"{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.wts", "w.wts"]  # no folder, no temporary file
    free(0, size=0)  # a file system that reports no size (FUSE without statfs): not checked
    write_wts(tmp_path / "w.wts", {"x": np.ones(1)})
    free(-(-size // block))  # room for it, in whole blocks
    write_wts(tmp_path / "w.wts", tensors)
    assert (tmp_path / "w.wts").read_bytes() == (tmp_path / "real.wts").read_bytes()


def test_write_replaces_and_keeps_mode(tmp_path):
    p = tmp_path / "w.wts"
    write_wts(p, {"a": np.ones(2)})
    os.chmod(p, 0o640)
    write_wts(p, {"b": np.zeros(1)})
    assert p.read_text() == "1\nb 1 00000000\n"
    assert os.stat(p).st_mode & 0o777 == 0o640 and leftovers(tmp_path) == []


@pytest.mark.parametrize("key", ["", "a b", "tab\tkey", "new\nline", "caf\u00e9", "nul\x00", 3])
def test_bad_keys_rejected(tmp_path, key):
    p = tmp_path / "w.wts"
    with pytest.raises(NetdefError, match=re.escape(repr(key))):
        write_wts(p, {"ok": np.ones(1), key: np.ones(1)})
    assert not p.exists() and leftovers(tmp_path) == []


def test_complex_rejected(tmp_path):
    with pytest.raises(NetdefError, match="'c'.*complex"):
        write_wts(tmp_path / "w.wts", {"c": np.ones(2, np.complex64)})


def test_general_path_windows_reach_into_the_header(tmp_path):
    """Short tokens right-aligned from the bytes before them (the line's name and count, or nothing)."""
    text = "2\nx 4 1 22 333 4444\na_long_tensor_name 5 BCDEF0 7\t00000001 FFFFFFFF  8\n"
    got = read_wts(put(tmp_path, text), allow_nonfinite=True)
    np.testing.assert_array_equal(got["x"].view(np.uint32), [0x1, 0x22, 0x333, 0x4444])
    np.testing.assert_array_equal(got["a_long_tensor_name"].view(np.uint32), [0xBCDEF0, 7, 1, 0xFFFFFFFF, 8])


@pytest.mark.parametrize("tokens", ["95e7 2e9b b112 3c00", "00003c00 0000bc00 00000000 00000001", "2 1 0 7"])
def test_a_tensor_of_another_encoding_is_refused(tmp_path, tokens):
    """float16 bit patterns ('>e', 4 hex digits) or decimal numbers read as float32 hex give nothing but subnormal
    numbers (below 1.2e-38): an engine of near-zero weights that show, build and verify passed. Such a tensor is
    refused; zeros, and tiny values beside normal ones, are not; allow_nonfinite takes the values as they are."""
    p = put(tmp_path, f"3\nok 2 3f800000 00000001\nzeros 2 0 00000000\nconv.weight 4 {tokens}\n", "h.wts")
    with pytest.raises(WtsFormatError, match=r"h\.wts:4 \(key 'conv.weight'\): every non-zero value of the 4 is below "
                                             r"float32's smallest normal number .*float16 \(4 hex digits, '>e'\) or "
                                             r"decimal numbers; export the weights again"):
        read_wts(p)
    assert read_wts(p, allow_nonfinite=True)["conv.weight"].size == 4


def test_write_wts_refuses_the_tensor_read_wts_would_refuse(tmp_path):
    """write_wts wrote a tensor of nothing but subnormal values, which read_wts then refused: export gave a file
    no build could read. It refuses it first (allow_nonfinite writes it as it is, and read_wts reads it so)."""
    tiny = np.array([1e-40, 0.0, -3e-41], np.float32)
    with pytest.raises(NetdefError, match=r"tensor 'w': every non-zero value of the 3 is below float32's smallest "
                                          r"normal number .*allow_nonfinite=True"):
        write_wts(tmp_path / "t.wts", {"w": tiny})
    assert not (tmp_path / "t.wts").exists()
    write_wts(tmp_path / "t.wts", {"w": tiny, "z": np.zeros(2)}, allow_nonfinite=True)
    assert read_wts(tmp_path / "t.wts", allow_nonfinite=True)["w"].tolist() == tiny.tolist()
    write_wts(tmp_path / "ok.wts", {"w": np.append(tiny, 1.0), "z": np.zeros(2)})  # beside a normal one, or zeros
    assert read_wts(tmp_path / "ok.wts")["w"].tolist() == [*tiny.tolist(), 1.0]


# ---------------------------------------------------------------- non-finite values

NONFINITE = [("7f800000", "inf"), ("ff800000", "-inf"), ("7fc00000", "nan"), ("FFC00001", "nan")]


@pytest.mark.parametrize("token, shown", NONFINITE)
@pytest.mark.parametrize("layout", ["3f800000 {} 00000000", "3f800000  {}\t0", "3f800000 {} 0"])  # fast, general
def test_nonfinite_values_refused(tmp_path, token, shown, layout):
    values = layout.format(token)
    p = put(tmp_path, f"2\nok 1 3f800000\nconv.weight 3 {values}\n", "n.wts")
    with pytest.raises(WtsFormatError, match=rf"n\.wts:3 \(key 'conv.weight'\): value 2 of 3 is {shown} "
                                             rf"\({token.lower()}\).*allow_nonfinite=True") as ei:
        read_wts(p)
    assert ei.value.key == "conv.weight" and ei.value.line == 3
    got = read_wts(p, allow_nonfinite=True)
    assert got["conv.weight"].view(np.uint32)[1] == int(token, 16)
    assert wts_summary(p)["values"] == 4  # the summary does not read values


@pytest.mark.parametrize("value, what", [
    (None, "tensor 'b' is None"),
    (np.array([1.0, None]), r"not numbers \(dtype object\)"),
    ([1, None], r"not numbers \(dtype object\)"),
    (np.array(["1.5", "2"]), r"not numbers \(dtype <U3\)"),
    ("3", "not numbers"),
    (np.array([1.0, np.nan]), "tensor 'b': value 2 of 2 is nan"),
    (np.array([[1.0], [-np.inf]], np.float32), "value 2 of 2 is -inf"),
    (np.array([np.inf], np.float16), "value 1 of 1 is inf"),
    (np.array([0.0, 1e39]), r"value 2 of 2 \(1e\+39\) is beyond float32's range"),
    (np.array([3, 16777217]), r"tensor 'b' \(int64\): value 2 \(16777217\) has no exact float32 \(16777216\)"),
])
def test_write_refuses_non_numbers_and_nonfinite(tmp_path, value, what):
    p = tmp_path / "w.wts"
    write_wts(p, {"old": np.ones(1)})
    before = p.read_bytes()
    with pytest.raises(NetdefError, match=f"cannot write {re.escape(str(p))}: .*{what}"):
        write_wts(p, {"a": np.ones(2), "b": value})
    assert p.read_bytes() == before and leftovers(tmp_path) == []


def test_write_nonfinite_when_allowed(tmp_path):
    p = tmp_path / "w.wts"
    write_wts(p, {"a": np.array([np.nan, np.inf, 1e39])}, allow_nonfinite=True)
    assert p.read_text() == "1\na 3 7fc00000 7f800000 7f800000\n"
    with pytest.raises(NetdefError, match="'a' is None"):
        write_wts(p, {"a": None}, allow_nonfinite=True)


# ---------------------------------------------------------------- paths that are not .wts files

def test_directory_and_missing_file(tmp_path):
    for fn in (read_wts, wts_summary):
        with pytest.raises(NetdefError, match=f"^{re.escape(str(tmp_path))}: is a directory, not a .wts file$"):
            fn(tmp_path)
        with pytest.raises(NetdefError, match="nope.wts: no such .wts file"):
            fn(tmp_path / "nope.wts")


def test_a_file_cut_inside_its_last_value_is_refused(tmp_path):
    """Unpadded C++ hex makes '4170' a valid value: a file without its final newline whose last value is shorter
    than the line's other 8-digit values was cut inside it, and is refused (copied whole, it reads)."""
    p = tmp_path / "w.wts"
    write_wts(p, {"a": np.float32([1, 2]), "dfl": np.arange(16, dtype=np.float32)})
    whole = p.read_bytes()
    p.write_bytes(whole[:-5])  # '... 41700000\n' -> '... 4170'
    with pytest.raises(WtsFormatError, match=r"w\.wts:3 \(key 'dfl'\): truncated: the file ends inside the last "
                                             r"value \('4170', 4 hex digits"):
        read_wts(p)
    p.write_bytes(whole[:-1])  # complete, only the final newline missing
    assert read_wts(p)["dfl"][15] == 15.0
    p.write_text("1\nb 3 3fc00000 c0000000 0")  # an unpadded writer's 0.0, no final newline: complete
    assert read_wts(p)["b"].tolist() == [1.5, -2.0, 0.0]


@pytest.mark.parametrize("layout", ["netdef", "cpp"])
def test_a_file_cut_inside_a_line_is_said_to_be_cut_short(tmp_path, layout):
    """A copy cut in the middle of a tensor's values was 'declares 294912 values, found 243380', where a cut at a
    line boundary says 'truncated: ... a copy cut short': the cut line, the last in the file, now says so too (its
    key, line and counts kept), in read_wts and in wts_summary (headers only), for netdef's layout and unpadded C++
    hex with tabs; a short last line ending in a newline with no tensor declared after it is a wrong count."""
    p = tmp_path / "w.wts"
    write_wts(p, {"a": np.float32([1, 2]), "conv.weight": np.arange(1, 301, dtype=np.float32),
                  "b": np.float32([3, 4, 5])})
    if layout == "cpp":  # 'key count\tv1 \tv2 ...' with unpadded hex
        count, *lines = p.read_text().splitlines()
        p.write_text(count + "\n" + "".join(
            f"{key} {n}\t" + " \t".join(f"{int(v, 16):x}" for v in values) + "\n"
            for key, n, *values in map(str.split, lines)))
    whole = p.read_bytes()
    middle = whole.index(b"\nb ") - len(whole.split(b"\n")[2]) // 3  # a third of the way into conv.weight's line
    for cut, line, key, n, tensor in [(whole[:middle], 3, "conv.weight", 300, 2),
                                      (whole[:middle] + b"\n\n", 3, "conv.weight", 300, 2),
                                      (whole[:middle - 1] + b" ", 3, "conv.weight", 300, 2),
                                      (whole[:-12], 4, "b", 3, 3)]:  # inside b's last line: its 2nd value
        p.write_bytes(cut)
        for read in (read_wts, wts_summary):
            with pytest.raises(WtsFormatError) as e:
                read(p)
            assert re.search(rf"w\.wts:{line} \(key '{key}'\): truncated: declares {n} values, found \d+ before the "
                             rf"file ends \(tensor {tensor} of the 3 declared on line 1\): a copy cut short; write or "
                             r"copy it again$", str(e.value)), str(e.value)
    p.write_bytes(whole.replace(b"b 3", b"b 4"))  # complete, the count wrong: not a cut
    with pytest.raises(WtsFormatError, match=r"w\.wts:4 \(key 'b'\): declares 4 values, found 3$"):
        read_wts(p)


def test_bytes_that_are_not_text_after_the_declared_tensors_are_named_as_such(tmp_path):
    """NUL padding after the last tensor (a damaged or padded copy) is no 'key' of raw NULs in the message."""
    for tail, line, shown in ((b"\0" * 64, 3, r"\x00" * 8), (b"\n\x7fELF\x02", 4, r"\x7fELF\x02")):
        with pytest.raises(WtsFormatError) as ei:
            read_wts(put(tmp_path, b"1\na 1 3f800000\n" + tail))
        err = ei.value
        assert err.line == line and err.key is None, str(err)
        assert "after the 1 tensors declared on line 1" in str(err) and shown in str(err), str(err)
        assert str(err).isprintable(), str(err)


def test_a_checkpoint_or_an_engine_given_as_weights_is_named(tmp_path):
    ckpt, engine = tmp_path / "best.pt", tmp_path / "y.engine"
    ckpt.write_bytes(b"PK\x03\x04" + bytes(100))
    engine.write_bytes(b"NETDEF-ENGINE\n" + bytes(100))
    with pytest.raises(WtsFormatError, match=r"not a text \.wts file: it looks like a zip file \(a PyTorch "
                                             r"checkpoint\?\)\): export a checkpoint's weights with `netdef export"):
        read_wts(ckpt)
    with pytest.raises(WtsFormatError, match=r"found 'NETDEF-ENGINE' \(a netdef engine, not weights\)"):
        read_wts(engine)
    arch = put(tmp_path, b"name: mynet\ninput: {name: x, shape: [3, 8, 8]}\n", "arch.yaml")
    with pytest.raises(WtsFormatError, match=r"found 'name: mynet' \(this is not a \.wts file: it looks like YAML "
                                             r"text, an architecture\?: give that as the architecture"):
        read_wts(arch)


def test_write_wts_never_writes_over_a_file_of_another_kind(tmp_path):
    """write_wts (public, as export is) refuses to replace an engine or a checkpoint, as export does; the file is
    kept as it was."""
    engine = tmp_path / "a.engine"
    engine.write_bytes(b"NETDEF-ENGINE\n" + bytes(100))
    with pytest.raises(OptionError, match=r"a\.engine exists and is not a \.wts file \(it looks like a netdef engine"):
        write_wts(engine, {"w": np.ones(2, np.float32)})
    assert engine.read_bytes() == b"NETDEF-ENGINE\n" + bytes(100)
    ckpt = tmp_path / "best.bin"
    ckpt.write_bytes(b"PK\x03\x04" + bytes(10))
    with pytest.raises(OptionError, match=r"best\.bin exists and is not a \.wts file"):
        write_wts(ckpt, {"w": np.ones(2, np.float32)})


@pytest.mark.parametrize("magic, what", [(b"\x1f\x8b\x08\x08", "gzip"), (b"\xfd7zXZ\x00", "xz"),
                                         (b"\x28\xb5\x2f\xfd", "zstd")])
def test_a_compressed_file_is_named_as_one(tmp_path, magic: bytes, what: str) -> None:
    """y.wts.gz or best.pt.gz as it came from a download: 'decompress it first', given as weights or as a checkpoint
    (not unpickled, not 'it starts with b...')."""
    from netdef.export import load_checkpoint

    path = put(tmp_path, magic + bytes(60), "y.wts.gz")
    with pytest.raises(WtsFormatError, match=rf"not a text \.wts file: it looks like an? {what}-compressed file "
                                             r"\(decompress it first\)"):
        read_wts(path)
    with pytest.raises(NetdefError, match=rf"y\.wts\.gz looks like an? {what}-compressed file \(decompress it first"):
        load_checkpoint(path)



def test_a_utf8_byte_order_mark_is_no_content(tmp_path):
    """A .wts an editor saved with a UTF-8 BOM reads as the same tensors, is recognised as a .wts, and an export
    may write over it; its line numbers are those of the file."""
    from netdef.fileio import check_output, recognised
    from netdef.wts import WTS_FILE

    p = tmp_path / "bom.wts"
    write_wts(p, {"a": np.float32([1.0, -2.0])})
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert read_wts(p)["a"].tolist() == [1.0, -2.0] and wts_summary(p)["tensors"] == 1
    assert recognised(p.read_bytes()[:64]) == "a .wts weights file"
    assert check_output(p, kind=WTS_FILE) == p
    with pytest.raises(WtsFormatError, match=r"bom\.wts:1: line 1 must be the tensor count, found 'x'$"):
        read_wts(put(tmp_path, b"\xef\xbb\xbfx\na 1 3f800000\n", "bom.wts"))
    with pytest.raises(WtsFormatError, match=r"bom\.wts:3 \(key 'a'\): declares 2 values, found 1"):
        read_wts(put(tmp_path, b"\xef\xbb\xbf1\n\na 2 3f800000\n", "bom.wts"))


@pytest.mark.parametrize("encoding, bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
                                           ("utf-16-le", b""), ("utf-16-be", b"")])
def test_a_utf16_file_is_named_so(tmp_path, encoding, bom):
    """PowerShell 5's `python gen_wts.py > y.wts` writes UTF-16: the error says so and how to re-save it."""
    p = put(tmp_path, bom + "2\r\na 1 3f800000\r\nb 1 3f800000\r\n".encode(encoding), "ps.wts")
    with pytest.raises(WtsFormatError, match=r"ps\.wts:1: the file is UTF-16 text .*re-save it as ASCII or UTF-8"
                                             r".*write it from Python \(`netdef export`, gen_wts\.py\)") as ei:
        read_wts(p)
    assert ei.value.line == 1 and "\\x00" not in str(ei.value)


def test_a_failed_write_removes_the_folders_it_made(tmp_path):
    """A folder that cannot be made (a name too long) after others were: those others are removed again."""
    from netdef.fileio import atomic_write

    with pytest.raises(OSError):
        atomic_write(tmp_path / "a" / "b" / ("x" * 300) / "f.bin", b"data")
    assert list(tmp_path.iterdir()) == []
