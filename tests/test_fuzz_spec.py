"""Property-based fuzzing of the architecture YAML loader and the option parsers: random and mutated inputs
are accepted or refused with a NetdefError, never another exception, never a hang. Examples per test as in
tests/test_fuzz.py ($NETDEF_FUZZ_EXAMPLES, else 2,000; 50,000 with `-m slow`)."""
from __future__ import annotations

import pytest

from netdef.errors import NetdefError
from netdef.spec import load_spec

pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install -e .[test])")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz import ALARM_S, MUTATION, alarm, examples, fuzz, mutate, outcome  # noqa: E402,F401

TINY = b"""name: tiny
input: {name: x, shape: [3, 16, 16]}
output: y
nc: 4
scales:
  s: [0.33, 0.5]
layers:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 3, C3, [32, False]]
  - [[-1, 0], 1, Concat, [1]]
  - [-1, 1, ConvBnAct, {c2: nc, k: 1, bn: bn, act: leaky:0.2}, head]
"""
YAML_TOKENS = ["-", " ", "\n", "  ", "[", "]", "{", "}", ":", ",", "-1", "0", "1", "3", "nc", "anchors", "Conv",
               "C3", "Detect", "ConvBnAct", "input", "shape", "layers", "scales", "s", "null", "True", "'", '"',
               "&a", "*a", "!!python/object:os.system", "1e309", "-0", "0x10", "~"]
YAML_NOISE = st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map(lambda t: "".join(t).encode())
SPEC_CASES = st.one_of(
    st.binary(max_size=80),
    YAML_NOISE,
    st.lists(MUTATION, min_size=1, max_size=5).map(lambda m: mutate(TINY, m)),
)


def test_fuzz_spec_loader(tmp_path, examples):
    plain, scaled = tmp_path / "tiny.yaml", tmp_path / "fam5.yaml"

    @fuzz(examples)
    @given(SPEC_CASES)
    def prop(data):
        plain.write_bytes(data)
        scaled.write_bytes(data)
        with alarm(ALARM_S):
            outcome(lambda: load_spec(plain))
            outcome(lambda: load_spec(tmp_path / "fam5s.yaml"))  # the family file by a scaled name

    prop()


def test_the_unmutated_spec_loads(tmp_path):
    (tmp_path / "fam5.yaml").write_bytes(TINY)
    spec = load_spec(tmp_path / "fam5s.yaml")
    assert spec.scale == "s" and [r.block.name for r in spec.rows] == ["Conv", "C3", "Concat", "ConvBnAct"]


TEXT = st.one_of(st.text(max_size=24), st.lists(st.sampled_from(
    ["1", "8", "32", "0", "-1", ":", ",", "x", "X", " ", "1e3", "nan", "=", "a", "9" * 30, "\x00"]),
    max_size=12).map("".join))


def test_fuzz_option_parsers(examples):
    from netdef.build import BuildOptions
    from netdef.cli.build import parse_params
    from netdef.cli.options import parse_hw
    from netdef.options import parse_batch, parse_profiles
    from netdef.tools.bench import parse_batches
    from netdef.tools.timing import parse_budget

    parsers = [parse_profiles, parse_batch, parse_hw, parse_batches, parse_budget, lambda t: parse_params([t])]

    @fuzz(examples)
    @given(TEXT)
    def prop(text):
        for parse in parsers:
            got = outcome(lambda: parse(text))
            if parse is parse_profiles and got is not None:  # what parses makes options that validate or refuse
                batch, profiles = got
                outcome(lambda: BuildOptions(batch=batch, profiles=profiles).validate())

    prop()


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**33), st.floats(allow_nan=True), st.text(max_size=6),
                   st.tuples(st.integers(-2, 40), st.integers(-2, 40), st.integers(-2, 40)),
                   st.lists(st.integers(-2, 9), max_size=4))
FIELDS = ["precision", "batch", "profiles", "input_hw", "workspace_mib", "opt_level", "calibration", "int8_exclude",
          "params", "tf32", "fp32_rows", "input_range"]


def test_fuzz_build_options(examples):
    from netdef.build import BuildOptions

    @fuzz(examples)
    @given(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4))
    def prop(kw):
        try:
            BuildOptions(**kw).validate()
        except NetdefError:
            pass

    prop()
