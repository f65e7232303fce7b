"""Tests for netdef.engine_file: the header's plan length and checksum, field checks, damaged and cut files."""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from netdef import engine_file
from netdef.engine_file import MAGIC, is_engine_file, read_meta, read_plan, write_engine
from netdef.errors import EngineFileError, EngineMismatchError, NetdefError

PLAN = bytes(range(256)) * 1200  # 307,200 bytes, so that a 300,000-byte prefix cuts the plan


def complete_meta() -> dict:
    """Metadata with every field netdef's readers use, as netdef.build writes it."""
    return {
        "netdef_version": "0.1.0", "created": "2026-12-02T10:00:00+00:00",
        "tensorrt": {"flavor": "tensorrt", "version": "10.3.0", "strongly_typed": True},
        "gpu": {"name": "NVIDIA H200", "compute_capability": "9.0"}, "precision": "fp16",
        "options": {"batch": [1, 4, 8], "profiles": [], "opt_level": None, "extra": {}},
        "arch": {"name": "lenet", "path": "lenet.yaml", "sha256": "ab" * 32},
        "weights": {"path": "lenet.wts", "sha256": "cd" * 32},
        "inputs": [{"name": "input", "shape": [-1, 1, 28, 28], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [-1, 10], "dtype": "float32"}],
        "plugins": [{"name": "yolo_decode_nms", "library": "/cache/libnms.so",
                     "layers": [{"layer": "model.24", "conf_thres": 0.25, "iou_thres": 0.45}]}],
        "layers": 12, "build_seconds": 3.25, "build_key": "k",
    }


@pytest.fixture
def engine(tmp_path) -> Path:
    path = tmp_path / "lenet.engine"
    write_engine(path, PLAN, complete_meta())
    return path


