"""docs/own-model.md as a newcomer walks it, with the files of docs/examples/own_model: export, show (and a misspelt
prefix), verify (and the deliberate mistake it finds at --input-scale 10), build and info."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from netdef.cli import main  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "own_model"


@pytest.fixture
def example(tmp_path, monkeypatch, clean_registry):
    """A copy of the example folder (the mistake is made in the copy), the working folder beside it."""
    folder = tmp_path / "own_model"
    shutil.copytree(EXAMPLE, folder)
    monkeypatch.chdir(tmp_path)
    return folder


def test_the_walkthrough_exports_shows_and_verifies_the_example(example, capsys):
    yaml, blocks, model = (str(example / name) for name in ("tinynet.yaml", "blocks.py", "model.py"))
    assert main(["export", f"{model}:make", "-o", "tinynet.wts", "--randomize-bn"]) == 0
    assert "wrote tinynet.wts: 35 tensors" in capsys.readouterr().out
    assert main(["show", yaml, "-w", "tinynet.wts", "--blocks", blocks]) == 0
    out = capsys.readouterr().out
    assert "DWSepSE" in out and "blocks.1.se.fc2.weight" in out
    assert "every key the architecture asks for is in tinynet.wts, and every key there is used" in out

    misspelt = example / "misspelt.yaml"
    misspelt.write_text((example / "tinynet.yaml").read_text().replace("blocks.1]", "block.1]"))
    assert main(["show", str(misspelt), "-w", "tinynet.wts", "--blocks", blocks]) == 1
    captured = capsys.readouterr()
    assert "no module block.1 but an unused module blocks.1 with exactly its 14 key(s)" in captured.out + captured.err

    verify = ["verify", yaml, "-w", "tinynet.wts", "--model", f"{model}:make", "--cpu", "--blocks", blocks]
    assert main(verify) == 0
    out = capsys.readouterr().out
    assert "PASS: 25 of 25 matched layers" in out
    for line in ("blocks.0.dw/relu6        blocks.0.act1", "blocks.0.se/scale        blocks.0.se",
                 "(output) logits          (model output)"):
        assert line in out


def test_the_deliberate_mistake_shows_at_a_larger_input_scale_with_its_yaml_row(example, capsys):
    """ReLU for ReLU6 on the dw line: unseen at the standard-normal input, named at --input-scale 10."""
    yaml, blocks, model = (str(example / name) for name in ("tinynet.yaml", "blocks.py", "model.py"))
    assert main(["export", f"{model}:make", "-o", "tinynet.wts", "--randomize-bn", "--seed", "0"]) == 0
    source = (example / "blocks.py").read_text()
    dw_line = 'bn=f"{prefix}.bn1", act="relu6")'
    assert source.count(dw_line) == 1
    (example / "blocks.py").write_text(source.replace(dw_line, dw_line.replace("relu6", "relu")))
    verify = ["verify", yaml, "-w", "tinynet.wts", "--model", f"{model}:make", "--cpu", "--blocks", blocks]
    assert main(verify) == 0
    capsys.readouterr()
    assert main([*verify, "--input-scale", "10"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("first divergent layer: blocks.0.dw/relu (PyTorch module blocks.0.act1)"), out
    assert f"made by {yaml}:8: row 1 (DWSepSE)" in out
    assert "random input x10): FAIL" in out


def test_the_example_builds_with_a_dynamic_batch_and_rebuilds_after_its_block_file_changes(example, capsys):
    yaml, blocks, model = (str(example / name) for name in ("tinynet.yaml", "blocks.py", "model.py"))
    assert main(["export", f"{model}:make", "-o", "tinynet.wts"]) == 0
    build = ["build", yaml, "-w", "tinynet.wts", "--blocks", blocks, "-o", "tinynet_fp16.engine",
             "--precision", "fp16", "--batch", "1:8:32"]
    assert main(build) == 0
    capsys.readouterr()
    assert main(["info", "tinynet_fp16.engine"]) == 0
    out = capsys.readouterr().out
    assert "tinynet fp16" in out and "batch profile 1:8:32" in out
    assert main(build) == 0
    assert "is up to date" in capsys.readouterr().err
    (example / "blocks.py").write_text((example / "blocks.py").read_text() + "# edited\n")
    assert main(build) == 0
    assert "wrote tinynet_fp16.engine" in capsys.readouterr().err
