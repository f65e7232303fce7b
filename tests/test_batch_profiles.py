"""Engines with several optimization profiles: parsing, checks, a real build (CPU builder), profile choice."""
from __future__ import annotations

import pytest

from netdef.build import BuildOptions, build_engine, parse_profiles
from netdef.errors import NetdefError
from netdef.runtime import Engine

from helpers import run_cli


def test_parse_profiles():
    assert parse_profiles("8") == ((8, 8, 8), ())
    assert parse_profiles("1:8:32") == ((1, 8, 32), ())
    assert parse_profiles("1:1:8,9:64:256") == ((1, 64, 256), ((1, 1, 8), (9, 64, 256)))
    assert parse_profiles("1:1:8,4:16:16,9:256:256") == ((1, 256, 256), ((1, 1, 8), (4, 16, 16), (9, 256, 256)))
    # overlaps are fine: 2:2:3 lies inside 1:1:8, so 9 still follows without a gap
    assert parse_profiles("1:1:8,2:2:3,9:16:16")[1] == ((1, 1, 8), (2, 2, 3), (9, 16, 16))


@pytest.mark.parametrize("text, message", [
    ("1:1:8,10:64:256", "batches 9..9 are in no profile; start the next one at 9 or lower"),
    ("1:1:4,2:2:3,9:64:256", "batches 5..8 are in no profile"),
    ("9:64:256,1:1:8", "9:64:256,1:1:8: list the profiles by increasing min batch"),
    ("1:4:8,1:16:32", r"1:4:8,1:16:32: both start at batch 1; start the later one above it \(ranges may overlap\)"),
    ("1:1:8,x", "--profile '1:1:8,x': profile 'x': expected N or MIN:OPT:MAX with integers"),
    ("1:8:32,", "--profile '1:8:32,': profile '': expected"),  # said "--profile '': expected ...", not the value
])
def test_bad_profiles_are_named(text, message):
    with pytest.raises(NetdefError, match=message):
        parse_profiles(text, "--profile")


def test_options_check_each_profile_and_the_overall_range():
    BuildOptions(batch=(1, 64, 256), profiles=((1, 1, 8), (9, 64, 256))).validate()
    assert BuildOptions(profiles=((1, 1, 8), (9, 64, 256))).batch == (1, 64, 256)  # derived when left out
    with pytest.raises(NetdefError, match="batch profile 9:4:256 must satisfy"):
        BuildOptions(batch=(1, 4, 256), profiles=((1, 1, 8), (9, 4, 256))).validate()
    with pytest.raises(NetdefError, match=r"batch 1:8:8 must be the profiles' overall range 1:64:256"):
        BuildOptions(batch=(1, 8, 8), profiles=((1, 1, 8), (9, 64, 256))).validate()


def test_numpy_integers_are_batch_sizes_and_input_sizes():
    """Sizes computed with numpy (np.int64, a 1-D array) are ints in the options (the engine's header is JSON)."""
    import numpy as np

    opts = BuildOptions(batch=np.array([1, 4, 8]), input_hw=(np.int64(32), np.int32(48)))
    opts.validate()
    assert opts.batch == (1, 4, 8) and opts.input_hw == (32, 48)
    two = BuildOptions(profiles=[(np.int64(1), 2, 4), (5, np.int64(8), 8)])
    two.validate()
    assert two.profiles == ((1, 2, 4), (5, 8, 8)) and two.batch == (1, 8, 8)
    assert all(type(v) is int for v in (*opts.batch, *opts.input_hw, *two.profiles[0], *two.profiles[1]))


def test_two_profile_engine_builds_and_shows_its_profiles(torchvision_wts, tmp_path):
    _, wts = torchvision_wts("resnet18")
    out = tmp_path / "r18.engine"
    r = run_cli("build", "resnet18", "-w", str(wts), "-o", str(out), "--batch", "1:1:4,5:32:32", "--opt-level", "0")
    assert r.returncode == 0, r.stderr
    assert "batch 1:1:4,5:32:32" in r.stderr
    r = run_cli("info", str(out))
    assert "batch profiles 1:1:4,5:32:32" in r.stdout, r.stdout
    res = build_engine("resnet18", wts, tmp_path / "api.engine",
                       BuildOptions(profiles=((1, 1, 4), (5, 32, 32)), opt_level=0), log=lambda m: None)
    assert res.built and res.meta["options"]["profiles"] == [[1, 1, 4], [5, 32, 32]]
    assert res.meta["options"]["batch"] == [1, 32, 32]


def test_runtime_picks_the_profile_with_the_nearest_opt_batch():
    eng = Engine.__new__(Engine)  # the choice needs no GPU
    eng.path, eng.profiles = type("P", (), {"name": "x.engine"})(), [(1, 1, 8), (4, 16, 16), (9, 256, 256)]
    assert [eng.profile_for(b) for b in (1, 3, 5, 8, 12, 16, 100, 256)] == [0, 0, 1, 1, 1, 1, 2, 2]
    with pytest.raises(NetdefError, match="batch 300 is outside every profile"):
        eng.profile_for(300)