def header_of(path: Path) -> tuple[dict, bytes]:
    """(header, plan bytes) of an engine file, read without checks."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[len(MAGIC):len(MAGIC) + 8])
    return json.loads(data[len(MAGIC) + 8:len(MAGIC) + 8 + n]), data[len(MAGIC) + 8 + n:]


def with_header(path: Path, header: dict | bytes, plan: bytes = PLAN, length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<Q", len(raw) if length is None else length) + raw + plan)
    return path


def damaged(path: Path, what: str, *, verify: bool = False) -> str:
    """Read `path`, expect the one-line damaged-engine error containing `what`; return the message."""
    with pytest.raises(EngineFileError) as ei:
        read_meta(path, verify=verify) if not verify else read_plan(path)
    message = str(ei.value)
    assert message.startswith(f"{path}: damaged netdef engine file (") and message.endswith("), rebuild it")
    assert what in message and "\n" not in message, message
    return message


# ---------------------------------------------------------------- round trip

def test_round_trip_records_length_and_checksum(engine):
    meta, plan = read_plan(engine)
    assert plan == PLAN
    assert meta["plan_bytes"] == len(PLAN) and meta["plan_sha256"] == hashlib.sha256(PLAN).hexdigest()
    assert meta["format"] == engine_file.FORMAT == 2
    assert read_meta(engine) == read_meta(engine, verify=True) == meta
    assert {k: v for k, v in meta.items() if k not in ("format", "plan_bytes", "plan_sha256", "header_sha256")} == \
        complete_meta()
    assert engine_file.profiles(meta) == [(1, 4, 8)]


def test_write_returns_what_read_gives(tmp_path):
    meta = complete_meta() | {"options": {"batch": (1, 2, 3), "profiles": ((1, 1, 2), (3, 3, 3))}}
    written = write_engine(tmp_path / "e.engine", memoryview(PLAN), meta)
    assert written == read_meta(tmp_path / "e.engine")
    assert engine_file.profiles(written) == [(1, 1, 2), (3, 3, 3)]


def test_undecodable_file_names_are_written_readably(tmp_path):
    """A .wts named with bytes that are no UTF-8 (Python holds them as lone surrogates) is recorded as \\xNN: the
    engine reads back (it was 'damaged' for ever before)."""
    import os

    name = os.fsdecode(b"w\xff.wts")
    meta = complete_meta() | {"weights": {"path": name, "sha256": "0" * 64}}
    write_engine(tmp_path / "e.engine", PLAN, meta)
    assert read_meta(tmp_path / "e.engine")["weights"]["path"] == "w\\xff.wts"


@pytest.mark.parametrize("key", engine_file.REQUIRED_KEYS[2:])  # plan_bytes and plan_sha256 come from the writer
def test_write_refuses_incomplete_metadata(tmp_path, key):
    meta = complete_meta()
    *parents, last = key.split(".")
    node = meta
    for part in parents:
        node = node[part]
    del node[last]
    with pytest.raises(ValueError, match=f"bad metadata \\(no '{key}'\\)"):
        write_engine(tmp_path / "e.engine", PLAN, meta)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- the damaged files

def test_cut_plan(engine, tmp_path):
    cut = tmp_path / "t.engine"
    cut.write_bytes(engine.read_bytes()[:300_000])  # head -c 300000 lenet.engine > t.engine
    assert is_engine_file(cut)
    damaged(cut, "the header says 307200: the file was cut short")
    damaged(cut, "cut short", verify=True)


def test_huge_header_length(engine, tmp_path):
    header, plan = header_of(engine)
    damaged(with_header(tmp_path / "h.engine", header, plan, length=2**62), "over the 16 MiB limit")
    damaged(with_header(tmp_path / "h.engine", header, plan, length=len(json.dumps(header)) + len(plan) + 1),
            "inside its")


def test_header_without_inputs(engine, tmp_path):
    header, plan = header_of(engine)
    del header["inputs"]
    damaged(with_header(tmp_path / "i.engine", header, plan), "no 'inputs'")


@pytest.mark.parametrize("size", [1, 10, len(MAGIC) - 1, len(MAGIC), len(MAGIC) + 7, len(MAGIC) + 8, len(MAGIC) + 20])
def test_cut_header(engine, tmp_path, size):
    cut = tmp_path / "c.engine"
    cut.write_bytes(engine.read_bytes()[:size])
    assert is_engine_file(cut)  # `netdef info` must not read it as a .wts
    damaged(cut, f"the file ends after {size} bytes")


def test_changed_plan_byte(engine):
    data = bytearray(engine.read_bytes())
    data[-1000] ^= 0x40
    engine.write_bytes(bytes(data))
    assert read_meta(engine)["plan_bytes"] == len(PLAN)  # same length: only the checksum tells
    damaged(engine, "the plan's SHA-256 is", verify=True)
    with pytest.raises(EngineFileError, match="SHA-256"):
        read_meta(engine, verify=True)


def test_extra_bytes(engine):
    engine.write_bytes(engine.read_bytes() + b"\0")
    damaged(engine, "extra bytes follow it")


# ---------------------------------------------------------------- other files

def test_not_an_engine(tmp_path):
    for data in (b"\0" * 64, b"3\na 1 3f800000\n", b"NETDEF-ENGINX\n" + b"\0" * 30):
        p = tmp_path / "x.bin"
        p.write_bytes(data)
        assert not is_engine_file(p)
        with pytest.raises(EngineFileError, match="is not a netdef engine"):
            read_meta(p)


def test_is_engine_file(tmp_path, engine):
    assert is_engine_file(engine)
    (tmp_path / "empty").write_bytes(b"")
    assert not is_engine_file(tmp_path / "empty")
    assert not is_engine_file(tmp_path / "missing")
    assert not is_engine_file(tmp_path)


def test_plan_magics_are_trt_apis_alone(monkeypatch):
    """A file's first bytes name a plan of each flavour trt_api knows (trt_api.PLAN_MAGICS, the one place that
    knows how TensorRT's flavours and versions differ): a magic added there is recognised, one taken out is not."""
    from netdef import fileio, trt_api

    for magic, flavor in trt_api.PLAN_MAGICS.items():
        assert fileio.recognised(magic + b"\0" * 12) == f"a {flavor} plan"
    monkeypatch.setattr(trt_api, "PLAN_MAGICS", {b"xtrt": "TensorRT-X"})
    assert fileio.recognised(b"xtrt" + b"\0" * 12) == "a TensorRT-X plan"
    assert fileio.recognised(b"ftrt" + b"\0" * 12) is None


