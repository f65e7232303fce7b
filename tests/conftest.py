"""Shared fixtures. GPU tests (`@pytest.mark.gpu`) skip unless a CUDA GPU and full TensorRT are present.

Reference models and their `.wts` files are made once per session and shared by the modules that use them
(making and exporting them is a large part of the suite's time on CPU)."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from netdef import trt_api


def pytest_configure(config):
    """A suite started in the background (`cmd &` in a script) starts with SIGINT ignored, which netdef respects;
    the signal tests send SIGINT to this process and need Python's own handler, as a foreground run has it."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    if trt_api.can_run_engines():
        return
    try:
        why = f"needs a CUDA GPU and full TensorRT (have {trt_api.version_string()}, GPU: {trt_api.gpu_identity()})"
    except Exception as e:  # noqa: BLE001  no TensorRT at all
        why = f"needs a CUDA GPU and full TensorRT ({e})"
    skip = pytest.mark.skip(reason=why)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def wts_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wts")


@pytest.fixture(scope="session")
def torchvision_wts(wts_dir):
    """export(name, folder=None) -> (model, path): a torchvision model with random weights and random BN stats, as
    .wts, made once; with `folder` (a test's tmp_path, for a large model used once) written there and not kept."""
    from netdef.export import export_wts, load_source, randomize_batchnorm

    cache: dict[str, tuple] = {}

    def export(name: str, folder: Path | None = None):
        if name in cache:
            return cache[name]
        model = load_source(f"torchvision:{name}")
        randomize_batchnorm(model, seed=1)
        path = (folder or wts_dir) / f"{name}.wts"
        export_wts(model, path)
        if folder is None:
            cache[name] = (model, path)
        return model, path

    return export


@pytest.fixture(scope="session")
def yolov5_models():
    """get(name, nc=None, v5_buffers=False, tame=False, keep=True) -> (model, state_dict): Ultralytics' YOLOv5
    with random weights (netdef.testing.yolov5_reference), made once; `keep=False` for a large model used once
    (not cached: memory). Raises ImportError without the reference package."""
    from netdef.testing import yolov5_reference as ref

    cache: dict[tuple, tuple] = {}

    def get(name: str, nc: int | None = None, v5_buffers: bool = False, tame: bool = False, keep: bool = True):
        key = (name, nc, v5_buffers, tame)
        if key in cache:
            return cache[key]
        made = ref.reference_model(name, nc=nc, v5_buffers=v5_buffers, tame=tame)
        if keep:
            cache[key] = made
        return made

    return get


@pytest.fixture(scope="session")
def yolov5_wts(yolov5_models, wts_dir):
    """get(name, tame=False) -> the .wts of yolov5_models(name, tame=tame), written once."""
    from netdef.wts import write_wts

    cache: dict[tuple, Path] = {}

    def get(name: str, tame: bool = False) -> Path:
        if (name, tame) not in cache:
            path = wts_dir / f"{name}{'_tame' if tame else ''}.wts"
            write_wts(path, yolov5_models(name, tame=tame)[1])
            cache[name, tame] = path
        return cache[name, tame]

    return get


def pytest_runtest_logreport(report):
    """With NETDEF_RESULTS=FILE, append each test's `RESULT ...` output lines to FILE as the test ends (also from
    xdist workers, through the controller), and a failure's whole report (`FAILED nodeid (phase)`, traceback,
    captured output), so that a GPU run cut by its time limit keeps the figures and the failures of the tests
    that finished."""
    import os

    path = os.environ.get("NETDEF_RESULTS")
    if not path or os.environ.get("PYTEST_XDIST_WORKER"):  # xdist's controller writes its workers' reports, once
        return
    lines = [f"{report.nodeid} {report.outcome}: {line}\n" for line in report.capstdout.splitlines()
             if report.when == "call" and line.startswith("RESULT")]
    if report.failed:
        lines.append(f"FAILED {report.nodeid} ({report.when})\n{report.longreprtext}\n")
        lines += [f"--- {name}\n{text}\n" for name, text in report.sections]
    if lines:
        with open(path, "a") as f:
            f.write("".join(lines))


@pytest.fixture
def clean_registry(monkeypatch):
    """Block modules imported by a test are forgotten afterwards (registry, loader cache, sys.modules)."""
    import sys

    from netdef import block_modules, registry

    blocks, loaded, modules = dict(registry.BLOCKS), dict(block_modules._loaded), set(sys.modules)
    monkeypatch.setattr(block_modules, "_installed_done", False)
    monkeypatch.delenv(block_modules.ENV_VAR, raising=False)
    yield
    registry.BLOCKS.clear()
    registry.BLOCKS.update(blocks)
    block_modules._loaded.clear()
    block_modules._loaded.update(loaded)
    for name in set(sys.modules) - modules:
        del sys.modules[name]
