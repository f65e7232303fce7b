"""What a measurement ran on: device, driver and library versions, for benchmark and profile records."""
from __future__ import annotations

import platform
import shutil
import subprocess
from typing import Any

from .. import __version__, trt_api
from ..errors import NetdefError


def environment() -> dict[str, Any]:
    """Device, driver and library versions for a benchmark record (None where unknown)."""
    env: dict[str, Any] = {"netdef": __version__, "python": platform.python_version(), "host": platform.node(),
                           "platform": platform.platform()}
    env["tensorrt"] = tensorrt_version()
    gpu = trt_api.gpu_identity()
    env["device"], env["compute_capability"] = gpu if gpu else (None, None)
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda_runtime"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except ImportError:
        env["torch"] = None
    env["driver"] = driver_version()
    return env


def tensorrt_version() -> str:
    """'tensorrt 8.6.0' (flavour and version), or 'none' without a usable TensorRT."""
    try:
        return trt_api.version_string()
    except NetdefError:
        return "none"


def driver_version() -> str | None:
    """The NVIDIA driver's version (nvidia-smi), else the CUDA driver API's (pycuda), else None."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        v = cuda.get_driver_version()
        return f"CUDA driver API {v // 1000}.{v % 1000 // 10}"
    except Exception:  # noqa: BLE001  pycuda missing or no driver: the version stays unknown
        return None