def test_missing_engine(tmp_path):
    for fn in (read_meta, read_plan):
        with pytest.raises(EngineFileError, match="engine not found"):
            fn(tmp_path / "none.engine")


def test_older_and_newer_formats(engine, tmp_path):
    header, plan = header_of(engine)
    old = {k: v for k, v in header.items() if k not in ("plan_bytes", "plan_sha256")} | {"format": 1}
    with pytest.raises(EngineFileError, match="format 1 .*no plan length or checksum.*rebuild it"):
        read_meta(with_header(tmp_path / "old.engine", old, plan))
    with pytest.raises(EngineFileError, match="format 3 is newer than this netdef's 2"):
        read_meta(with_header(tmp_path / "new.engine", header | {"format": 3}, plan))
    for bad in ("2", 2.0, True, None):
        damaged(with_header(tmp_path / "f.engine", header | {"format": bad}, plan), "format")


@pytest.mark.parametrize("raw, what", [
    (b"{not json", "the header is not JSON"),
    (b"\xff\xfe{}", "the header is not JSON"),
    (b"[1, 2]", "the header is a list, not an object"),
    (b"[" * 100_000 + b"]" * 100_000, "the header is not JSON"),
    (b'{"format": 2, "plan_bytes": ' + b"9" * 5000 + b"}", "5000-digit number"),
    (b'{"format": 2, "created": "\\udc80"}', "the header is not JSON"),
])
def test_header_not_an_object(tmp_path, raw, what):
    damaged(with_header(tmp_path / "j.engine", raw), what)


# ---------------------------------------------------------------- every field

def _set(meta: dict, key: str, value) -> dict:
    *parents, last = key.split(".")
    node = meta
    for part in parents:
        node = node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return meta


@pytest.mark.parametrize("key, value, what", [
    *[(k, KeyError, f"no '{k}'") for k in engine_file.REQUIRED_KEYS],
    ("tensorrt", "10.3", "'tensorrt' is not an object"),
    ("options", [], "'options' is not an object"),
    ("tensorrt.version", 10, "'tensorrt.version' is 10, expected a string"),
    ("gpu.compute_capability", 9.0, "expected a string or null"),
    ("gpu.name", ["H200"], "'gpu.name' is [\"H200\"]"),
    ("precision", "fp64", "expected fp32, fp16 or int8"),
    ("options.batch", [1, 8], "'options.batch' is [1, 8], expected [min, opt, max]"),
    ("options.batch", [8, 4, 1], "1 <= min <= opt <= max"),
    ("options.batch", [0, 1, 1], "options.batch"),
    ("options.batch", [1, 1, 2**31], "options.batch"),
    ("options.batch", [1, True, 2], "options.batch"),
    ("options.profiles", [[1, 2]], "'options.profiles'"),
    ("options.profiles", "1:2:3", "'options.profiles'"),
    ("arch.name", None, "'arch.name' is null"),
    ("inputs", {}, "'inputs' is {}, expected a list of {name, shape, dtype}"),
    ("inputs", [{"name": "x", "shape": [1, 2]}], "'inputs'"),
    ("outputs", [{"name": "y", "shape": [1, -2], "dtype": "float32"}], "'outputs'"),
    ("outputs", [{"name": "y", "shape": [1] * 9, "dtype": "float32"}], "'outputs'"),
    ("outputs", [{"name": "y", "shape": "1,2", "dtype": "float32"}], "'outputs'"),
    ("weights.sha256", 5, "'weights.sha256'"),
    ("plugins", [{"name": "p"}], "'plugins'"),
    ("plugins", [{"library": "l", "layers": [{"conf_thres": 0.5}]}], "'plugins'"),
    ("plugins", [{"library": "l", "layers": "x"}], "'plugins'"),
    ("layers", -1, "'layers' is -1"),
    ("layers", 1.5, "'layers'"),
    ("created", 20261202, "'created'"),
    ("build_seconds", -1, "'build_seconds'"),
    ("build_seconds", float("nan"), "'build_seconds' is NaN"),
    ("build_seconds", "1 s", "'build_seconds'"),
    ("plan_bytes", -5, "'plan_bytes'"),
    ("plan_sha256", "AB" * 32, "'plan_sha256'"),
    ("inputs", "x" * 100, "'inputs' is \"" + "x" * 36 + "..., expected"),
])
def test_fields_are_checked(engine, tmp_path, key, value, what):
    header, plan = header_of(engine)
    damaged(with_header(tmp_path / "m.engine", _set(header, key, value), plan), what)
    problem = engine_file.meta_problem(_set(header_of(engine)[0], key, value))
    with pytest.raises(EngineFileError, match="damaged netdef engine file"):
        engine_file.validate_meta(_set(header_of(engine)[0], key, value), "m.engine")
    assert problem and what.replace("\\", "") in problem


