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


def _lenet_wts(path, seed):
    import torch

    torch.manual_seed(seed)
    export_wts(LeNet(), path, log=lambda m: None)
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
