"""`netdef export`: a .wts file from PyTorch weights (the gen_wts step)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .options import add_blocks_option, load_blocks, number


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef export` to the command line."""
    p = subparsers.add_parser("export", help="write a .wts file from PyTorch weights (the gen_wts step)",
                              description="SOURCE: a checkpoint (.pt/.pth: a state_dict, a pickled model, or a "
                                          "dict holding one under 'model'/'ema'/'state_dict'), torchvision:NAME "
                                          "(random init unless --state-dict), or package.module:callable or "
                                          "file.py:callable returning a model or state_dict; the last three take "
                                          "the builder's keyword arguments: \"torchvision:resnet18(num_classes=10)\".")
    p.set_defaults(func=cmd_export)
    p.add_argument("source")
    p.add_argument("-o", "--output", help="the .wts file to write (default: the source's name with .wts, beside a "
                                          "checkpoint file as tensorrtx's gen_wts.py writes it, else in this folder: "
                                          "yolo11n.pt -> yolo11n.wts, torchvision:resnet18 -> resnet18.wts)")
    p.add_argument("--state-dict", help="load these weights into the model first (the torchvision or callable "
                                        "model, or the model a checkpoint pickles, made float32)")
    p.add_argument("--strip-prefix", metavar="PREFIX",
                   help="write the keys without PREFIX: 'model.' of a Lightning module's 'model.model.0...', "
                        "'module.' of DataParallel's (keys without it are left out, and said)")
    p.add_argument("--randomize-bn", action="store_true", help="random BatchNorm statistics (for testing)")
    p.add_argument("--randomize-constants", action="store_true",
                   help="random values in [0.5, 1.5) for every tensor whose values are all equal (initial norms, "
                        "zero biases, 1e-6 layer scales), so `netdef verify` sees every weight at work (for testing)")
    add_blocks_option(p)  # a checkpoint's rows of blocks of one's own: the hints name the commands that build them
    p.add_argument("--seed", type=number("--seed"), default=0,
                   help="seeds the random initialisation of torchvision/callable models and --randomize-*: the "
                        "same seed writes the same bytes (default 0)")
    return p


def cmd_export(a: argparse.Namespace) -> int:
    from ..export import export_wts

    load_blocks(a)
    a.output = a.output or default_output(a.source)
    sd = export_wts(a.source, a.output, state_dict=a.state_dict, randomize_bn=a.randomize_bn,
                    randomize_consts=a.randomize_constants, seed=a.seed,
                    progress=sys.stderr.isatty(), strip_prefix=a.strip_prefix)
    n = sum(int(v.numel()) for v in sd.values())
    print(f"wrote {a.output}: {len(sd)} tensors, {n:,} values")
    return 0


def default_output(source: str) -> str:
    """The .wts an export of `source` writes without -o: beside a checkpoint file, else in the working folder."""
    from ..fileio import output_name

    name = output_name(source, ".wts")
    return str(Path(source).parent / name) if Path(source).is_file() else name
