"""Triton Inference Server model repositories for netdef engines.

`write_repository` writes `REPO/NAME/config.pbtxt` and `REPO/NAME/VERSION/model.plan` (with its sidecar) for
Triton's TensorRT backend (`platform: "tensorrt_plan"`), and copies the plugin libraries a plugin engine needs
into `REPO/NAME/`, with the server option that loads them in `REPO/NAME/plugins.txt`.

The configuration follows the engine's metadata (`model_config`):
- An engine whose profiles start at batch 1 is a batching model: `max_batch_size` is the largest profile batch,
  dims leave the batch axis out, and the dynamic batcher prefers the profiles' OPT batches. OPT batches of 1
  are left out: the batcher runs a batch of a preferred size as soon as it can form one, so a preferred 1 would
  run every request alone. An engine whose smallest batch is above 1 cannot take the batches of 1 the batcher
  forms: it is a non-batching model (`max_batch_size: 0`, dims with the batch axis) and clients send whole
  batches.
- Multi-profile engines list every profile in each instance group: the TensorRT backend makes one execution
  context per listed profile in each instance and runs a batch on the listed profile that covers it with the
  nearest OPT batch (`GetMostOptimizedProfile`); without the field it uses profile 0 alone, which would refuse
  the batches only the other profiles cover. Triton's scheduler sends any batch to any instance, so every
  instance needs every profile.
- `--cuda-graphs` sets `optimization.cuda.graphs`: the backend then captures graphs for batch 1, the preferred
  batches and `max_batch_size` on each profile's context (a capture outside a profile's range fails with a
  logged message, not an error).
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import __version__, engine_file
from ..errors import NetdefError, OptionError
from ..fileio import ELF_START, HEAD_BYTES, FileKind, check_output, file_sha256, folder_lock, printable
from ..options import format_hw_range
from .plan import SIDECAR_FILE, library_problem, load_hints, load_plan, read_sidecar, sidecar_path, write_plan

PLATFORM = "tensorrt_plan"
BACKEND = "tensorrt"  # the backend that serves PLATFORM's plans
# the model files of Triton's other backends in a version folder (their default model file names)
OTHER_MODEL_FILES = {"model.onnx": "onnxruntime", "model.pt": "pytorch", "model.py": "python",
                     "model.savedmodel": "tensorflow", "model.graphdef": "tensorflow", "model.xml": "openvino",
                     "model.json": "vllm", "xgboost.model": "fil", "xgboost.json": "fil", "checkpoint.tl": "fil"}
PLAN_NAME = "model.plan"  # the TensorRT backend's default model file name
MAX_VERSION = 2**63 - 1  # Triton's model versions are int64
OPTIONS_NAME = "plugins.txt"
CONFIG_POLICIES = ("refuse", "keep", "replace")
DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int8": "TYPE_INT8",
              "uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_BREAKS = ';: \t\n"$`\\'  # characters of a plugin library's path that break the printed server options
_NEEDS = b" needs the TensorRT plugin libraries "  # plugins.txt's first line: "# NAME needs the TensorRT plugin ..."


def _is_options_file(head: bytes) -> bool:
    """Whether a file's first bytes are those of a plugins.txt netdef wrote (its first line may go past them)."""
    name = re.match(rb"# \S+", head)
    if name is None:
        return False
    rest = head[name.end():]
    return rest.startswith(_NEEDS) or (len(head) == HEAD_BYTES and _NEEDS.startswith(rest))


# what the model folder's plugins.txt and plugin library copies may replace: a file of their own kind only
OPTIONS_FILE = FileKind(f"netdef's server options ({OPTIONS_NAME})", _is_options_file)
LIBRARY_FILE = FileKind("a compiled library", lambda head: head.startswith(ELF_START))


class Enum(str):
    """A protobuf enum value: written without quotes in `config.pbtxt`."""


