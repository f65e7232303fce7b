"""The command line end to end on CPU: export -> build -> info, up-to-date builds, one-line errors."""
from __future__ import annotations

import json

import pytest

from netdef import engine_file
from netdef.cli import main
from netdef.errors import EngineMismatchError, NetdefError
from netdef.wts import read_wts

from helpers import run_cli


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert main(["export", "torchvision:resnet18", "-o", str(d / "r18.wts"), "--randomize-bn"]) == 0
    return d


def test_export_writes_every_key(r18):
    import torchvision

    keys = set(read_wts(r18 / "r18.wts"))
    expected = {k for k in torchvision.models.resnet18().state_dict() if not k.endswith("num_batches_tracked")}
    assert keys == expected


def test_export_from_checkpoint_dict(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    torch.save({"epoch": 3, "model": model}, tmp_path / "ckpt.pt")  # a pickled model under 'model'
    torch.save({"state_dict": model.state_dict()}, tmp_path / "sd.pth")
    for f in ("ckpt.pt", "sd.pth"):
        assert main(["export", str(tmp_path / f), "-o", str(tmp_path / f"{f}.wts")]) == 0
        assert set(read_wts(tmp_path / f"{f}.wts")) == {"0.weight", "0.bias", "1.weight", "1.bias",
                                                        "1.running_mean", "1.running_var"}


def test_build_info_and_up_to_date(r18, capsys):
    eng = r18 / "r18.engine"
    args = ["build", "resnet18", "--weights", str(r18 / "r18.wts"), "-o", str(eng), "--batch", "1:2:4",
            "--opt-level", "0"]
    assert main(args) == 0
    first = engine_file.read_meta(eng)
    assert first["options"]["batch"] == [1, 2, 4] and first["arch"]["name"] == "resnet18"
    assert main(args) == 0  # unchanged: kept
    assert "up to date" in capsys.readouterr().err
    assert engine_file.read_meta(eng)["created"] == first["created"]
    assert main(args + ["--precision", "fp16"]) == 0  # a changed option rebuilds
    assert engine_file.read_meta(eng)["precision"] == "fp16"
    capsys.readouterr()
    assert main(["info", str(eng)]) == 0
    out = capsys.readouterr().out
    assert "resnet18 fp16" in out and "logits" in out and "1:2:4" in out
    assert main(["info", str(r18 / "r18.wts"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors"] == 102


@pytest.mark.parametrize("args, needle", [
    (["build", "resnet18", "--weights", "nope.wts", "-o", "x.engine"], "weights file not found: nope.wts"),
    (["build", "resnet18", "--weights", "W", "-o", "x.engine", "--batch", "4:2:8"], "1 <= min <= opt <= max"),
    (["build", "nosuchnet", "--weights", "W", "-o", "x.engine"], "no architecture 'nosuchnet'"),
    (["export", "torchvision:resnet9000", "-o", "x.wts"], "torchvision has no model 'resnet9000'"),
    (["info", "missing.engine"], "no such file"),
])
def test_errors_are_one_line_without_traceback(r18, args, needle):
    args = [str(r18 / "r18.wts") if a == "W" else a for a in args]
    res = run_cli(*args)
    assert res.returncode == 1
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_failed_build_leaves_no_engine(r18, tmp_path):
    wts = read_wts(r18 / "r18.wts")
    del wts["fc.bias"]
    from netdef.wts import write_wts

    write_wts(tmp_path / "bad.wts", wts)
    res = run_cli("build", "resnet18", "--weights", str(tmp_path / "bad.wts"), "-o", str(tmp_path / "bad.engine"))
    assert res.returncode == 1 and "fc.bias" in res.stderr
    assert not (tmp_path / "bad.engine").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.wts"]  # no temp files either


def test_mismatched_engine_is_refused(r18):
    meta = engine_file.read_meta(r18 / "r18.engine")
    with pytest.raises(EngineMismatchError, match="only load in the version that built them"):
        engine_file.check_compatible(meta, "r18.engine", "8.6.0", "tensorrt", ("NVIDIA H100", "9.0"))
    meta["tensorrt"] = {"flavor": "tensorrt", "version": "8.6.0"}
    with pytest.raises(EngineMismatchError, match="compute capability"):
        engine_file.check_compatible(meta, "r18.engine", "8.6.0", "tensorrt", ("NVIDIA H100", "9.0"))


def test_not_an_engine(tmp_path):
    p = tmp_path / "raw.plan"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(NetdefError, match="not a netdef engine"):
        engine_file.read_meta(p)


def test_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("export", "build", "run", "info"):
        assert cmd in res.stdout
