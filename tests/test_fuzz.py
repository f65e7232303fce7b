"""Property-based fuzzing of netdef's two file readers: `.wts` files (read_wts, wts_summary) and engine
files (is_engine_file, read_meta, read_plan).

Random and mutated inputs must be read or refused with a NetdefError: any other exception fails, and so
does an example slower than the deadline (or hanging: an alarm stops it). Unmutated files must read back
exactly. Examples per test: $NETDEF_FUZZ_EXAMPLES, else 2,000 (20-25 s for the whole file on two
cores); `pytest -m slow tests/test_fuzz.py` runs 50,000 per test.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import struct
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from netdef import engine_file
from netdef.errors import EngineFileError, EngineMismatchError, NetdefError
from netdef.wts import only_subnormal, read_wts, wts_summary
from test_engine_file import complete_meta

pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install -e .[test])")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DEFAULT_EXAMPLES, SLOW_EXAMPLES = 2_000, 50_000  # CI: at least a couple of thousand examples per target
DEADLINE_S, ALARM_S = 1.0, 20


@pytest.fixture(params=[pytest.param("default"), pytest.param("slow", marks=pytest.mark.slow)])
def examples(request) -> int:
    """Examples for one fuzz test: the `slow` copy runs only when selected (`-m slow`)."""
    if os.environ.get("NETDEF_FUZZ_EXAMPLES"):
        if request.param == "slow":
            pytest.skip("NETDEF_FUZZ_EXAMPLES sets the count of the default run")
        return int(os.environ["NETDEF_FUZZ_EXAMPLES"])
    if request.param == "slow":
        if (request.config.getoption("markexpr") or "").strip() != "slow":
            pytest.skip("the long fuzz run: select it with -m slow")
        return SLOW_EXAMPLES
    return DEFAULT_EXAMPLES


def fuzz(examples: int):
    """Hypothesis settings for a fuzz property: no example database, a per-example deadline."""
    return settings(max_examples=examples, deadline=timedelta(seconds=DEADLINE_S), database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


@contextlib.contextmanager
def alarm(seconds: int):
    """Fail an example that hangs (the deadline only judges examples that finish)."""
    if not hasattr(signal, "SIGALRM"):  # Windows: the deadline alone
        yield
        return

    def stop(signum, frame):
        raise TimeoutError(f"example still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def outcome(call):
    """call()'s result, or None when it raised a NetdefError (anything else propagates)."""
    try:
        return call()
    except NetdefError:
        return None


# ---------------------------------------------------------------- mutations

BYTES_OF_INTEREST = list(b"0123456789abcdefABCDEFxg-+. \t\r\n\v\f\x00\x7f\x80\xff{}[]\":,")
MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete", "replace", "truncate", "duplicate"]),
                     st.floats(0, 1, exclude_max=True),
                     st.one_of(st.sampled_from(BYTES_OF_INTEREST), st.integers(0, 255)))


def mutate(data: bytes, mutations: list[tuple[str, float, int]]) -> bytes:
    """Apply byte-level edits at relative positions (flip a bit, insert, delete, replace, cut, repeat a span)."""
    buf = bytearray(data)
    for kind, where, byte in mutations:
        i = int(where * (len(buf) + 1))
        if kind == "insert":
            buf[i:i] = bytes([byte])
        elif kind == "truncate":
            del buf[i:]
        elif i >= len(buf):
            continue
        elif kind == "flip":
            buf[i] ^= 1 << (byte % 8)
        elif kind == "delete":
            del buf[i]
        elif kind == "replace":
            buf[i] = byte
        else:
            buf[i:i] = buf[i:i + 1 + byte % 16]
    return bytes(buf)


# ---------------------------------------------------------------- .wts files

NAMES = st.text("abcxyz_.0123456789ABC", min_size=1, max_size=10)
BITS = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                                                                0x3F800000, 1, 0xF, 0xFFFFFFFF]))
SEPARATORS = st.sampled_from([" ", " ", " ", "  ", "\t", " \t"])


