"""`netdef export` of a checkpoint that pickles model classes whose code is not importable names the package to
install (Ultralytics' YOLOv8/YOLO11/YOLO26 checkpoints pickle `ultralytics.*` classes)."""
from __future__ import annotations

import sys
import types

import pytest

from netdef.errors import NetdefError
from netdef.export import load_checkpoint

torch = pytest.importorskip("torch")


class _Missing(torch.nn.Module):  # pickled by reference under a module name that will not exist at load time
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 1)


def _pickle_under(module: str, path) -> None:
    fake = types.ModuleType(module)
    _Missing.__module__ = module
    fake._Missing = _Missing
    sys.modules[module] = fake
    try:
        torch.save({"model": _Missing()}, path)
    finally:
        del sys.modules[module]
        _Missing.__module__ = __name__


@pytest.mark.parametrize("module", ["ultralytics_netdef_missing", "ultralytics.netdef_missing"])
def test_missing_ultralytics_module_names_the_package(module, tmp_path):
    path = tmp_path / "yolo.pt"
    _pickle_under(module, path)
    with pytest.raises(NetdefError, match=rf"module '{module}' not found\)\. This looks like an Ultralytics "
                                          r"\(YOLOv8/YOLO11/YOLO26\) checkpoint: `pip install ultralytics`"):
        load_checkpoint(path)


def test_other_missing_module_gets_no_ultralytics_hint(tmp_path):
    path = tmp_path / "other.pt"
    _pickle_under("netdef_missing_pkg", path)
    with pytest.raises(NetdefError, match=r"module 'netdef_missing_pkg' not found\)\. Alternatively") as info:
        load_checkpoint(path)
    assert "Ultralytics" not in str(info.value)