def test_optional_and_extra_fields(engine, tmp_path):
    header, plan = header_of(engine)
    del header["header_sha256"]  # an older netdef's engine: no header checksum, optional fields missing
    for key in ("gpu.name", "options.profiles", "netdef_version", "build_key", "tensorrt.strongly_typed"):
        _set(header, key, KeyError)
    header |= {"route": "onnx", "calibration_points": {"conv1": "conv"}}
    header["gpu"]["compute_capability"] = None  # TensorRT-RTX built for no particular GPU
    header["plugins"] = [{"library": "/x.so"}]
    assert read_meta(with_header(tmp_path / "o.engine", header, plan))["route"] == "onnx"


def test_check_compatible_on_a_read_header(engine):
    meta = read_meta(engine)
    said = []
    engine_file.check_compatible(meta, engine, "10.3.0", "tensorrt", ("NVIDIA H200", "9.0"), said.append)
    assert said == []
    # another GPU model of the same compute capability (built on an H200): it loads, with one warning
    engine_file.check_compatible(meta, engine, "10.3.0", "tensorrt", ("NVIDIA H100", "9.0"), said.append)
    assert len(said) == 1 and "was built on NVIDIA H200, this GPU is NVIDIA H100 (the same compute capability" \
        in said[0]
    with pytest.raises(EngineMismatchError, match="built with tensorrt 10.3.0"):
        engine_file.check_compatible(meta, engine, "10.4.0", "tensorrt", None)
    assert issubclass(EngineFileError, NetdefError)


@pytest.mark.parametrize("key, value", [("options.input_hw", [224]), ("options.input_hw", [0, 224]),
                                        ("arch.path", 3), ("arch.sha256", []), ("build_key", None),
                                        ("structure", 1)])
def test_optional_fields_are_checked_when_present(engine, tmp_path, key, value):
    header, plan = header_of(engine)
    damaged(with_header(tmp_path / "m.engine", _set(header, key, value), plan), f"'{key}' is")


DETECT_3 = {"task": "detect", "nc": 3, "head": "decode"}