@st.composite
def wts_files(draw) -> tuple[bytes, dict[str, np.ndarray]]:
    """A .wts file in a random writer's layout (padding, case, separators, line ends) and its tensors."""
    tensors = draw(st.dictionaries(NAMES, st.lists(BITS, max_size=12), max_size=5))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    lines = [draw(st.sampled_from(["", " "])) + str(len(tensors)) + eol]
    for name, values in tensors.items():
        fmt, sep, end = draw(st.tuples(st.sampled_from(["%08x", "%08X", "%x", "%X"]), SEPARATORS,
                                       st.sampled_from(["", " ", "\t"])))
        if "8" not in fmt:  # no writer leaves 7 digits of a number (below 1.3e-29): the reader calls that a lost digit
            values[:] = [v >> 4 if 0x1000000 <= v < 0x10000000 else v for v in values]
        lines.append(sep.join([name, str(len(values)), *(fmt % v for v in values)]) + end + eol)
    text = "".join(lines) + draw(st.sampled_from(["", "\n", " \n\n"]))
    return text.encode(), {k: np.array(v, np.uint32) for k, v in tensors.items()}


WTS_NOISE = st.lists(st.sampled_from(["0", "1", "2", "3f800000", "7fc00000", "a", "x", " ", "  ", "\t", "\n",
                                      "\r\n", "-1", "\x00", "\xff", "w.b"]), max_size=40).map(
    lambda parts: "".join(parts).encode("latin-1"))


def check_wts(path: Path, data: bytes, expected: dict[str, np.ndarray] | None) -> None:
    path.write_bytes(data)
    with alarm(ALARM_S):
        allowed = outcome(lambda: read_wts(path, allow_nonfinite=True))
        checked = outcome(lambda: read_wts(path))
        summary = outcome(lambda: wts_summary(path))
    if allowed is not None:  # what the reader accepts has the shape it promises
        assert summary is not None and summary["keys"] == [(k, v.size) for k, v in allowed.items()]
        assert all(v.dtype == np.float32 and v.ndim == 1 for v in allowed.values())
        finite = all(np.isfinite(v).all() for v in allowed.values())
        weights = not any(only_subnormal(v) for v in allowed.values())
        assert (checked is not None) == (finite and weights)
    else:
        assert checked is None
    if expected is not None:
        assert allowed is not None and list(allowed) == list(expected)
        for k, v in expected.items():
            np.testing.assert_array_equal(allowed[k].view(np.uint32), v)


def _mutated_wts(case: tuple[tuple[bytes, dict[str, np.ndarray]], list]) -> tuple[bytes, dict | None]:
    (data, tensors), mutations = case
    mutated = mutate(data, mutations)
    return mutated, tensors if mutated == data else None


WTS_CASES = st.one_of(  # (file bytes, the tensors it holds when known): one kind drawn per example
    st.binary(max_size=64).map(lambda raw: (raw, None)),  # random bytes
    WTS_NOISE.map(lambda raw: (raw, None)),  # tokens of the format in random order
    wts_files(),  # valid files
    *[st.tuples(wts_files(), st.lists(MUTATION, min_size=1, max_size=4)).map(_mutated_wts)] * 3,
)


def test_fuzz_wts(tmp_path, examples):
    path = tmp_path / "f.wts"

    @fuzz(examples)
    @given(WTS_CASES)
    def prop(case):
        check_wts(path, *case)

    prop()


# ---------------------------------------------------------------- engine files

PLAN = bytes(range(97))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=8)
    | st.builds(list) | st.builds(dict),
    lambda inner: st.lists(inner, min_size=1, max_size=4) | st.dictionaries(st.text(max_size=6), inner, min_size=1,
                                                                            max_size=4),
    max_leaves=8)


def leaf_paths(obj, prefix=()) -> list[tuple]:
    """Every key path of a JSON value (dict keys and list indices), parents before children."""
    paths = [prefix] if prefix else []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items:
        paths += leaf_paths(v, prefix + (k,))
    return paths


