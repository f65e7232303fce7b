"""The `netdef` command line. Errors print one line on stderr and exit 1 (`--debug` shows the traceback)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import NetdefError

EPILOG = """typical use:
  netdef export torchvision:resnet50 -o weights/resnet50.wts
  netdef build resnet50 --weights weights/resnet50.wts -o resnet50.engine --precision fp16 --batch 1:8:32
  netdef run resnet50.engine --batch 8
  netdef info resnet50.engine
  netdef bench resnet50.engine --batch 1,8,32 --cuda-graph
  netdef profile resnet50.engine --batch 1 --compare other.engine
  netdef calibrate resnet50 --weights weights/resnet50.wts --data images/ -o r50.calib.json
  netdef detect yolov5s.engine photos/ --out detections/
"""


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except NetdefError as e:
        if args.debug:
            raise
        print(f"netdef {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netdef", description="PyTorch weights (.wts) -> TensorRT engines, layer by layer.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"netdef {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    e = sub.add_parser("export", help="write a .wts file from PyTorch weights (the gen_wts step)",
                       description="SOURCE: a checkpoint (.pt/.pth: a state_dict, a pickled model, or a dict holding "
                                   "one under 'model'/'ema'/'state_dict'), torchvision:NAME (random init unless "
                                   "--state-dict), or package.module:callable returning a model or state_dict.")
    e.add_argument("source")
    e.add_argument("-o", "--output", required=True, help="the .wts file to write")
    e.add_argument("--state-dict", help="load these weights into the torchvision/callable model first")
    e.add_argument("--randomize-bn", action="store_true", help="random BatchNorm statistics (for testing)")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_export)

    b = sub.add_parser("build", help="build a TensorRT engine from an architecture YAML and a .wts",
                       description="ARCH is a YAML file or an architecture name (see architectures/).")
    b.add_argument("arch")
    b.add_argument("--weights", "-w", required=True, help=".wts file (from `netdef export`)")
    b.add_argument("-o", "--output", required=True, help="engine file to write")
    b.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
    b.add_argument("--batch", default="1",
                   help="N, or MIN:OPT:MAX for a dynamic-batch engine, or several profiles such as 1:1:8,9:256:256 "
                        "(each tuned for its OPT batch; the runtime picks one per batch) (default 1)")
    b.add_argument("--input-shape", help="H,W overriding the YAML's input size (e.g. 480,640)")
    b.add_argument("--workspace", type=int, metavar="MiB", help="builder workspace limit")
    b.add_argument("--opt-level", type=int, help="builder optimization level 0..5 (lower builds faster)")
    b.add_argument("--timing-cache", help="persistent timing cache file (read and updated)")
    b.add_argument("--no-tf32", action="store_true", help="keep fp32 layers in full fp32 (no TF32)")
    b.add_argument("--no-strict", action="store_true", help="allow keys in the .wts that the architecture does not use")
    b.add_argument("--calibration", help="int8: calibration table (JSON) from `netdef calibrate`")
    b.add_argument("--detailed", action="store_true",
                   help="keep layer types, tactics and formats in the engine (shown by `netdef profile`)")
    b.add_argument("--compute-capability", help="TensorRT-RTX without a GPU: target, e.g. 8.6 (default)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="block build parameter, e.g. --set conf_thres=0.25 (repeatable)")
    b.add_argument("--force", action="store_true", help="rebuild even if the engine is up to date")
    b.set_defaults(func=cmd_build)

    r = sub.add_parser("run", help="run an engine on an input (random when none is given)")
    r.add_argument("engine")
    r.add_argument("--input", help=".npy input (default: random normal of the engine's input shape)")
    r.add_argument("--batch", type=int, help="batch size of the random input (default: the profile's opt)")
    r.add_argument("--output", help="write the outputs: .npy for one output, .npz for several")
    r.add_argument("--backend", default="auto", choices=("auto", "torch", "pycuda"))
    r.add_argument("--cuda-graph", action="store_true", help="capture and replay a CUDA graph (torch backend)")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("info", help="show an engine's metadata or a .wts summary")
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    k = sub.add_parser("blocks", help="list the blocks architecture YAML files can use")
    k.set_defaults(func=cmd_blocks)

    from ..tools import bench, detect, profile
    from ..int8 import calibrate

    for module in (calibrate, detect, bench, profile):
        module.register(sub)

    d = sub.add_parser("demo", help="the embedded default: export, build and (with a GPU) verify ResNet-18")
    d.add_argument("--workdir", default="out/demo", help="where to write the .wts and engines")
    d.add_argument("--arch", default="resnet18")
    d.set_defaults(func=cmd_demo)
    return p


def cmd_export(a: argparse.Namespace) -> int:
    from ..export import export_wts

    sd = export_wts(a.source, a.output, state_dict=a.state_dict, randomize_bn=a.randomize_bn, seed=a.seed,
                    progress=sys.stderr.isatty())
    n = sum(int(v.numel()) for v in sd.values())
    print(f"wrote {a.output}: {len(sd)} tensors, {n:,} values")
    return 0


def build_options(a: argparse.Namespace) -> Any:
    from ..build import BuildOptions, parse_profiles

    hw = None
    if a.input_shape:
        try:
            hw = tuple(int(v) for v in a.input_shape.replace("x", ",").split(","))
            assert len(hw) == 2
        except (ValueError, AssertionError):
            raise NetdefError(f"--input-shape '{a.input_shape}': expected H,W such as 480,640") from None
    extra = {}
    for item in a.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise NetdefError(f"--set '{item}': expected KEY=VALUE")
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value
    batch, profiles = parse_profiles(a.batch)
    return BuildOptions(precision=a.precision, batch=batch, profiles=profiles, input_hw=hw, workspace_mib=a.workspace,
                        opt_level=a.opt_level, tf32=not a.no_tf32, strict=not a.no_strict,
                        timing_cache=a.timing_cache, compute_capability=a.compute_capability,
                        calibration=a.calibration, detailed=a.detailed, extra=extra)


def cmd_build(a: argparse.Namespace) -> int:
    from ..build import build_engine

    res = build_engine(a.arch, a.weights, a.output, build_options(a), force=a.force)
    if res.built:
        print(f"built {res.path} in {res.seconds:.1f} s")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    import numpy as np

    from ..runtime import Engine

    eng = Engine(a.engine, backend=a.backend, cuda_graph=a.cuda_graph)
    if a.input:
        x = np.load(a.input)
    else:
        spec = eng.inputs[0]
        batch = a.batch or eng.batch_range[1]
        x = np.random.default_rng(0).standard_normal((batch, *spec.shape[1:])).astype(spec.dtype)
    outs = eng.infer({eng.inputs[0].name: x}, as_numpy=True)
    for name, v in outs.items():
        print(f"{name}: shape {tuple(v.shape)} {v.dtype}  min {v.min():.4g} max {v.max():.4g} mean {v.mean():.4g}")
    if a.output:
        if len(outs) == 1 and not a.output.endswith(".npz"):
            np.save(a.output, next(iter(outs.values())))
        else:
            np.savez(a.output, **outs)
        print(f"wrote {a.output}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    path = Path(a.file)
    if not path.is_file():
        raise NetdefError(f"no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    from ..engine_file import MAGIC, profiles, read_meta

    if head.startswith(MAGIC):
        meta = read_meta(path)
        if a.json:
            print(json.dumps(meta, indent=2))
            return 0
        t = meta["tensorrt"]
        print(f"engine {path}: {meta['arch']['name']} {meta['precision']}, built by {t['flavor']} {t['version']} "
              f"for {meta['gpu'].get('name') or 'compute capability'} {meta['gpu']['compute_capability']}")
        from ..build import format_profiles

        engine_profiles = profiles(meta)
        print(f"  batch profile{'s' if len(engine_profiles) > 1 else ''} {format_profiles(engine_profiles)}, "
              f"{meta['layers']} layers, "
              f"built {meta['created']} in {meta['build_seconds']} s")
        for kind in ("inputs", "outputs"):
            for io in meta[kind]:
                print(f"  {kind[:-1]:6} {io['name']:12} {io['dtype']:8} {io['shape']}")
        print(f"  weights {meta['weights']['path']} sha256 {meta['weights']['sha256'][:12]}")
        for p in meta.get("plugins", []):
            print(f"  plugin {p.get('name')}: {p.get('library')}")
        return 0
    from ..wts import wts_summary

    s = wts_summary(path)
    if a.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"wts {path}: {s['tensors']} tensors, {s['values']:,} values, {s['size_bytes'] / 2**20:.1f} MiB")
    for name, count in s["keys"][:20]:
        print(f"  {name:50} {count:>10,}")
    if len(s["keys"]) > 20:
        print(f"  ... {len(s['keys']) - 20} more")
    return 0


def cmd_blocks(a: argparse.Namespace) -> int:
    from ..registry import known_blocks
    from ..spec import block_help

    for name in known_blocks():
        print(block_help(name))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from ..examples.demo import run_demo

    return run_demo(Path(a.workdir), a.arch)


if __name__ == "__main__":
    sys.exit(main())
