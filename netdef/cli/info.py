"""`netdef info`: an engine's metadata, or a summary of a .wts file."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import engine_file
from ..errors import NetdefError


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `netdef info` to the command line."""
    i = subparsers.add_parser("info", help="show an engine's metadata or a .wts summary")
    i.set_defaults(func=cmd_info)
    i.add_argument("file")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    return i


def cmd_info(a: argparse.Namespace) -> int:
    path = Path(a.file)
    if not path.is_file():
        raise NetdefError(f"no such file: {path}")
    if engine_file.is_engine_file(path):  # a damaged or cut engine too: never read as a .wts
        meta = engine_file.read_meta(path, verify=True)
        print(json.dumps(meta, indent=2) if a.json else format_engine(meta, path))
        return 0
    from ..wts import wts_summary

    s = wts_summary(path)
    print(json.dumps(s, indent=2) if a.json else format_wts(s, path))
    return 0


def format_engine(meta: dict[str, Any], path: Path) -> str:
    """What an engine is, what built it, its profiles, inputs, outputs, weights and plugins."""
    from ..options import format_profiles

    t = meta["tensorrt"]
    engine_profiles = engine_file.profiles(meta)
    lines = [f"engine {path}: {meta['arch']['name']} {meta['precision']}, built by {t['flavor']} {t['version']} "
             f"for {meta['gpu'].get('name') or 'compute capability'} {meta['gpu']['compute_capability']}",
             f"  batch profile{'s' if len(engine_profiles) > 1 else ''} {format_profiles(engine_profiles)}, "
             f"{meta['layers']} layers, built {meta['created']} in {meta['build_seconds']} s"]
    for kind in ("inputs", "outputs"):
        for io in meta[kind]:
            lines.append(f"  {kind[:-1]:6} {io['name']:12} {io['dtype']:8} {io['shape']}")
    lines.append(f"  weights {meta['weights']['path']} sha256 {meta['weights']['sha256'][:12]}")
    lines += [f"  plugin {p.get('name')}: {p.get('library')}" for p in meta.get("plugins", [])]
    return "\n".join(lines)


def format_wts(s: dict[str, Any], path: Path) -> str:
    """A .wts summary: tensor and value counts, size, the first 20 keys."""
    lines = [f"wts {path}: {s['tensors']} tensors, {s['values']:,} values, {s['size_bytes'] / 2**20:.1f} MiB"]
    lines += [f"  {name:50} {count:>10,}" for name, count in s["keys"][:20]]
    if len(s["keys"]) > 20:
        lines.append(f"  ... {len(s['keys']) - 20} more")
    return "\n".join(lines)
