"""A plain (not editable) `pip install .` works away from the checkout: the architectures ship inside the
package, and `netdef build resnet18` / `netdef build yolov5s` run from an empty folder."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new venv with netdef installed from a wheel of this checkout; its other requirements (numpy, PyYAML,
    tqdm, TensorRT-RTX) come from this interpreter's site-packages through a .pth file (no downloads). The venv
    gets no pip of its own (seconds saved): this interpreter's pip installs into it (`pip --python`)."""
    tmp = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, capture_output=True)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    wheel = next((tmp / "dist").glob("netdef-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    ours = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    Path(purelib, "zz_netdef_test_deps.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    return venv


def netdef(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(venv / "bin" / "netdef"), *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_installed_package_is_not_the_checkout(fresh_venv, tmp_path):
    """...and ships its type marker; `import netdef` imports neither torch nor TensorRT, and its modules load on
    first use (`netdef.registry.block` right after `import netdef`)."""
    code = ("import sys, netdef; print(netdef.__file__); print('torch' in sys.modules or any('tensorrt' in m "
            "for m in sys.modules)); print(netdef.registry.block.__name__)")
    out = subprocess.run([str(fresh_venv / "bin" / "python"), "-c", code],
                         cwd=tmp_path, check=True, capture_output=True, text=True).stdout.split()
    assert "site-packages" in out[0] and not out[0].startswith(str(ROOT)) and out[1:] == ["False", "block"]
    installed = Path(out[0]).parent
    assert (installed / "py.typed").is_file()
    # every CUDA source folder netdef compiles on first use (plugins, the letterbox kernel) ships whole
    def sources(folder: Path) -> list[str]:
        return sorted(f.name for f in folder.iterdir() if f.suffix in (".cu", ".cuh", ".h", ".cpp"))

    for folder in sorted(p for p in (ROOT / "netdef" / "plugins").iterdir() if p.is_dir() and p.name != "__pycache__"):
        shipped = installed / "plugins" / folder.name
        assert shipped.is_dir(), f"netdef/plugins/{folder.name} is missing from the wheel (setup.cfg's package_data)"
        assert sources(folder) and sources(shipped) == sources(folder), folder.name


def test_build_resnet18_from_an_empty_folder(fresh_venv, tmp_path, torchvision_wts):
    _, wts = torchvision_wts("resnet18")
    res = netdef(fresh_venv, tmp_path, "build", "resnet18", "-w", str(wts), "-o", "r18.engine", "--opt-level", "0")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r18.engine").stat().st_size > 1e6 and sorted(p.name for p in tmp_path.iterdir()) == ["r18.engine"]


def test_build_yolov5s_from_an_empty_folder(fresh_venv, tmp_path_factory, yolov5_wts):
    pytest.importorskip("netdef.testing.yolov5_reference")
    try:
        wts = yolov5_wts("yolov5s")  # shared with tests/test_yolov5.py
    except ImportError as e:
        pytest.skip(f"needs Ultralytics' YOLOv5 code (pip install --no-deps yolov5==7.0.14): {e}")
    work = tmp_path_factory.mktemp("empty")
    res = netdef(fresh_venv, work, "build", "yolov5s", "-w", str(wts), "-o", "y5s.engine", "--opt-level", "0")
    assert res.returncode == 0, res.stderr
    info = netdef(fresh_venv, work, "info", "y5s.engine")
    assert info.returncode == 0 and "yolov5s fp32" in info.stdout, info.stdout + info.stderr