@dataclass(frozen=True)
class TritonOptions:
    """What `netdef triton` asks for besides the engine: the model's name (default: the architecture's),
    version, instances per GPU, GPUs (default: all), the batcher's queue delay and CUDA graphs."""

    name: str | None = None
    version: int = 1
    instances: int = 1
    gpus: tuple[int, ...] = ()
    max_queue_delay_us: int | None = None
    cuda_graphs: bool = False
    existing_config: str = "refuse"  # a config.pbtxt (or plugins.txt) that differs: "refuse", "keep" or "replace"

    def validate(self) -> None:
        if self.existing_config not in CONFIG_POLICIES:
            raise OptionError(f"existing_config={self.existing_config!r}: one of {', '.join(CONFIG_POLICIES)}")
        if self.name is not None and (not _NAME.fullmatch(self.name) or self.name.startswith(".")):
            raise OptionError(f"--name '{self.name}': a Triton model name is a folder name of letters, digits, "
                              "'_', '-' and '.', not starting with '.' (a hidden folder Triton would not list)")
        # the bounds are the fields' types in Triton's model_config.proto (a larger value fails to parse there)
        if not 1 <= self.version <= MAX_VERSION:
            raise OptionError(f"--version {self.version}: Triton model versions are numbers from 1 to 2^63-1")
        if not 1 <= self.instances < 2**31:
            raise OptionError(f"--instances {self.instances}: must be from 1 to 2^31-1")
        if any(not 0 <= g < 2**31 for g in self.gpus) or len(set(self.gpus)) != len(self.gpus):
            raise OptionError(f"--gpus {','.join(map(str, self.gpus))}: expected distinct GPU indices from 0 to 2^31-1")
        if self.max_queue_delay_us is not None and not 0 <= self.max_queue_delay_us < 2**64:
            raise OptionError(f"--max-queue-delay-us {self.max_queue_delay_us}: must be from 0 to 2^64-1")


def model_name(meta: dict[str, Any], opts: TritonOptions) -> str:
    """The model's name: `opts.name`, else the architecture's name made a valid folder name."""
    if opts.name is not None:
        return opts.name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str((meta.get("arch") or {}).get("name") or "model")).strip("._")
    return name or "model"


def model_config(meta: dict[str, Any], opts: TritonOptions | None = None) -> dict[str, Any]:
    """The Triton model configuration of an engine (its header, or a sidecar) as a dict whose keys and nesting
    are those of Triton's `ModelConfig` message (enum values as `Enum`)."""
    opts = opts or TritonOptions()
    opts.validate()
    profiles = engine_file.profiles(meta)
    lo, hi = min(p[0] for p in profiles), max(p[2] for p in profiles)
    batching = lo == 1
    if opts.max_queue_delay_us is not None and not batching:
        raise OptionError(f"--max-queue-delay-us: the engine's smallest batch is {lo}, so Triton serves it without "
                          "dynamic batching (a batcher forms batches from 1); rebuild with --batch 1:OPT:MAX")
    config: dict[str, Any] = {"name": model_name(meta, opts), "platform": PLATFORM,
                              "max_batch_size": hi if batching else 0,
                              "input": [_tensor(io, batching, lo, hi) for io in meta["inputs"]],
                              "output": [_tensor(io, batching, lo, hi) for io in meta["outputs"]]}
    if batching:
        batcher: dict[str, Any] = {}
        preferred = sorted({p[1] for p in profiles if p[1] > 1})
        if preferred:
            batcher["preferred_batch_size"] = preferred
        if opts.max_queue_delay_us is not None:
            batcher["max_queue_delay_microseconds"] = opts.max_queue_delay_us
        config["dynamic_batching"] = batcher
    group: dict[str, Any] = {"count": opts.instances, "kind": Enum("KIND_GPU")}
    if opts.gpus:
        group["gpus"] = list(opts.gpus)
    if len(profiles) > 1:
        group["profile"] = [str(i) for i in range(len(profiles))]
    config["instance_group"] = [group]
    if opts.cuda_graphs:
        config["optimization"] = {"cuda": {"graphs": True}}
    return config


def _tensor(io: dict[str, Any], batching: bool, lo: int, hi: int) -> dict[str, Any]:
    """One input or output: its Triton data type and dims (without the batch axis for a batching model)."""
    dtype = DATA_TYPES.get(io["dtype"])
    if dtype is None:
        raise NetdefError(f"tensor '{io['name']}' is {io['dtype']}, which Triton has no data type for")
    shape = list(io["shape"])
    if not shape:
        raise NetdefError(f"tensor '{io['name']}' is a scalar: Triton needs a batch axis or a shape")
    out: dict[str, Any] = {"name": io["name"], "data_type": Enum(dtype)}
    if not batching:
        out["dims"] = [lo if (i == 0 and d == -1 and lo == hi) else d for i, d in enumerate(shape)]
    elif len(shape) == 1:  # (B,): Triton's form of one value per batch item
        out["dims"], out["reshape"] = [1], {"shape": []}
    else:
        out["dims"] = shape[1:]
    return out


