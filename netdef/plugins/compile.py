"""Compile the CUDA C++ plugin sources shipped in netdef with nvcc, once per toolchain and GPU, and load them
(and netdef's plain CUDA kernels, e.g. `letterbox/`, which need nvcc alone: `find_toolchain(tensorrt=False)`).

A plugin is a folder of `.cu`/`.cpp`/`.h` files beside this module. `compile_plugin(name)` builds it into
`$NETDEF_CACHE/plugins/<name>-<hash>.so` (default `~/.cache/netdef/plugins`), where the hash covers the
sources, the TensorRT version, the GPU architecture, the nvcc version and the flags. Two processes never compile
the same library at once (a fcntl lock), and a library appears only complete (compiled to a temporary name, then
renamed). The toolchain comes from the environment:

- nvcc: PATH, else $CUDA_HOME/bin or /usr/local/cuda/bin;
- TensorRT headers (NvInfer.h): TENSORRT_INCLUDE_DIR, else the TensorRT installation's include folder;
- libnvinfer: TENSORRT_LIB_DIR, else the library the TensorRT Python module has loaded;
- GPU architecture: NETDEF_PLUGIN_ARCH (e.g. 8.6 or 90), else device 0's compute capability.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import trt_api
from ..errors import NetdefError
from ..fileio import cache_dir, file_sha256
from . import load_library

PLUGIN_DIR = Path(__file__).resolve().parent
SOURCE_SUFFIXES = (".cu", ".cpp")
HEADER_SUFFIXES = (".h", ".cuh", ".hpp")
NVCC_FLAGS = ("-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
              "-Xcompiler", "-Wno-deprecated-declarations")
COMPILE_TIMEOUT_S = 900
DEFAULT_CUDA_HOME = "/usr/local/cuda"

_HEADER_DIRS = ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include",
                "/usr/local/TensorRT/include", "/usr/local/tensorrt/include", "/opt/tensorrt/include")
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/TensorRT/lib",
             "/usr/local/tensorrt/lib", "/opt/tensorrt/lib")


@dataclass(frozen=True)
class Toolchain:
    """What a plugin is compiled with; every field goes into the cache key."""

    nvcc: str
    nvcc_version: str
    include_dir: str
    header_version: str  # from NvInferVersion.h
    library: str  # the libnvinfer to link
    tensorrt: str  # the TensorRT Python module's version
    arch: str  # compute capability, "9.0"


@dataclass(frozen=True)
class PluginLibrary:
    """A compiled plugin library; `entry()` is its record in an engine's metadata ("plugins")."""

    name: str
    path: Path
    sha256: str
    tensorrt: str
    arch: str

    def entry(self) -> dict[str, Any]:
        return {"name": self.name, "library": str(self.path), "sha256": self.sha256, "tensorrt": self.tensorrt,
                "arch": self.arch}


# ---------------------------------------------------------------- the toolchain

def find_toolchain(tensorrt: bool = True, arch: str | None = None) -> Toolchain:
    """nvcc, TensorRT headers and library, GPU architecture (`arch`, e.g. "9.0": given, else found); ONE
    NetdefError naming everything missing. `tensorrt=False`: for a plain CUDA kernel (netdef's letterbox), nvcc
    and the architecture alone (no TensorRT headers, library or version)."""
    problems: list[str] = []
    nvcc = _find_nvcc()
    if nvcc is None:
        problems.append(f"nvcc (the CUDA compiler) is not on PATH nor in $CUDA_HOME/bin or {DEFAULT_CUDA_HOME}/bin: "
                        "install the CUDA toolkit, or put its bin folder on PATH / set CUDA_HOME")
    include, header_version, library, version = "", "", "", ""  # a plain kernel's toolchain: no TensorRT
    what = "TensorRT plugins" if tensorrt else "netdef's CUDA kernels"
    if tensorrt:
        try:
            info = trt_api.info()
        except NetdefError as e:
            raise NetdefError(f"cannot compile TensorRT plugins: {e}") from None
        version = info.version
        if not info.plugins:
            problems.append(f"{trt_api.version_string()} has no plugin layers: plugins need full TensorRT (8.6 to 11)")
        include = _find_include(problems)
        header_version = _header_version(Path(include)) if include else ""
        if header_version and info.plugins and header_version.split(".")[0] != str(info.major):
            problems.append(f"the TensorRT headers in {include} are version {header_version} but the TensorRT Python "
                            f"module is {info.version}: point TENSORRT_INCLUDE_DIR at the headers of {info.version}")
        library = _find_library(info.major, problems) if info.plugins else ""
    arch = arch or _find_arch(problems)
    if problems:
        raise NetdefError(f"cannot compile {what}:\n  - " + "\n  - ".join(problems))
    assert nvcc is not None and include is not None and library is not None and arch is not None
    return Toolchain(nvcc, _nvcc_version(nvcc), include, header_version, library, version, arch)