@pytest.mark.parametrize("names, model, what", [
    ([], None, "'names' is [], expected a non-empty list of class names"),
    ("cat", None, "'names' is \"cat\""),
    (["cat", 3], None, "'names' is [\"cat\", 3]"),
    (["cat", ""], None, "'names' is [\"cat\", \"\"]"),
    (["cat", "dog"], DETECT_3, "'names' holds 2 class names, 'model' records 3 classes"),
])
def test_class_names_are_checked_when_present(engine, tmp_path, names, model, what):
    """The optional "names" (netdef build records the checkpoint's class names): strings, one per recorded class;
    engines without it read as before (every other test's engine)."""
    header, plan = header_of(engine)
    header |= {"names": names} | ({"model": model} if model else {})
    damaged(with_header(tmp_path / "m.engine", header, plan), what)
    with pytest.raises(ValueError, match="bad metadata"):  # netdef never writes such a header
        write_engine(tmp_path / "w.engine", plan, complete_meta() | {"names": names} | ({"model": model} if model
                                                                                          else {}))
    good = write_engine(tmp_path / "g.engine", plan, complete_meta() | {"names": ["cat", "dog", "fox"],
                                                                         "model": DETECT_3})
    assert read_meta(tmp_path / "g.engine")["names"] == good["names"] == ["cat", "dog", "fox"]


def test_a_changed_value_in_the_header_is_damage(engine, tmp_path):
    """The plan's checksum does not cover the header: a flipped digit in an input shape (a valid header still) was
    read as the engine's shape, shown by `netdef info` and written into a Triton config.pbtxt. The header records its
    own SHA-256 (an older netdef's engine, without it, still reads)."""
    data = engine.read_bytes()
    assert b'"shape": [\n    -1,\n    1,\n    28,' in data
    flipped = tmp_path / "flipped.engine"
    flipped.write_bytes(data.replace(b'"shape": [\n    -1,\n    1,\n    28,', b'"shape": [\n    -1,\n    1,\n    38,'))
    damaged(flipped, "the header's SHA-256 is not the one it records: a value in it was changed")
    header, plan = header_of(engine)
    assert read_meta(engine) == header and len(header["header_sha256"]) == 64
    header["inputs"][0]["shape"][2] = 38
    damaged(with_header(tmp_path / "edited.engine", header, plan), "the header's SHA-256 is not the one it records")
    del header["header_sha256"]
    assert read_meta(with_header(tmp_path / "old.engine", header, plan))["inputs"][0]["shape"][2] == 38


def test_a_changed_value_in_a_sidecar_is_refused(tmp_path):
    """A raw plan's sidecar had no checksum of its own: a digit edited in a shape was used by `netdef info` and
    written into a Triton config.pbtxt. It records the SHA-256 of its own fields (not the engine header's: its fields
    differ) as an engine header does; one of an older netdef, without it, still reads; the same engine still gives
    the same bytes."""
    from helpers import run_cli
    from netdef.deploy.plan import export_plan, read_sidecar, sidecar_path

    engine, plan = tmp_path / "e.engine", tmp_path / "e.plan"
    write_engine(engine, b"ftrt" + PLAN, complete_meta() | {"plugins": []})  # a plan's first bytes; no plugin
    side = sidecar_path(plan)
    written = export_plan(engine, plan)
    text = side.read_bytes()
    assert export_plan(engine, plan) == written and side.read_bytes() == text
    assert read_sidecar(side) == written and written["header_sha256"] not in (None, read_meta(engine)["header_sha256"])
    doc = json.loads(text)
    doc["inputs"][0]["shape"][2] = 29
    side.write_text(json.dumps(doc, indent=1, sort_keys=True))
    with pytest.raises(EngineFileError, match=r"e\.plan\.json: not a usable netdef sidecar \(its SHA-256 is not the "
                                              r"one it records: a value in it was changed\): export the plan again"):
        read_sidecar(side)
    for args in (["info", str(plan)], ["triton", str(plan), "--repo", str(tmp_path / "models")]):
        res = run_cli(*args)
        assert res.returncode == 1 and "a value in it was changed" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "models").exists()
    del doc["header_sha256"]  # an older netdef's sidecar: read as before
    side.write_text(json.dumps(doc, indent=1, sort_keys=True))
    assert read_sidecar(side)["inputs"][0]["shape"] == [-1, 1, 29, 28]