@st.composite
def edited_headers(draw) -> bytes:
    """A complete engine file whose JSON header had 1-3 values deleted, replaced or added; length prefix,
    plan length and plan bytes sometimes wrong too."""
    header = json.loads(json.dumps(complete_meta() | {"format": engine_file.FORMAT, "plan_bytes": len(PLAN),
                                                       "plan_sha256": hashlib.sha256(PLAN).hexdigest()}))
    for _ in range(draw(st.integers(1, 3))):
        paths = leaf_paths(header)
        *parent_path, key = draw(st.sampled_from(paths))
        parent = header
        for k in parent_path:
            parent = parent[k]
        action = draw(st.sampled_from(["delete", "replace", "replace", "add"]))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(JSON_VALUES)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(JSON_VALUES)
    raw = json.dumps(header).encode()
    length = draw(st.sampled_from([len(raw)] * 6 + [0, len(raw) - 1, len(raw) + 1, 2**63, 2**64 - 1]))
    plan = draw(st.sampled_from([PLAN, PLAN[:-1], PLAN + b"\0", b"", bytes(97)]))
    return engine_file.MAGIC + struct.pack("<Q", length) + raw + plan


def check_engine(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    with alarm(ALARM_S):
        assert engine_file.is_engine_file(path) in (True, False)
        plain = outcome(lambda: engine_file.read_meta(path))
        verified = outcome(lambda: engine_file.read_meta(path, verify=True))
        loaded = outcome(lambda: engine_file.read_plan(path))
    if plain is None:
        assert verified is None and loaded is None
    if verified is not None:
        assert loaded is not None and loaded[0] == verified == plain
    for meta in (plain, verified, loaded and loaded[0]):
        if meta:  # what the reader accepts, every reader of the header can use
            assert engine_file.meta_problem(meta) is None
            assert engine_file.profiles(meta)
            assert [io["name"] + io["dtype"] + str(io["shape"]) for io in meta["inputs"] + meta["outputs"]] is not None
            with contextlib.suppress(EngineMismatchError):
                engine_file.check_compatible(meta, path, "10.3.0", "tensorrt", ("NVIDIA H200", "9.0"))
    if loaded is not None:
        assert hashlib.sha256(loaded[1]).hexdigest() == loaded[0]["plan_sha256"]


@pytest.fixture(scope="module")
def engine_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("engine") / "e.engine"
    engine_file.write_engine(path, PLAN, complete_meta())
    return path.read_bytes()


def test_fuzz_engine_header(tmp_path, engine_bytes, examples):
    path = tmp_path / "f.engine"
    head = len(engine_file.MAGIC) + 8
    cases = st.one_of(  # one kind drawn per example
        st.binary(max_size=64),  # random bytes
        st.binary(max_size=64).map(lambda raw: engine_file.MAGIC + raw),  # random bytes after the magic
        st.binary(min_size=8, max_size=8).map(lambda n: engine_file.MAGIC + n + engine_bytes[head:]),  # length
        *[st.lists(MUTATION, min_size=1, max_size=4).map(lambda m: mutate(engine_bytes, m))] * 2,  # byte edits
        *[edited_headers()] * 3,  # JSON edits
    )

    @fuzz(examples)
    @given(cases)
    def prop(data):
        check_engine(path, data)

    prop()


def test_fuzz_engine_plan_changes_are_detected(tmp_path, engine_bytes):
    path = tmp_path / "p.engine"
    check_engine(path, engine_bytes)
    assert engine_file.read_plan(path)[1] == PLAN

    @fuzz(300)
    @given(st.integers(1, len(PLAN)), st.integers(1, 255))
    def prop(back, xor):
        data = bytearray(engine_bytes)
        data[-back] ^= xor
        path.write_bytes(bytes(data))
        assert engine_file.read_meta(path)["plan_bytes"] == len(PLAN)
        for call in (lambda: engine_file.read_meta(path, verify=True), lambda: engine_file.read_plan(path)):
            with pytest.raises(EngineFileError, match="SHA-256"):
                call()

    prop()