def config_text(config: dict[str, Any], comments: Sequence[str] = ()) -> str:
    """`config` in protobuf text format (Triton's config.pbtxt), after `comments` as # lines (a line break in one,
    from a file name, written as \\n: the text after it would be read as configuration)."""
    lines = [f"# {c.translate(_LINE_BREAKS)}" for c in comments]
    _render(config, "", lines)
    return "\n".join(lines) + "\n"


def _render(message: dict[str, Any], pad: str, lines: list[str]) -> None:
    for key, value in message.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{")
            _render(value, pad + "  ", lines)
            lines.append(f"{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                lines.append(f"{pad}  {{")
                _render(item, pad + "    ", lines)
                lines.append(f"{pad}  }}" + ("," if i < len(value) - 1 else ""))
            lines.append(f"{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + "".join(_CHAR.get(c) or (f"\\{ord(c):03o}" if ord(c) < 32 else c) for c in v) + '"'
    raise TypeError(f"no text format for {type(v).__name__}")


_CHAR = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_LINE_BREAKS = str.maketrans({"\n": "\\n", "\r": "\\r"})


@dataclass
class Repository:
    """What `write_repository` wrote: the model folder, its files, and how to start Triton for it."""

    model_dir: Path
    config: Path
    plan: Path
    libraries: list[Path] = field(default_factory=list)
    server_options: list[str] = field(default_factory=list)  # each one alone loads the plugin libraries
    notes: list[str] = field(default_factory=list)
    config_kept: bool = False  # an existing config.pbtxt left as it was (--keep-config), not written


def write_repository(engine: str | os.PathLike, repo: str | os.PathLike,
                     opts: TritonOptions | None = None) -> Repository:
    """Write the Triton model `REPO/NAME` for `engine` (a netdef engine, or a raw plan with its sidecar):
    config.pbtxt, VERSION/model.plan (byte-identical to the engine's plan) and its sidecar, and for a plugin
    engine the plugin libraries with `plugins.txt`. The files are written atomically and renamed together (all or
none), none over the engine."""
    opts = opts or TritonOptions()
    opts.validate()
    if not os.fspath(repo):  # Path("") is the working folder: an unset "$REPO" must not fill it with models
        raise OptionError("--repo '': give the folder of the model repository, e.g. models (. for this one)")
    if os.fspath(repo) == "-":  # as the file outputs refuse it: not a folder named '-'
        raise OptionError("--repo -: a model repository is a folder, not standard output; give its path "
                          "(./- for a folder of that name)")
    engine, repo = Path(engine), Path(repo)
    if repo.exists() and not repo.is_dir():
        raise OptionError(f"--repo {repo} is a file: give the folder of the model repository")
    def waiting() -> None:
        print(f"[netdef] waiting for another program writing into {repo} ...", file=sys.stderr, flush=True)

    with folder_lock(repo, waiting) as unlocked:  # another netdef triton's versions are checked once it is done
        res = _write_repository(engine, repo, opts)
    if unlocked:
        res.notes.append(f"written without a lock on {repo} ({unlocked}): two programs writing into it at once "
                         "could leave a config.pbtxt that does not fit the plan Triton serves")
    return res


def _write_repository(engine: Path, repo: Path, opts: TritonOptions) -> Repository:
    """`write_repository`'s work, under the repository's lock."""
    meta, plan = load_plan(engine)
    config = model_config(meta, opts)
    model_dir = repo / config["name"]
    _check_other_backend(model_dir)
    res = Repository(model_dir, model_dir / "config.pbtxt", model_dir / str(opts.version) / PLAN_NAME)
    inputs = [engine, sidecar_path(engine)]
    libraries = _plugin_libraries(meta, engine)
    for path, what, kind in [(res.config, "model configuration", None), (res.plan, "plan", engine_file.ENGINE_FILE),
                             (sidecar_path(res.plan), "sidecar", SIDECAR_FILE),
                             *((model_dir / lib.name, "plugin library", LIBRARY_FILE) for lib in libraries)]:
        check_output(path, inputs=inputs + libraries, what=what, kind=kind, belongs=model_dir)
    others = _check_other_versions(model_dir, opts, config)
    res.libraries = [model_dir / lib.name for lib in libraries]
    plugins = _model_plugins(model_dir, {opts.version: meta, **others}, opts.version, res.libraries, res.notes)
    if plugins:
        check_output(model_dir / OPTIONS_NAME, inputs=inputs, what="server options", kind=OPTIONS_FILE,
                     belongs=model_dir)
    elif (model_dir / OPTIONS_NAME).is_file():  # an earlier plugin engine's: left, but never passed for this one's
        res.notes.append(f"{model_dir / OPTIONS_NAME} (and the libraries it names) came with an earlier plugin engine: "
                         "this engine needs no plugin library; remove them unless another version of the model does")
    if opts.existing_config == "keep" and res.config.is_file():
        _check_replaced_plan(res.plan, opts, config)
        _check_kept_config(res.config, config, meta)
    later = max(others, default=0)  # Triton's default version policy serves the latest version alone
    policy = opts.existing_config == "keep" and any("version_policy" in x for x in _body(_read_or_empty(res.config)))
    if later > opts.version:
        res.notes.append(f"{model_dir} has version {later}, a later one: Triton serves only a model's latest version "
                         f"(its default version_policy), so it serves version {later}, not this plan"
                         + (", unless the kept config.pbtxt's version_policy says otherwise" if policy else "")
                         + (f": deploy it as --version {later + 1}, or" if later < MAX_VERSION else ":")
                         + f" remove {model_dir / str(later)}")
    old = file_sha256(res.plan) if res.plan.is_file() else None
    if old is not None and old != hashlib.sha256(plan).hexdigest():  # another engine's: a deployed model
        served = f": Triton serves this engine as version {opts.version} once it loads the model again" \
            if later < opts.version else ""
        res.notes.append(f"replaced {res.plan}, another plan (SHA-256 {old[:12]}...){served}; a later --version "
                         f"deploys an engine as a new version, which Triton serves instead, the old one kept on disk")

    t = meta["tensorrt"]
    if t["flavor"] != "tensorrt":
        res.notes.append(f"{engine} was built by {t['flavor']} {t['version']}: Triton's TensorRT backend runs plans of "
                         "TensorRT itself and will not load this one; build the engine with the TensorRT version of "
                         "your Triton release for serving")
    else:
        res.notes.append(f"the plan loads in TensorRT {t['version']} only (compute capability "
                         f"{meta['gpu'].get('compute_capability')}): serve it with a Triton release built on it")
    names = [str(copy.absolute()) for _, copy in plugins]
    if names:
        res.server_options = [f'--backend-config=tensorrt,plugins="{";".join(names)}"', f"LD_PRELOAD={':'.join(names)}"]
        odd = "".join(sorted({c for name in names for c in name if c in _BREAKS}))
        if odd:  # the options are printed and written, not checked: say when they cannot work as they are
            res.notes.append(f"the plugin libraries' paths hold {odd!r}: Triton splits plugins= at ';', LD_PRELOAD is "
                             "split at ':' and spaces, and a shell splits at spaces and ';' and expands '$', so the "
                             "options above do not load them as written; write the repository under a path without "
                             "these characters")
    texts = {res.config: config_text(config, _comments(meta, engine, res))}
    if names:
        texts[model_dir / OPTIONS_NAME] = _options_text(plugins, repo, res)
    texts = {path: printable(text) for path, text in texts.items()}  # file names of bytes no UTF-8 decodes: \xNN
    texts = {path: text for path, text in texts.items() if _to_write(path, text, opts.existing_config)}
    files = {copy: lib.read_bytes() for lib, copy in zip(libraries, res.libraries)}
    files |= {path: text.encode() for path, text in texts.items()}
    own = [str(copy.absolute()) for copy in res.libraries]  # this plan's sidecar: the libraries it needs itself
    plugins_here = [dict(p, library=os.path.join("..", Path(p["library"]).name)) for p in meta["plugins"]]
    write_plan(res.plan, plan, meta, source=engine, plugins=plugins_here, hints=load_hints(meta, PLAN_NAME, own),
               also=files)  # the model's files renamed together: never a new plan under the old configuration
    res.config_kept = res.config not in texts
    if res.config_kept:
        res.notes.append(f"{res.config} kept as it is (--keep-config): check that it serves {res.plan}")
    if names and model_dir / OPTIONS_NAME not in texts:
        res.notes.append(f"{model_dir / OPTIONS_NAME} kept as it is (--keep-config): the model's plans need "
                         f"{', '.join(names)}")
    return res


def _read_or_empty(path: Path) -> str:
    """The text of `path`; '' where it cannot be read (the write that follows says why)."""
    try:
        return path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError:
        return ""


def _to_write(path: Path, text: str, policy: str) -> bool:
    """Whether to write `text` to `path`: a file that differs from it beyond its # comments (edited by hand, or
    another engine's) is kept or replaced only when asked, else refused before anything is written."""
    try:
        old = path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is no difference
    except FileNotFoundError:
        return True
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(f"cannot read {path} to compare it with the new one: {e}") from None

    if _body(old) == _body(text) or policy == "replace":
        return True
    if policy == "keep":
        return False
    raise OptionError(f"{path} exists and differs from the one for this engine (edited by hand, or another engine's "
                      "settings): --keep-config adds the plan under it as it is, --replace-config writes the new one")


def _body(text: str) -> list[str]:
    """A config.pbtxt's lines without # comments and blank lines: what Triton reads."""
    return [line.rstrip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


# protobuf text format's tokens: quoted strings, # comments, names and numbers, and single punctuation
_TOKEN = re.compile(r'''"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|#[^\n]*|[\w.+-]+|\S''')


def _config_fields(text: str) -> tuple[dict[str, str], dict[str, list[str]], list[str]]:
    """A config.pbtxt's top-level scalar fields (name -> value, unquoted), the names of its inputs and outputs,
    and what does not pair in it (a brace or bracket left open, or closing nothing: read up to there)."""
    tokens = [t for t in _TOKEN.findall(text) if not t.startswith("#")]
    fields: dict[str, str] = {}
    names: dict[str, list[str]] = {"input": [], "output": []}
    stack: list[str] = []
    for i, t in enumerate(tokens):
        before = tokens[i - 1] if i else ""
        if t in ("{", "<", "["):  # a message or list of the field named before it (inside a list: the list's)
            stack.append(tokens[i - 2] if before == ":" and i > 1 else
                         stack[-1] if before in ("[", ",") and stack else before)
        elif t in ("}", ">", "]"):
            if not stack:
                return fields, names, [f"a '{t}' closes nothing"]
            stack.pop()
        elif t == ":" and i + 1 < len(tokens):
            value = tokens[i + 1].strip("\"'")
            if not stack:
                fields[before] = value
            elif before == "name" and set(stack) in ({"input"}, {"output"}):
                names[stack[0]].append(value)
    return fields, names, [f"the {{ or [ after '{stack[0]}' is not closed"] if stack else []


def _other_backend(text: str) -> str | None:
    """The top-level `platform` or `backend` field of a config.pbtxt's `text` that names another backend than
    TensorRT's, as `platform: "NAME"`; None where there is none."""
    fields = _config_fields(text)[0]
    return next((f'{key}: "{fields[key]}"' for key, own in (("platform", PLATFORM), ("backend", BACKEND))
                 if key in fields and fields[key] != own), None)


def _check_kept_config(path: Path, config: dict[str, Any], meta: dict[str, Any]) -> None:
    """--keep-config over a config.pbtxt that Triton would refuse for this engine: one whose braces or brackets do
    not pair, whose `name` is not the model folder's, whose max_batch_size the engine cannot take, or whose inputs
    and outputs are not the engine's (a config with none listed leaves them to Triton)."""
    fields, names, problems = _config_fields(_read_or_empty(path))
    if "name" in fields and fields["name"] != config["name"]:
        problems.append(f"its name \"{fields['name']}\" is not the model folder's, {config['name']}")
    batch, most = fields.get("max_batch_size"), config["max_batch_size"]
    value = None if batch is None else _pb_int(batch)
    if batch is not None and value is None:
        problems.append(f"its max_batch_size {batch} is no number")
    elif value is not None and value > most:
        lo = min(p[0] for p in engine_file.profiles(meta))
        problems.append(f"its max_batch_size {batch} is beyond the engine's largest batch, {most}" if most else
                        f"its max_batch_size {batch} has Triton batch requests from 1, and the engine's smallest "
                        f"batch is {lo} (max_batch_size: 0 serves it)")
    for kind in ("input", "output"):
        own = [io["name"] for io in meta[f"{kind}s"]]
        other = [n for n in names[kind] if n not in own]
        if other:
            problems.append(f"it lists {kind} {', '.join(other)}, which the engine lacks (its {kind}s: "
                            f"{', '.join(own)})")
    lacking = [io["name"] for io in meta["inputs"] if io["name"] not in names["input"]] if names["input"] else []
    if lacking:
        problems.append(f"it lacks the engine's input {', '.join(lacking)}")
    if problems:
        raise OptionError(f"--keep-config: {path} cannot serve this engine (Triton would refuse the model): "
                          f"{'; '.join(problems)}; mend it, or --replace-config writes the one for this engine")


def _pb_int(token: str) -> int | None:
    """An integer of protobuf text format (decimal, 0x hexadecimal, 0 octal, signed); None for another token."""
    digits = token.lower().removeprefix("-")
    base = 16 if digits.startswith("0x") else 8 if len(digits) > 1 and digits.startswith("0") else 10
    try:
        value = int(digits.removeprefix("0x") if base == 16 else digits, base)
    except ValueError:
        return None
    return -value if token.startswith("-") else value


def _check_other_backend(model_dir: Path) -> None:
    """Refuse a model folder that holds a model of another Triton backend (its config.pbtxt names another platform
    or backend, or a version folder holds another backend's model file): never written into, whatever
    --keep-config or --replace-config say, which are about configurations of TensorRT plans."""
    found = []
    named = _other_backend(_read_or_empty(model_dir / "config.pbtxt"))
    if named:
        found.append(f"{model_dir / 'config.pbtxt'} says {named}")
    files = [d / f for d in _version_dirs(model_dir) for f in OTHER_MODEL_FILES if os.path.lexists(d / f)]
    if files:
        found.append(f"{files[0]} is a model of Triton's {OTHER_MODEL_FILES[files[0].name]} backend")
    if found:
        raise OptionError(f"{model_dir} holds a model of another backend than TensorRT's ({'; '.join(found)}): "
                          f"deploy this engine as a model of its own with another --name, e.g. --name "
                          f"{model_dir.name}_trt (--keep-config and --replace-config never write into another "
                          "backend's model)")


def _version_dirs(model_dir: Path) -> list[Path]:
    """The model's version folders, by version number."""
    if not model_dir.is_dir():
        return []
    dirs = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()]
    return sorted(dirs, key=lambda d: int(d.name))


def _other_versions(model_dir: Path, version: int) -> list[Path]:
    """The plans of the model's versions other than `version`, by version number."""
    return [d / PLAN_NAME for d in _version_dirs(model_dir) if int(d.name) != version and (d / PLAN_NAME).is_file()]


def _model_plugins(model_dir: Path, metas: Mapping[int, dict[str, Any]], version: int, own: list[Path],
                   notes: list[str]) -> list[tuple[str | None, Path]]:
    """(plugin name, library copy) for every version of the model (`metas`: version -> its header or sidecar; this
    engine's is `version`, its library copies `own`), by version number, each library once: what one plugins.txt
    loads for them all. Another version's copy that is gone is left out, with a note; two library files that
    register one plugin creator are noted (a Triton process loads the first one for both)."""
    versions = {v: list(zip(m["plugins"], own)) if v == version else
                [(entry, model_dir / Path(entry["library"]).name) for entry in m["plugins"]]
                for v, m in metas.items()}
    out: list[tuple[str | None, Path]] = []
    creators: dict[tuple[Any, Any], Path] = {}
    for v in sorted(versions):
        for entry, copy in versions[v]:
            if any(copy == c for _, c in out):
                continue
            if v != version and not copy.is_file():
                notes.append(f"version {v} of {model_dir.name} needs the plugin library {copy}, which is not there "
                             "(left out of the server options): write that version again, or remove it")
                continue
            creator = (entry.get("creator"), entry.get("version"))
            if creator[0] and creators.setdefault(creator, copy) != copy:
                notes.append(f"{creators[creator].name} and {copy.name} both register plugin {creator[0]} "
                             f"version {creator[1]}: a Triton process loads the first and runs every version's plans "
                             "with it; deploy a plan of another plugin build as a model of its own (another --name)")
            out.append((entry.get("name"), copy))
    return out


def _plan_config(meta: dict[str, Any], opts: TritonOptions, name: str) -> dict[str, Any] | str:
    """The configuration netdef writes for the plan of sidecar `meta` under the model's `name` and these options,
    or why these options do not fit that plan."""
    try:
        return model_config(meta, replace(opts, name=name))
    except OptionError as e:
        return f"does not fit these options ({e})"


def _check_other_versions(model_dir: Path, opts: TritonOptions, config: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """One config.pbtxt serves every version of a model: refuse a configuration that the plans of the model's
    other versions would not fit (Triton loads the latest version by default); returns their sidecars' metadata
    by version."""
    metas = {}
    for plan in _other_versions(model_dir, opts.version):
        side = sidecar_path(plan)
        meta = read_sidecar(side) if side.is_file() else None
        other = None if meta is None else _plan_config(meta, opts, config["name"])
        if other != config:
            why = "has no sidecar to tell whether it fits this engine's configuration" if other is None else \
                other if isinstance(other, str) else "takes other inputs, outputs or batch sizes than this engine"
            d = plan.parent
            kept = opts.existing_config == "keep" and (model_dir / "config.pbtxt").is_file()
            which = "the kept config.pbtxt serves" if kept else "the config.pbtxt written now would serve"
            raise OptionError(f"{model_dir}: version {d.name}'s plan {why}, and {which} both: use another --name, "
                              f"or remove {d} first")
        metas[int(plan.parent.name)] = meta
    return metas


def _check_replaced_plan(plan: Path, opts: TritonOptions, config: dict[str, Any]) -> None:
    """--keep-config over a plan of the same version whose inputs, outputs or batch sizes differ from this
    engine's: refused where the kept config.pbtxt is the one netdef writes for that plan (it cannot serve this
    engine: Triton would refuse the model, and the plan it served would be gone); a config edited by hand is
    kept, as asked (`write_repository` notes to check it)."""
    side = sidecar_path(plan)
    if not plan.is_file() or not side.is_file():
        return
    old = _plan_config(read_sidecar(side), opts, config["name"])
    if isinstance(old, str):  # these options do not fit the old plan: the kept config is not netdef's for it
        return
    kept = plan.parent.parent / "config.pbtxt"
    try:
        text = kept.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return  # _to_write says why it cannot be read
    if old == config or _body(text) != _body(config_text(old)):
        return
    raise OptionError(f"--keep-config: {plan} takes other inputs, outputs or batch sizes than this engine, and the "
                      f"kept {kept} is the one written for it; --replace-config writes the one for this engine, "
                      f"another --name deploys this engine as a model of its own")


def _plugin_libraries(meta: dict[str, Any], engine: Path) -> list[Path]:
    """The plugin libraries the engine needs, checked to exist and to be the ones it was built with."""
    out = []
    for entry in meta["plugins"]:
        problem = library_problem(entry, engine)
        if problem:
            raise NetdefError(problem)
        out.append(Path(entry["library"]))
    return out


def _comments(meta: dict[str, Any], engine: Path, res: Repository) -> list[str]:
    t, profiles = meta["tensorrt"], engine_file.profiles(meta)
    arch = (meta.get("arch") or {}).get("name", "?")
    lines = [f"written by netdef {__version__} from {engine} ({arch} {meta.get('precision', '?')}, "
             f"{t['flavor']} {t['version']}, compute capability {(meta.get('gpu') or {}).get('compute_capability')})",
             "optimization profiles (min:opt:max batch): " + ", ".join(":".join(map(str, p)) for p in profiles)]
    hw = engine_file.hw_ranges(meta)
    if hw:  # dims -1 in the config: clients send any H, W in the range
        stride = (meta.get("model") or {}).get("stride")  # a YOLO head's: other sizes fail at run time
        lines.append("dynamic input height and width (min:opt:max HxW per profile): " + ", ".join(
            format_hw_range(r) for r in hw) + (f"; heights and widths multiples of {stride}" if stride else ""))
    if res.server_options:
        lines.append(f"needs plugin libraries: start tritonserver with {res.server_options[0]} "
                     f"(or {res.server_options[1]}); see {OPTIONS_NAME}")
    return lines


def _options_text(plugins: Sequence[tuple[str | None, Path]], repo: Path, res: Repository) -> str:
    listed = ", ".join(f"{name} ({copy.name})" for name, copy in plugins)
    lines = [f"# {res.model_dir.name}{_NEEDS.decode()}{listed}, copied beside this file.",
             "# Start Triton with one of these (paths as on this machine: change them where the repository is "
             "mounted elsewhere;",
             "# several models' plugins are joined with ';' in plugins=, ':' in LD_PRELOAD):",
             res.server_options[0], res.server_options[1],
             f"# e.g. tritonserver --model-repository={repo.absolute()} {res.server_options[0]}"]
    return "\n".join(lines) + "\n"
