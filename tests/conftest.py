"""Shared fixtures. GPU tests (`@pytest.mark.gpu`) skip unless a CUDA GPU and full TensorRT are present."""
from __future__ import annotations

from pathlib import Path

import pytest

from netdef import trt_api


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
    """export(name) -> (model, path): a torchvision model with random weights and random BN stats, as .wts."""
    from netdef.export import export_wts, load_source, randomize_batchnorm

    cache: dict[str, tuple] = {}

    def export(name: str):
        if name not in cache:
            model = load_source(f"torchvision:{name}")
            randomize_batchnorm(model, seed=1)
            path = wts_dir / f"{name}.wts"
            export_wts(model, path)
            cache[name] = (model, path)
        return cache[name]

    return export
