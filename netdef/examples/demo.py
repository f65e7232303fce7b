"""`netdef demo`: the embedded default job, end to end with nothing downloaded.

A torchvision model with random weights and random BatchNorm statistics is exported to .wts, built
into fp32 and fp16 engines with a dynamic batch, and, where a GPU and full TensorRT are present, run
and compared with PyTorch.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

from .. import trt_api
from ..build import BuildOptions, build_engine
from ..errors import NetdefError, OptionError
from ..export import export_wts, load_source, randomize_batchnorm, seeded
from ..fileio import describe_head, read_head, special_kind
from ..spec import available_archs
from ..wts import WTS_FILE, read_wts

TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}


def run_demo(workdir: Path, arch: str = "resnet18") -> int:
    check_arch(arch)
    check_workdir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"netdef demo: {arch} with {trt_api.here()}")
    with seeded(0):  # the same weights every run: an earlier run's .wts is told from weights of the user's
        model = load_source(f"torchvision:{arch}")
    randomize_batchnorm(model, seed=0)
    wts = workdir / f"{arch}.wts"
    check_own_weights(wts, model)
    export_wts(model, wts, hints=False)  # (the architecture to build is this one: no search for it)
    print(f"1. exported {wts} ({wts.stat().st_size / 2**20:.1f} MiB)")

    runnable = trt_api.can_run_engines()
    engines = {}
    for step, precision in enumerate(("fp32", "fp16"), 2):
        opts = BuildOptions(precision=precision, batch=(1, 4, 8), opt_level=None if runnable else 0,
                            tf32=False, timing_cache=str(workdir / "timing.cache"))
        res = build_engine(arch, wts, workdir / f"{arch}_{precision}.engine", opts)
        engines[precision] = res.path
        print(f"{step}. built the {precision} engine {res.path}: {res.meta['layers']} layers, inputs "
              f"{[i['shape'] for i in res.meta['inputs']]}, outputs {[o['shape'] for o in res.meta['outputs']]}")
    if not runnable:
        print("4. no CUDA GPU with full TensorRT here: engines built and serialized, not run. "
              "On a GPU machine this demo also runs them and compares with PyTorch.")
        return 0

    from ..runtime import Engine
    from ..tools.verify import max_rel_error, torch_reference

    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    ref = torch_reference(model, x)
    ok = True
    print("4. the engines against PyTorch (a batch of 4):")
    for precision, path in engines.items():
        out = Engine(path).infer(x, as_numpy=True)["logits"]
        err = max_rel_error(out, ref)
        passed = err <= TOLERANCE[precision]
        ok &= passed
        print(f"   {precision}: max relative error {err:.2e} "
              f"({'ok' if passed else 'FAIL'}, bound {TOLERANCE[precision]:g}); top-1 agreement "
              f"{(out.argmax(1) == ref.argmax(1)).mean():.0%}")
    return 0 if ok else 1


def demo_archs() -> list[str]:
    """The architectures the demo takes: netdef's own that are torchvision models (the demo makes the model)."""
    from torchvision import models

    return sorted(set(available_archs(own=True)) & set(models.list_models()))


def check_arch(arch: str) -> None:
    """OptionError unless the demo takes `arch`, listing those it takes (and the nearest name)."""
    archs = demo_archs()
    if arch not in archs:
        near = difflib.get_close_matches(arch, archs, n=1)
        raise OptionError(f"--arch {arch}: the demo takes a torchvision model netdef has an architecture of, one of "
                          f"{', '.join(archs)}" + (f" (did you mean {near[0]}?)" if near else "")
                          + "; other architectures are built with `netdef build`")


def check_workdir(workdir: Path) -> None:
    """A --workdir that is a file (or lies inside one) is refused before any work, naming what that file is."""
    found = workdir
    while not found.exists() and found != found.parent:
        found = found.parent
    if found.exists() and not found.is_dir():
        what = describe_head(read_head(found)) if found.is_file() else f"it is {special_kind(found)}"
        raise OptionError(f"--workdir {workdir}: {found} is not a folder ({what}): give a folder for the demo's .wts "
                          "and engines (a new one, or an earlier demo's)")


def check_own_weights(wts: Path, model) -> None:
    """An existing .wts at `wts` is replaced only when it holds the demo's own weights (an earlier run's): `--workdir
    weights/` must not turn the user's trained resnet18.wts into random weights. Files of other kinds are left to
    export_wts's own check."""
    if not wts.is_file() or not WTS_FILE.test(read_head(wts)):
        return
    ours = {k: v.detach().cpu().float().numpy().reshape(-1) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}
    try:
        theirs = read_wts(wts, allow_nonfinite=True)
    except NetdefError:
        theirs = {}
    if theirs.keys() != ours.keys() or not all(np.array_equal(theirs[k], v) for k, v in ours.items()):
        raise OptionError(f"--workdir {wts.parent}: {wts} holds other weights than the demo's random ones (yours?): "
                          f"the demo writes over its own files only; give another --workdir or move {wts.name} away")
