"""No command overwrites one of its own inputs, and a bad output location is refused before any work starts."""
from __future__ import annotations

import os

import numpy as np
import pytest

from netdef import engine_file

from netdef.build import BuildOptions, build_engine
from netdef.errors import OptionError
from netdef.fileio import check_output
from netdef.wts import write_wts

from helpers import run_cli


@pytest.fixture
def lenet_wts(tmp_path):
    torch = pytest.importorskip("torch")
    from netdef.examples.digits import LeNet

    torch.manual_seed(0)
    path = tmp_path / "lenet.wts"
    write_wts(path, LeNet().state_dict())
    return path


def test_build_refuses_to_overwrite_its_weights(lenet_wts):
    before = lenet_wts.read_bytes()
    logs: list[str] = []
    with pytest.raises(OptionError, match="is also an input of this command"):
        build_engine("lenet", lenet_wts, lenet_wts, BuildOptions(), log=logs.append)
    assert lenet_wts.read_bytes() == before and logs == []  # refused before reading anything
    r = run_cli("build", "lenet", "-w", str(lenet_wts), "-o", str(lenet_wts.parent / "." / lenet_wts.name))
    assert r.returncode == 1 and "is also an input" in r.stderr and lenet_wts.read_bytes() == before


def test_export_refuses_to_overwrite_its_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"a.weight": torch.ones(3)}, ckpt)
    before = ckpt.read_bytes()
    r = run_cli("export", str(ckpt), "-o", str(ckpt))
    assert r.returncode == 1 and "is also an input" in r.stderr and ckpt.read_bytes() == before


@pytest.mark.parametrize("make, needle", [
    (lambda d, w: d, "is a directory"),
    (lambda d, w: w / "x.engine", "is a file, not a folder"),
    (lambda d, w: w.parent / "new" / "deeper" / "x.engine", None),  # missing folders are made: fine
])
def test_output_location_is_checked_first(lenet_wts, tmp_path, make, needle):
    out = make(tmp_path, lenet_wts)
    if needle is None:
        assert check_output(out) == out
        return
    logs: list[str] = []
    with pytest.raises(OptionError, match=needle):
        build_engine("lenet", lenet_wts, out, BuildOptions(), log=logs.append)
    assert logs == []


def test_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    with pytest.raises(OptionError, match=f"no permission to write in {ro}"):
        check_output(ro / "x.engine")
    # a read-only mount refuses root too: "no permission" misled there (seen on a tmpfs remounted ro)
    fields = list(os.statvfs(tmp_path))
    fields[8] |= os.ST_RDONLY  # f_flag
    monkeypatch.setattr(os, "statvfs", lambda p: os.statvfs_result(fields))
    with pytest.raises(OptionError, match=f"x.engine: {ro} is on a read-only file system: give a path on a writable "
                                          "one"):
        check_output(ro / "x.engine")


def test_refit_and_calibrate_refuse_their_inputs(lenet_wts, tmp_path):
    from netdef.int8.calibrate import calibrate_torch
    from netdef.refit import refit_file

    with pytest.raises(OptionError, match="is also an input"):
        refit_file(tmp_path / "e.engine", lenet_wts, output=lenet_wts)
    engine = tmp_path / "e.engine"
    engine.write_bytes(engine_file.MAGIC + b"rest of a header")
    with pytest.raises(OptionError, match=rf"^--weights {engine} is a netdef engine, not a \.wts file"):
        refit_file(engine, engine)
    with pytest.raises(OptionError, match="is also an input"):
        calibrate_torch(None, "lenet", lenet_wts, [np.zeros((1, 1, 16, 16), np.float32)], lenet_wts)
