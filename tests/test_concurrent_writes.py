"""Another process replacing a .wts while netdef works with it (a `netdef export` to the same path, a training loop
writing `latest.wts`): an engine never records one file's SHA-256 while holding another file's weights, and the
class names `export` writes never name weights they do not belong to."""
from __future__ import annotations

import json
import os

import pytest

from netdef import build as build_module
from netdef import export as export_module
from netdef.build import BuildOptions, build_engine
from netdef.class_names import names_sidecar
from netdef.errors import NetdefError
from netdef.examples.digits import LeNet
from netdef.export import export_wts
from netdef.fileio import file_sha256
from netdef.wts import write_wts

from helpers import lenet_weights


def _lenet_wts(path, seed):
    write_wts(path, lenet_weights(seed))
    return path


def test_build_refuses_weights_replaced_after_they_were_hashed(tmp_path, monkeypatch):
    w = _lenet_wts(tmp_path / "w.wts", 1)
    other = _lenet_wts(tmp_path / "other.wts", 2)
    hashed = file_sha256(w)
    real = build_module.exported_names

    def replaced_meanwhile(weights, sha, log):  # runs between the hash and the read: another export lands then
        os.replace(other, w)
        return real(weights, sha, log)

    monkeypatch.setattr(build_module, "exported_names", replaced_meanwhile)
    with pytest.raises(NetdefError, match="changed while netdef was reading it"):
        build_engine("lenet", w, tmp_path / "w.engine", BuildOptions(), log=lambda m: None)
    assert not (tmp_path / "w.engine").exists()  # not an engine of the new weights recording the old ones' hash
    assert file_sha256(w) != hashed

    monkeypatch.setattr(build_module, "exported_names", real)  # written: the next build reads what it hashes
    res = build_engine("lenet", w, tmp_path / "w.engine", BuildOptions(), log=lambda m: None)
    assert res.built and res.meta["weights"]["sha256"] == file_sha256(w)


def test_exported_names_record_the_weights_export_wrote(tmp_path, monkeypatch):
    """`export` hashes the bytes it wrote, not the file found at OUTPUT afterwards (another export's by then)."""
    other = _lenet_wts(tmp_path / "other.wts", 2)
    real = export_module.write_wts

    def then_replaced(path, *a, **k):
        written = real(path, *a, **k)
        ours = tmp_path / "ours.wts"
        os.link(path, ours)
        os.replace(other, path)  # the concurrent export renames its file over ours
        return written

    monkeypatch.setattr(export_module, "write_wts", then_replaced)
    model = LeNet()
    model.names = [f"digit{i}" for i in range(10)]
    out = tmp_path / "w.wts"
    export_wts(model, out, log=lambda m: None)
    doc = json.loads(names_sidecar(out).read_text())
    assert doc["weights_sha256"] == file_sha256(tmp_path / "ours.wts") != file_sha256(out)


def test_a_calibration_table_records_the_weights_it_measured(tmp_path):
    """calibrate_torch hashes the .wts before reading it: a file replaced while the model runs (another export)
    leaves the table with the hash of the weights measured, which a build of the new file then refuses, not the
    new file's hash stamped on the old weights' ranges."""
    import numpy as np
    import torch

    from netdef.int8.calibrate import calibrate_torch

    w = _lenet_wts(tmp_path / "w.wts", 1)
    hashed = file_sha256(w)
    other = _lenet_wts(tmp_path / "other.wts", 2)
    torch.manual_seed(1)
    model = LeNet().eval()  # the weights of w.wts (seed 1)
    x = np.random.default_rng(0).uniform(0, 1, (4, 1, 16, 16)).astype(np.float32)

    def batches():
        yield x
        os.replace(other, w)  # another export lands while calibration runs
        yield x

    table = calibrate_torch(model, "lenet", w, batches(), tmp_path / "t.json", method="max", log=lambda m: None)
    assert table.meta["weights_sha256"] == hashed != file_sha256(w)


def test_a_weights_identity_survives_pickle_and_copy(tmp_path):
    """An identity sent to another process or copied keeps the file it hashed (`Identity.file`)."""
    import copy
    import pickle

    from netdef.define import weights_identity

    identity = weights_identity(_lenet_wts(tmp_path / "w.wts", 1))
    for again in (pickle.loads(pickle.dumps(identity)), copy.deepcopy(identity)):
        assert again == identity and again.file == identity.file is not None


def test_a_build_keeps_the_engine_another_build_wrote_meanwhile(tmp_path, monkeypatch):
    """Two builds of one output at once (other weights): the one that finished second replaced the first one's
    engine and both said `wrote`; the second now keeps what the first wrote and says so (nothing written)."""
    first, second = _lenet_wts(tmp_path / "a.wts", 1), _lenet_wts(tmp_path / "b.wts", 2)
    out = tmp_path / "l.engine"
    real = build_module.define_network

    def other_build_lands(*args, **kwargs):  # runs while this build works: the other build writes `out` then
        monkeypatch.setattr(build_module, "define_network", real)
        build_engine("lenet", first, out, BuildOptions(), log=lambda m: None)
        return real(*args, **kwargs)

    monkeypatch.setattr(build_module, "define_network", other_build_lands)
    with pytest.raises(NetdefError, match=rf"{out} was written by another program while this build ran .*nothing "
                                          r"written, so that what it wrote is kept; build again"):
        build_engine("lenet", second, out, BuildOptions(), log=lambda m: None)
    from netdef.engine_file import read_meta

    assert read_meta(out)["weights"]["sha256"] == file_sha256(first)
    assert build_engine("lenet", second, out, BuildOptions(), log=lambda m: None).built  # again: rebuilt
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