def _find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), DEFAULT_CUDA_HOME):
        if root and os.access(os.path.join(root, "bin", "nvcc"), os.X_OK):
            return os.path.join(root, "bin", "nvcc")
    return None


@functools.lru_cache(maxsize=None)
def _nvcc_version(nvcc: str) -> str:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise NetdefError(f"{nvcc} --version failed ({e}): check the CUDA toolkit installation") from None
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return next((ln for ln in lines if "release" in ln), lines[-1] if lines else "unknown")


def _find_include(problems: list[str]) -> str | None:
    env = os.environ.get("TENSORRT_INCLUDE_DIR")
    if env:
        if (Path(env) / "NvInfer.h").is_file():
            return env
        problems.append(f"TENSORRT_INCLUDE_DIR={env} has no NvInfer.h")
        return None
    for d in _package_dirs() + [Path(p) for p in _HEADER_DIRS]:
        for cand in (d / "include", d) if d.name != "include" else (d,):
            if (cand / "NvInfer.h").is_file():
                return str(cand)
    problems.append("the TensorRT C++ headers (NvInfer.h) were not found: set TENSORRT_INCLUDE_DIR to the folder "
                    "that holds NvInfer.h (the TensorRT tar or deb packages ship them; pip wheels do not)")
    return None


def _header_version(include: Path) -> str:
    """MAJOR.MINOR.PATCH from NvInferVersion.h; '' where it cannot be read. 10.11 and later define the numbers
    through one more macro (`#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE`), which is followed."""
    path = include / "NvInferVersion.h"
    text = path.read_text(errors="replace") if path.is_file() else ""
    defines = dict(re.findall(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+(\w+)", text, flags=re.M))
    parts = []
    for k in ("MAJOR", "MINOR", "PATCH"):
        value = defines.get(f"NV_TENSORRT_{k}", defines.get(f"TENSORRT_{k}", ""))
        value = defines.get(value, value)  # one level of indirection
        if not value.isdigit():
            return ""
        parts.append(value)
    return ".".join(parts)


def _find_library(major: int, problems: list[str]) -> str | None:
    names = (f"libnvinfer.so.{major}", "libnvinfer.so")
    env = os.environ.get("TENSORRT_LIB_DIR")
    if env:
        for n in names:
            if (Path(env) / n).is_file():
                return str(Path(env) / n)
        problems.append(f"TENSORRT_LIB_DIR={env} has no {' or '.join(names)}")
        return None
    loaded = _loaded_libnvinfer()
    if loaded:
        return loaded
    for d in _package_dirs() + [Path(p) for p in _LIB_DIRS]:
        for n in names:
            if (d / n).is_file():
                return str(d / n)
    problems.append(f"libnvinfer ({' or '.join(names)}) was not found: set TENSORRT_LIB_DIR to its folder")
    return None


def _loaded_libnvinfer() -> str | None:
    """The libnvinfer the TensorRT Python module loaded (so the plugin registers with that very library)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split()[-1] if line.split() else ""
        if re.search(r"/libnvinfer\.so(\.\d+)*$", path) and os.path.isfile(path):
            return path
    return None


def _package_dirs() -> list[Path]:
    """Folders of the installed TensorRT Python packages (the module and its `*_libs` companion)."""
    dirs = []
    try:
        dirs.append(Path(trt_api.module().__file__).resolve().parent)
    except (NetdefError, TypeError):
        pass
    import importlib.util

    for name in ("tensorrt_libs", "tensorrt_cu12_libs", "tensorrt_cu13_libs"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(Path(p) for p in spec.submodule_search_locations)
    return dirs


def _find_arch(problems: list[str]) -> str | None:
    env = os.environ.get("NETDEF_PLUGIN_ARCH")
    if env:
        m = re.fullmatch(r"(\d+)\.?(\d)", env.strip())
        if m:
            return f"{m.group(1)}.{m.group(2)}"
        problems.append(f"NETDEF_PLUGIN_ARCH={env}: expected a compute capability such as 8.6 or 90")
        return None
    gpu = trt_api.gpu_identity()
    if gpu is None:
        problems.append("no CUDA GPU is visible to pick the architecture: run on the GPU the engine is for, or set "
                        "NETDEF_PLUGIN_ARCH (e.g. 9.0)")
        return None
    return gpu[1]


# ---------------------------------------------------------------- compiling

def sources_of(name: str) -> list[Path]:
    """The files of plugin `name` (a folder beside this module), sorted."""
    folder = PLUGIN_DIR / name
    files = sorted(p for p in folder.glob("*") if p.suffix in SOURCE_SUFFIXES + HEADER_SUFFIXES) if folder.is_dir() else []
    if not any(p.suffix in SOURCE_SUFFIXES for p in files):
        raise NetdefError(f"plugin '{name}' has no .cu/.cpp sources in {folder} (a damaged netdef installation?)")
    return files


def nvcc_command(tc: Toolchain, sources: list[Path], output: Path) -> list[str]:
    """nvcc's command line; a toolchain without TensorRT (a plain kernel's) neither includes nor links it."""
    sm = tc.arch.replace(".", "")
    lib = Path(tc.library)
    include = [f"-I{tc.include_dir}"] if tc.include_dir else []
    link = [f"-L{lib.parent}", f"-l:{lib.name}", f"-Xlinker=-rpath={lib.parent}"] if tc.library else []
    return [tc.nvcc, *NVCC_FLAGS, f"-gencode=arch=compute_{sm},code=[sm_{sm},compute_{sm}]", *include,
            *(str(s) for s in sources if s.suffix in SOURCE_SUFFIXES), *link, "-o", str(output)]


def cache_key(name: str, sources: list[Path], tc: Toolchain) -> str:
    """16 hex digits over the sources, the TensorRT version, the GPU architecture, nvcc and the flags."""
    h = hashlib.sha256()
    for s in sources:
        h.update(s.name.encode() + b"\0" + s.read_bytes() + b"\0")
    for part in (name, tc.tensorrt, tc.header_version, tc.arch, tc.nvcc_version, tc.library, " ".join(NVCC_FLAGS)):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def compile_plugin(name: str, *, toolchain: Toolchain | None = None, log: Any = None) -> PluginLibrary:
    """The compiled library of plugin `name`: from the cache, or compiled now (under a lock, atomically)."""
    tc = toolchain or find_toolchain()
    sources = sources_of(name)
    folder = cache_dir("plugins")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NetdefError(f"cannot create the plugin cache {folder} ({e}); set NETDEF_CACHE") from None
    target = folder / f"{name}-{cache_key(name, sources, tc)}.so"
    if not target.is_file():
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be compiling the same library
            if not target.is_file():
                _compile(tc, sources, target, log or _stderr)
    return PluginLibrary(name, target, file_sha256(target), tc.tensorrt, tc.arch)


def _compile(tc: Toolchain, sources: list[Path], target: Path, log: Any) -> None:
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.so")
    cmd = nvcc_command(tc, sources, tmp)
    log(f"[netdef] compiling plugin {target.name} for compute capability {tc.arch} (first use; about a minute) ...")
    try:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise NetdefError(f"nvcc did not finish within {COMPILE_TIMEOUT_S} s compiling {target.name}") from None
        if res.returncode != 0 or not tmp.is_file():
            tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-30:])
            raise NetdefError(f"nvcc failed to compile plugin {target.name} (exit {res.returncode}):\n"
                              f"  {' '.join(cmd)}\n{tail}")
        os.replace(tmp, target)
    finally:  # a failure, a timeout, Ctrl-C, nvcc not startable: no half-written library stays in the cache
        tmp.unlink(missing_ok=True)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- loading

def last_error(path: str | Path) -> str:
    """The message the plugin library recorded last (its creators' reasons for refusing fields)."""
    lib = load_library(path)
    try:
        fn = lib.netdef_plugin_last_error
    except AttributeError:
        return ""
    fn.restype = ctypes.c_char_p
    return (fn() or b"").decode(errors="replace")


def ensure_plugin(name: str, *, log: Any = None) -> PluginLibrary:
    """Compile (when needed) and load plugin `name`; raises the clear TensorRT-RTX error where plugins are absent."""
    trt_api.plugin_registry()
    lib = compile_plugin(name, log=log)
    load_library(lib.path)
    return lib
