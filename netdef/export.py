"""The gen_wts step: PyTorch weights from a checkpoint, a torchvision model or a callable -> .wts."""
from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import inspect
import os
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from . import yolov5_code
from .class_names import NAMES_FILE, index_names, model_names, names_document, names_sidecar, names_written_for, shown
from .errors import NetdefError, OptionError, raised_at
from .fileio import (CHECKPOINT_STARTS, WTS_TEXT, check_output, describe_head, not_a_file, output_name, read_head,
                     recognised, shown_path)
from .wts import WTS_FILE, write_wts

CHECKPOINT_KEYS = ("ema", "model", "state_dict", "model_state_dict")


def load_source(source: str, *, state_dict: str | None = None, log: Callable[[str], None] | None = None) -> Any:
    """A torch module or state_dict from SOURCE: a checkpoint path, `torchvision:NAME`, `pkg.module:callable` or
    `path/to/file.py:callable`, the last three with keyword arguments for the builder if wanted
    (`torchvision:resnet18(num_classes=10)`); `log` gets load_checkpoint's notice. A bad `state_dict` path is
    reported before SOURCE is loaded."""
    if state_dict:
        check_checkpoint(state_dict, records=False)  # at once; its records when it is loaded
    torch = _torch()
    exists = os.path.exists(source)
    target, kwargs = (source, {}) if exists else _call(source)
    if target.startswith("torchvision:"):
        model = _torchvision_model(target.split(":", 1)[1], kwargs, source)
        if state_dict:
            _load_into(model, load_checkpoint(state_dict, log), state_dict, source)
        return model
    path = Path(source)
    if exists or path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        ckpt = load_checkpoint(path, log)
        if state_dict:  # the checkpoint's pickled model, in float32, with these weights
            model = _module_in(ckpt, torch)
            if model is None:
                raise NetdefError(f"--state-dict {state_dict}: {source} holds weights, not a model to load them "
                                  f"into: export {state_dict} itself (`netdef export {state_dict} -o ...`)")
            model = model.float()
            _load_into(model, load_checkpoint(state_dict, log), state_dict, source)
            return model
        return ckpt
    if ":" in target:
        mod_name, _, attr = target.rpartition(":")  # my_model.py:make, C:\\models\\my_model.py:make
        try:
            if mod_name.endswith(".py"):  # a file of your own, as --blocks takes one
                from .block_modules import import_file

                if not Path(mod_name).is_file():
                    raise ImportError(f"no Python file {mod_name}")
                module = import_file(Path(mod_name))
            else:
                module = importlib.import_module(mod_name)
            fn = getattr(module, attr)
        except (ImportError, AttributeError) as e:
            raise NetdefError(f"cannot import '{source}': {e}") from None
        except Exception as e:  # noqa: BLE001  the user's module failed while importing
            raise NetdefError(f"cannot import '{source}': {type(e).__name__}: {e}{raised_at(e)}") from None
        if kwargs and (not callable(fn) or isinstance(fn, torch.nn.Module)):
            raise NetdefError(f"{source}: {attr} is a {type(fn).__name__}, not a callable to give arguments to")
        try:
            obj = fn(**kwargs) if callable(fn) and not isinstance(fn, torch.nn.Module) else fn
        except Exception as e:  # noqa: BLE001  the user's model function failed
            raise NetdefError(f"{source}: calling {attr}() raised {type(e).__name__}: {e}{raised_at(e)}") from None
        if state_dict:  # a model pickled from a script run as __main__ finds its classes in the source's module
            _load_into(obj, load_checkpoint(state_dict, log, main=module), state_dict, source)
        return obj
    raise NetdefError(f"source '{source}' is not a file, 'torchvision:NAME', 'package.module:callable' or "
                      "'file.py:callable'")


def _named(source: Any) -> str | Path:
    """What an output given as a folder is named after: the source without its builder's arguments ('model' for
    an object)."""
    if not isinstance(source, (str, Path)):
        return "model"
    return source if isinstance(source, Path) or os.path.exists(source) else _call(source)[0]


def _call(source: str) -> tuple[str, dict[str, Any]]:
    """'torchvision:resnet18(num_classes=10)' -> ('torchvision:resnet18', {'num_classes': 10}): a source's keyword
    arguments for its builder, Python literals; a source without parentheses has none."""
    m = re.fullmatch(r"(.*:[A-Za-z_][\w.]*)\((.*)\)", source, re.S)  # NAME(...) after the last ':' of a path
    if m is None:
        if re.fullmatch(r".*:[A-Za-z_][\w.]*\(.*", source, re.S):  # NAME( without its ')': cut short by the shell?
            raise NetdefError(f"source '{source}': its '(' is not closed; a builder's arguments are keyword=value with "
                              f"Python literals as values, e.g. \"torchvision:resnet18(num_classes=10)\" (quoted)")
        return source, {}
    target, args = m[1], m[2]
    problem = "not Python's keyword=value syntax"
    try:
        call = ast.parse(f"f({args})", mode="eval").body
        if isinstance(call, ast.Call) and not call.args and all(k.arg for k in call.keywords):
            kwargs = {}
            for k in call.keywords:
                problem = f"{ast.unparse(k)}: the value is no literal (quote a string: {k.arg}='...')"
                kwargs[k.arg] = ast.literal_eval(k.value)
            return target, kwargs
        problem = "keyword arguments only"
    except (SyntaxError, ValueError):
        pass
    raise NetdefError(f"source '{source}': {problem}; a builder's arguments are keyword=value with Python literals "
                      f"as values, e.g. torchvision:resnet18(num_classes=10)")


def load_checkpoint(path: str | Path, log: Callable[[str], None] | None = None, *,
                    main: ModuleType | None = None) -> Any:
    """torch.load a checkpoint; pickled models need their defining code importable. A file that holds more than
    tensors (a pickled model, Ultralytics' checkpoints) is loaded with pickle's full power, which runs code
    from the file: said on `log` first. `main`: the module whose classes stand for those a script run as
    `__main__` pickled (`torch.save(model, ...)` in train.py: train.py imported as a module)."""
    path = Path(path)
    head = check_checkpoint(path)
    torch = _torch()
    try:
        with warnings.catch_warnings():  # a first, safe attempt: what it warns of, the retry reports
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except ModuleNotFoundError as e:
        raise _missing_code(path, e) from None
    except Exception:  # noqa: BLE001  pickled model objects: retry trusting the file, as the user asked
        pass
    if not head.startswith(CHECKPOINT_STARTS):  # text, say (a YAML given by mistake): never unpickled with full power
        model_yaml = (f"; a model's YAML is built by its code: Ultralytics' \"ultralytics.nn.tasks:DetectionModel("
                      f"cfg='{path}')\" (SegmentationModel, PoseModel, ClassificationModel for the other tasks)"
                      if path.suffix in (".yaml", ".yml") else
                      "; an ONNX model holds no PyTorch module to export: give the checkpoint or the code it was "
                      "exported from (its weights' keys are the PyTorch module names netdef's rows read)"
                      if path.suffix.lower() == ".onnx" else "")
        raise NetdefError(f"cannot read checkpoint {path}: it is not a PyTorch checkpoint ({describe_head(head)}): "
                          f"torch.save writes a zip file or a pickle{model_yaml}")
    (log or _stderr)(f"[netdef] {path} does not load as tensors alone: loading it with full unpickling, which runs "
                     "code the file names (load only checkpoints you trust)")
    missing: list[str] = []  # a class of a script's __main__ not found
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_unpickling(main, missing))
    except ModuleNotFoundError as e:
        if not _yolov5_checkpoint(e):
            raise _missing_code(path, e) from None
    except Exception as e:  # noqa: BLE001
        if missing and isinstance(e, AttributeError):
            raise _main_class_error(path, missing[0], main) from None
        if head.startswith(CHECKPOINT_STARTS[1]) and "magic number" in str(e):  # pickle.dump's, not torch.save's
            raise NetdefError(f"cannot read checkpoint {path}: it is a plain pickle, not a torch.save file: load it "
                              "with pickle and torch.save what it holds (a state_dict or the model)") from None
        raise NetdefError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    try:
        obj = yolov5_code.load_repository_checkpoint(path)
    except (ImportError, AttributeError) as e:  # a class the yolov5 package lacks: not its repository's
        raise NetdefError(f"{path} pickles classes the installed yolov5 package does not have ({type(e).__name__}: "
                          f"{e}): it is not a yolov5 repository checkpoint (another project's 'models' or 'utils'), "
                          "or one of a newer repository: export it where the code that saved it is importable (or "
                          "save its state_dict there and export that)") from None
    (log or _stderr)(f"[netdef] {path} pickles YOLOv5's classes: loaded them from the installed yolov5 package, "
                     "without its plotting and data dependencies")
    return obj


def check_checkpoint(path: str | os.PathLike, *, records: bool = True) -> bytes:
    """A NetdefError unless `path` is a non-empty file that may be a checkpoint (not a .wts, an image, an engine...),
    told without unpickling it; returns its first bytes. `records`: torch.save's zip records are read and checked
    against their CRC-32 too (`_check_zip`: the whole file is read)."""
    path = Path(path)
    if path.is_dir():
        raise NetdefError(f"checkpoint {path} is a directory: give the checkpoint file")
    kind = not_a_file(path)
    if kind:
        raise NetdefError(f"checkpoint {path} is {kind}, not a file: give the checkpoint file")
    if not path.is_file():
        bare = path.parent == Path(".") and path.suffix == ".pt"  # yolo11n.pt: a name Ultralytics would download
        raise NetdefError(f"checkpoint not found: {path}" + (f" (netdef downloads nothing, unlike Ultralytics' "
                                                               f"YOLO('{path}'): give the path of the .pt file)"
                                                               if bare else ""))
    if not path.stat().st_size:
        raise NetdefError(f"checkpoint {path} is empty")
    head = read_head(path)
    what = recognised(head)
    if what and not head.startswith(CHECKPOINT_STARTS):  # torch.save writes a zip file or a pickle: never unpickled
        hint = ": it holds weights already; give it to `netdef build ARCH -w FILE`" if what == WTS_TEXT \
            else ": give the .pt/.pth file torch.save wrote"
        raise NetdefError(f"cannot read checkpoint {path} ({path.name} looks like {what}){hint}")
    if records and head.startswith(CHECKPOINT_STARTS[0]):
        _check_zip(path)
    return head


def _check_zip(path: Path) -> None:
    """A NetdefError unless every record of torch.save's zip file `path` that has a CRC-32 passes its check: torch.load
    reads changed bytes (a bad copy or disk) as weights without a word, and a cut-short file with miniz's own words.
    A record of data with CRC 0 is not checked: torch.save wrote none (`torch.serialization.set_crc32_options(False)`,
    faster saves of large checkpoints)."""
    import zipfile

    def damaged(e: Exception) -> NetdefError:
        return NetdefError(f"checkpoint {path} is damaged (its zip directory does not read: {e}): the file was cut "
                           "short or changed after torch.save wrote it; copy or save it again")

    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise damaged(e) from None
    with z:
        for record in z.infolist():
            if record.CRC == 0 and record.file_size:
                continue
            try:
                with z.open(record) as f:  # zipfile compares the CRC-32 at the record's end
                    while f.read(1 << 24):
                        pass
            except zipfile.BadZipFile as e:
                if "CRC" not in str(e):
                    raise damaged(e) from None
                raise NetdefError(f"checkpoint {path} is damaged: its record {record.filename} fails its CRC-32 check "
                                  "(the file changed after torch.save wrote it: a bad copy or disk); copy or save it "
                                  "again") from None
            except (EOFError, ValueError, OSError) as e:
                raise damaged(e) from None


def _yolov5_checkpoint(e: ModuleNotFoundError) -> bool:
    """Whether unpickling stopped at the yolov5 repository's own packages (a checkpoint its train.py saved), or at
    a plotting or data dependency the yolov5 package's model code imports (a checkpoint the package saved), and
    that package is installed: its classes then load with stand-ins for those dependencies."""
    top = (e.name or "").split(".")[0]
    importer = _importer(e) or ""
    ours = top in yolov5_code.REPOSITORY_PACKAGES or (
        top in yolov5_code.OPTIONAL_MODULES and f"{os.sep}yolov5{os.sep}" in importer)
    return ours and yolov5_code.yolov5_available()


def _missing_code(path: Path, e: ModuleNotFoundError) -> NetdefError:
    hint = ""
    if e.name in ("models", "utils"):
        hint = (" This looks like a checkpoint of Ultralytics' yolov5 repository: `pip install --no-deps "
                "yolov5==7.0.14` (netdef then takes those classes from that package; none of its other "
                "dependencies is needed), or run from a clone of the repository.")
    elif (e.name or "").startswith("ultralytics"):
        hint = (" This looks like an Ultralytics (YOLOv8/YOLO11/YOLO26) checkpoint: `pip install ultralytics` (a "
                "version that has this module; `--no-deps` suffices next to torch and PyYAML) and export again.")
    elif importer := _importer(e):  # the model's code is there, a package it imports is not
        top = e.name.split(".")[0]
        return NetdefError(f"{path}: the model's code ({importer}) imports '{e.name}', which is not installed: "
                           f"`pip install {PIP_NAMES.get(top, top)}` and try again (YOLOv5's code needs pandas, "
                           "say)")
    top = (e.name or "").split(".")[0]
    beside = path.resolve().parent
    if not hint and top and ((beside / f"{top}.py").is_file() or (beside / top / "__init__.py").is_file()):
        hint = (f" Its code, {top}, lies beside the checkpoint: run from {shown_path(str(beside))} or put that folder "
                f"on PYTHONPATH (`PYTHONPATH={shlex.quote(str(beside))} netdef ...`).")
    elif not hint and top:
        hint = (f" Install the package that provides it (`pip install {PIP_NAMES.get(top, top)}`?), or, for code of "
                f"your own, put the folder holding {top} on PYTHONPATH (or run from it).")
    return NetdefError(f"{path} pickles a model whose code is not importable (module '{e.name}' not found).{hint} "
                       "Alternatively save `model.state_dict()` where the code is available and export that (verify's "
                       "--model then takes the code: my_model.py:make).")


def _unpickling(main: ModuleType | None, missing: list[str]) -> ModuleType:
    """pickle, as torch.load's `pickle_module`, whose Unpickler finds the classes a script run as `__main__` pickled
    in `main` (where given and it has them) and adds the name of one found nowhere to `missing`."""
    import pickle

    class Unpickler(pickle.Unpickler):
        def find_class(self, module_name: str, name: str) -> Any:
            if module_name != "__main__":
                return super().find_class(module_name, name)
            try:
                if main is not None:
                    return functools.reduce(getattr, name.split("."), main)  # 'Outer.Inner': a nested class
            except AttributeError:  # not in `main`: this process's __main__, as pickle does
                pass
            try:
                return super().find_class(module_name, name)
            except AttributeError:
                missing.append(name)
                raise

    module = ModuleType("pickle")
    module.__dict__.update(vars(pickle))
    module.Unpickler = Unpickler  # type: ignore[attr-defined]
    return module


def _main_class_error(path: Path, name: str, main: ModuleType | None) -> NetdefError:
    """The error for a checkpoint pickling class `name` of a script run as `__main__` (`torch.save(model, ...)` in
    `python train.py`), which no module defines: how to export it through that script, named where a .py file in the
    working folder or the checkpoint's defines the class. `main`: the module given to find it in, which lacks it."""
    top = name.split(".")[0]
    if main is not None:
        return NetdefError(f"{path} pickles the model whole from a script run as __main__ (class {name}), and "
                           f"{getattr(main, '__file__', None) or main.__name__} does not define {top}: give the "
                           f"script that does, `netdef export SCRIPT.py:{top} --state-dict {shlex.quote(str(path))} "
                           f"-o OUT.wts`")
    scripts = _defining_scripts(top, [Path.cwd(), path.parent])
    script = shlex.quote(scripts[0]) if scripts else "SCRIPT.py"
    which = (f"{', '.join(scripts[:3])} define{'s' if len(scripts) == 1 else ''} a class {top}; " if scripts else
             f"SCRIPT.py is the script that defines {top}; ")
    return NetdefError(f"{path} pickles the model whole from a script run as __main__ (class {name}): pickle saved the "
                       f"class as `__main__.{name}`, which exists only while that script runs, so it cannot be loaded "
                       f"here. Export it through the code that defines it: `netdef export {script}:{top} --state-dict "
                       f"{shlex.quote(str(path))} -o OUT.wts` ({which}the script is imported as a module, so its "
                       f"`if __name__ == '__main__':` part does not run; a class taking arguments: "
                       f"\"{script}:{top}(num_classes=10)\"), or save `model.state_dict()` instead of the model and "
                       "export that file")


def _defining_scripts(name: str, folders: Sequence[Path], most: int = 200) -> list[str]:
    """The .py files directly in `folders` (at most `most` of each, under 1 MB) whose text defines `class NAME`,
    relative to the working folder where inside it."""
    pattern = re.compile(rf"^[ \t]*class[ \t]+{re.escape(name)}\b", re.M)
    found: dict[str, str] = {}
    for folder in folders:
        try:
            files = sorted(folder.glob("*.py"))[:most]
        except OSError:
            continue
        for file in files:
            try:
                defines = file.stat().st_size < 1 << 20 and pattern.search(file.read_text(errors="replace"))
            except OSError:
                continue
            if defines:
                real = os.path.realpath(file)
                found.setdefault(real, shown_path(real))
    return list(found.values())


PIP_NAMES = {"cv2": "opencv-python", "yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn",
             "skimage": "scikit-image"}  # import name -> the package that provides it, where they differ


def _importer(e: ModuleNotFoundError) -> str | None:
    """FILE:LINE of the code that imported the missing module while unpickling, when that is a module's own code
    (a dependency is missing); None when the pickled class's module itself is missing."""
    import traceback

    def ours(filename: str) -> bool:  # torch's unpickler, the import machinery, netdef
        parts = Path(filename).parts
        return "torch" in parts or "netdef" in parts or "importlib" in filename or filename.startswith("<frozen")

    frames = [f for f in traceback.extract_tb(e.__traceback__) if not ours(f.filename)]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


_PARAMETER_SUFFIXES = (".weight", ".bias", ".running_mean", ".running_var")  # a module's tensors' key ends


def state_dict_of(obj: Any, where: str = "source", log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The state_dict inside a module, a checkpoint dict ({'model'|'ema'|'state_dict': ...}) or a state_dict (of
    torch tensors or numpy arrays). A dict of tensors with other entries (`epoch`, `optimizer`) gives its tensors;
    `log` names the rest; a weight's key (`*.weight`, `*.bias`, ...) without a tensor is an error."""
    torch = _torch()
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        holding = [k for k in CHECKPOINT_KEYS if isinstance(obj.get(k), (Mapping, torch.nn.Module))]  # not a name
        first: NetdefError | None = None
        for n, key in enumerate(holding):  # the first that holds weights ({'model': {'depth': 50}} holds none)
            try:
                got = state_dict_of(obj[key], f"{where}['{key}']", log)
            except NetdefError as e:
                first = first or e
                continue
            others = holding[n + 1:]
            if others and log:  # a training checkpoint with both: say which weights the .wts gets
                why = " (the weights Ultralytics and YOLOv5 deploy)" if key in ("ema", "model") else ""
                log(f"[netdef] {where}: exporting '{key}'{why}, not {' or '.join(map(repr, others))}; save that one "
                    "alone to export it")
            return got
        if first is not None:
            raise first
        import numpy as np

        tensors = {k: v for k, v in obj.items() if isinstance(v, (torch.Tensor, np.ndarray))}  # numpy's: arrays
        skipped = [k for k in obj if k not in tensors]
        lost = [k for k in skipped if isinstance(k, str) and k.endswith(_PARAMETER_SUFFIXES)
                and not isinstance(obj[k], (Mapping, torch.nn.Module))]
        if tensors and lost:  # a weight's key without a tensor: left out, the .wts would lack that weight
            value = obj[lost[0]]
            raise NetdefError(f"{where}['{lost[0]}'] is {'None' if value is None else type(value).__name__}, not a "
                              f"tensor: a weight's key without its values ({len(lost)} such key(s)); give the tensor, "
                              "or leave the key out")
        if tensors:
            if skipped and log:
                log(f"[netdef] {where}: exporting its {len(tensors)} tensors; skipped {len(skipped)} entries that "
                    f"are not tensors: {', '.join(map(repr, skipped[:10]))}{', ...' if len(skipped) > 10 else ''}")
            return tensors
        nested = [k for k in skipped if isinstance(obj[k], (Mapping, torch.nn.Module))]
        empty = [f"{k!r} is {'None' if obj[k] is None else type(obj[k]).__name__}" for k in CHECKPOINT_KEYS
                 if k in obj]  # None, a name, ...
        hint = (f"; entries holding a model or a dict: {nested[:10]} (save that one alone)" if nested else
                f"; its {' and '.join(empty)}, no model: the checkpoint holds no weights (save it again with its "
                "model or state_dict)" if empty else "")
        raise NetdefError(f"{where}: a dict without tensors or one of the keys {CHECKPOINT_KEYS}; "
                          f"its keys are {list(obj)[:10]}{hint}")
    raise NetdefError(f"{where}: expected a torch.nn.Module, a checkpoint dict or a state_dict, got {type(obj).__name__}")


def randomize_batchnorm(model: Any, seed: int = 0) -> int:
    """Give every BatchNorm random statistics and affine parameters (so tests see BN folding at work); returns how
    many BatchNorm modules there were."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                count += 1
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return count


def randomize_constants(model: Any, seed: int = 0) -> list[str]:
    """Give every parameter of `model` whose values are all equal (initial LayerNorm and BatchNorm affines, zero
    biases, ConvNeXt's 1e-6 layer scales), and constant BatchNorm statistics, random values in [0.5, 1.5):
    random-weight tests then exercise every weight, as trained weights do (a mistake behind a 1e-6 layer scale is
    invisible). Other buffers (masks, fixed tables) are kept. Returns the keys changed."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    changed = []
    params = {k for k, _ in model.named_parameters()}
    with torch.no_grad():
        for key, t in model.state_dict(keep_vars=True).items():
            if key not in params and not key.endswith(("running_mean", "running_var")):
                continue
            if t.is_floating_point() and t.numel() > 1 and bool((t == t.reshape(-1)[0]).all()):
                t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64).to(t.dtype) + 0.5)
                changed.append(key)
    return changed


def export_wts(source: str | Path | Any, output: str | Path, *, state_dict: str | None = None,
               randomize_bn: bool = False, randomize_consts: bool = False, seed: int = 0, progress: bool = False,
               log: Callable[[str], None] | None = None, strip_prefix: str | None = None,
               hints: bool = True) -> dict[str, Any]:
    """Write SOURCE's weights to `output` (.wts): a torch module, a state_dict or checkpoint dict, or a source as
    the command line takes it (a checkpoint path, `torchvision:NAME`, `pkg.module:callable`). Returns the
    state_dict written. `seed` seeds PyTorch's (CPU), NumPy's and Python's global generators while the model is
    made, so a randomly initialised export (torchvision:NAME, a callable) is reproducible: the same seed writes
    the same bytes. Their states are put back afterwards (a training loop exporting each epoch keeps its own
    random stream).
    `progress` also says what is being loaded (PyTorch and a model take seconds) and shows a bar while writing.
    Messages go to `log` (default: stderr). A model that carries class names (`class_names.model_names`) has them
    written beside the .wts, to `output` + ".names.json" (`netdef build` records them in the engine). Both
    output paths are checked before SOURCE is loaded (a large checkpoint takes long; `load_source` checks `state_dict`
    first too), so a names file path netdef may not write over is refused even for a model without names (one too
    long for the file system is refused, after loading, for a model with names only). `strip_prefix`
    (--strip-prefix): the keys are written without it (`strip_key_prefix`). `hints`: say which architecture the
    weights fit and how to build it (False where the caller builds the one it knows)."""
    log = log or _stderr
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise OptionError(f"--seed {seed}: expected an integer from 0 to 2**63 - 1")
    if strip_prefix is not None and (not isinstance(strip_prefix, str) or not strip_prefix.strip(".")):
        raise OptionError(f"--strip-prefix {strip_prefix!r}: expected the keys' leading name, e.g. 'model.' or "
                          "'module.'")
    inputs = [source if isinstance(source, (str, Path)) else None, state_dict]
    check_output(output, inputs=inputs, what="the .wts output", kind=WTS_FILE,
                 name=output_name(_named(source), ".wts"))
    sidecar = names_sidecar(output)
    try:  # where the names go if the model carries some
        check_output(sidecar, inputs=[*inputs, output], what="the class names file", kind=NAMES_FILE, belongs=output)
        unnameable = None
    except OSError as e:  # a name too long for the file system: an error only for a model with names (below)
        unnameable = e
    if isinstance(source, (str, Path)):  # a Path is a checkpoint file
        if progress:
            log(f"[netdef] loading {source} with PyTorch ...")
        with seeded(seed):
            obj = load_source(str(source), state_dict=state_dict, log=log)
    else:
        obj = source
    for wanted, option in ((randomize_bn, "--randomize-bn"), (randomize_consts, "--randomize-constants")):
        if wanted and not isinstance(obj, _torch().nn.Module):
            given = f"{source} gives weights only" if isinstance(source, (str, Path)) else \
                "a state_dict is weights only"
            raise NetdefError(f"{option} re-initialises a model, so it needs a model source: torchvision:NAME or a "
                              f"callable such as \"ultralytics.nn.tasks:SegmentationModel(cfg='yolo11n-seg.yaml', "
                              f"nc=3)\"; {given} (a checkpoint's are already trained values)")
    if randomize_bn and not randomize_batchnorm(obj, seed):
        log("[netdef] note: --randomize-bn: the model has no BatchNorm, nothing changed"
            + ("" if randomize_consts else " (--randomize-constants gives constant weights such as LayerNorm's "
                                           "affines and zero biases random values)"))
    if randomize_consts:
        randomize_constants(obj, seed)
    sd = state_dict_of(obj, str(source) if isinstance(source, str) else "source", log)
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    if strip_prefix is not None:
        sd = strip_key_prefix(sd, strip_prefix, str(source) if isinstance(source, (str, Path)) else "the source", log)
    names = _names_in(obj)
    if names is None:
        _note_unread_names(obj, log)
    if names and unnameable is not None:
        why = getattr(unnameable, "reason", unnameable.strerror)  # NameTooLong's says the limit
        raise OptionError(f"the class names file {sidecar}: {why}; the model carries {len(names)} "
                          f"class names, written to OUTPUT.names.json: give a shorter -o")
    if progress:
        log(f"[netdef] writing {output}: {len(sd)} tensors ...")
    # a model without names: the names file an earlier export wrote for the .wts replaced goes with it (unless
    # these are the very bytes it names)
    recorded = None if names else names_written_for(output)
    # the names, with the SHA-256 of the bytes written (not of the file: another export's by now?), renamed with it
    removed = write_wts(output, sd, progress=progress, beside={sidecar: lambda sha: names_document(names, output, sha)}
                        if names else None, drop=None if recorded is None else {sidecar: recorded})
    if names:
        log(f"[netdef] wrote its {len(names)} class names ({shown(names)}) to {sidecar}: `netdef build` records them "
            "in the engine for `netdef detect` and `netdef serve`")
    elif removed:
        log(f"[netdef] removed {sidecar}: the class names of the weights {output} held before (this model carries "
            "none)")
    if not hints:
        return sd
    model = _module_in(obj, _torch())
    named = ultralytics_arch(model)
    if named is not None:
        checkpoint = source if isinstance(source, (str, Path)) else None
        log(f"[netdef] an Ultralytics {named[0]} model: {_build_hint(model, obj, *named, output, checkpoint)}")
    else:  # a state_dict, a torchvision model, a callable's: the architecture, where the weights fit exactly one
        from .define import fitting_architectures

        fits = fitting_architectures(sd)
        if len(fits) == 1:
            log(f"[netdef] these weights fit netdef's {fits[0]}: build it with `{build_command(fits[0], output)}`")
        firsts = {k.split(".", 1)[0] for k in sd}
        if not fits and len(firsts) == 1 and all("." in k for k in sd):  # DataParallel's module., Lightning's model.
            prefix = f"{firsts.pop()}."
            fits = fitting_architectures(strip_key_prefix(sd, prefix, "the weights", log))
            if len(fits) == 1:
                log(f"[netdef] these weights, without the prefix {prefix} of every key, fit netdef's {fits[0]}: "
                    f"export them with --strip-prefix {prefix}, then build it with "
                    f"`{build_command(fits[0], output)}`")
            elif prefix == "module.":  # the wrapper's name, never the model's: its own keys lack it
                log("[netdef] note: every key starts with module. (a DataParallel or DistributedDataParallel "
                    "model's state_dict), which the model's own keys and an architecture's rows lack: export with "
                    "--strip-prefix module. (Python: strip_prefix='module.')")
            elif isinstance(obj, Mapping) and "pytorch-lightning_version" in obj:  # the LightningModule's attribute
                log(f"[netdef] note: every key starts with {prefix} (a PyTorch Lightning checkpoint: the attribute of "
                    f"the LightningModule that holds the network), which the network's own keys lack: where your "
                    f"architecture's rows name the network's keys, export with --strip-prefix {prefix} (Python: "
                    f"strip_prefix='{prefix}')")
    return sd


def strip_key_prefix(sd: Mapping[str, Any], prefix: str, where: str,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """`sd` with `prefix` ('model.': a Lightning module's 'model.model.0.conv.weight'; a dot is added where it
    lacks one) removed from its keys; keys without it are left out and counted on `log`; a NetdefError where no key
    has it."""
    prefix = prefix if prefix.endswith(".") else prefix + "."
    kept = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not kept:
        raise NetdefError(f"--strip-prefix {prefix}: no key of {where} starts with it (its keys: "
                          f"{', '.join(list(sd)[:3])}{', ...' if len(sd) > 3 else ''})")
    others = [k for k in sd if not k.startswith(prefix)]
    if others:
        log(f"[netdef] --strip-prefix {prefix}: left out {len(others)} key(s) of {where} without it, e.g. "
            f"{', '.join(others[:3])}")
    return kept


def _note_unread_names(obj: Any, log: Callable[[str], None]) -> None:
    """Log where the model carries a `names` that is not a list of class names in class order (a mapping with gaps
    in its class indices, names that are no strings): none are recorded, and the log says so and how to give them."""
    given = next((n for m in _models_in(obj) if (n := getattr(m, "names", None))), None)
    if given is None or isinstance(given, (list, tuple, Mapping)) and index_names(
            list(given.values()) if isinstance(given, Mapping) else given):
        return  # none, or Ultralytics' default names (the class indices)
    text = repr(given)
    log(f"[netdef] the model's names ({text[:80]}{'...' if len(text) > 80 else ''}) are not class names in class "
        "order (a list of strings, or a mapping of the class indices 0..N-1): none recorded; `netdef build --names "
        "FILE` gives them")


def _models_in(obj: Any) -> list[Any]:
    """The model a source is, or those a checkpoint holds under CHECKPOINT_KEYS (None where it holds none)."""
    return [obj.get(k) for k in CHECKPOINT_KEYS] if isinstance(obj, Mapping) else [obj]


def _names_in(obj: Any) -> list[str] | None:
    """The class names of the model a source is or a checkpoint holds (its first model that has some), or None."""
    return next((names for m in _models_in(obj) if (names := model_names(m)) is not None), None)


def ultralytics_arch(model: Any) -> tuple[str, bool] | None:
    """(the architecture name an Ultralytics `model` (a checkpoint's: `_module_in`) records, e.g. yolo11s-seg from
    its YAML's file name and scale; whether netdef has it), or None for other models. YOLO26's classifiers are YOLO11's layout (their
    YAMLs are equal): named so; Ultralytics' own YOLOv5 (anchor-free YOLOv5u) is not netdef's YOLOv5 v7.0."""
    from .errors import SpecError
    from .spec import resolve_arch

    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict) or not cfg.get("yaml_file"):
        return None
    stem = Path(str(cfg["yaml_file"])).stem
    match = re.fullmatch(r"(yolov?\d+)([nslmx]?)(u?)(-[a-z0-9]+)?", stem)  # u: yolov5nu, yolov3u
    if match is None:  # yolov9t, rtdetr-l, yolov8n-seg-p6, a YAML of your own: none of netdef's names
        return _same_layout(cfg, stem) or (stem, False)
    family, task = match[1], match[4] or ""
    name = family + (match[2] or str(cfg.get("scale") or "")) + match[3] + task
    head = cfg.get("head") or [[]]
    if family == "yolov5" and "anchors" not in str(head[-1]):  # Ultralytics' anchor-free YOLOv5u
        return f"{name} (Ultralytics' anchor-free YOLOv5u)", False
    if family == "yolo26" and task == "-cls":
        name = name.replace("yolo26", "yolo11", 1)
    # a renamed copy (yolo26-pose5.yaml for a 5-keypoint model): the task its head row builds, where the name has it
    head_task = _head_task(head[-1]) or ""
    names = [name] + ([name[:len(name) - len(task)] + head_task] if head_task and task.startswith(head_task)
                      and task != head_task else [])
    for candidate in names:
        try:
            resolve_arch(candidate)
        except SpecError:
            continue
        return candidate, True
    return _same_layout(cfg, stem) or (name, False)


def _same_layout(cfg: dict, stem: str) -> tuple[str, bool] | None:
    """(netdef's architecture, True) that a renamed copy of one of Ultralytics' YAMLs (my-yolo11n.yaml,
    yolov8s-helmet.yaml) builds: the family and scale Ultralytics reads from the name, the task of the head row;
    None where the rows (`_layout_difference`), the scale's multiples or a task the name states differ."""
    from .errors import SpecError
    from .spec import resolve_arch

    found = re.search(r"(yolov?\d+)([nslmx])?", stem)
    head = (cfg.get("head") or [[]])[-1]
    task = _head_task(head)
    scale = cfg.get("scale") or (found and found[2])
    if found is None or task is None or not scale or set(re.findall(r"-(seg|pose|cls|obb)", stem)) - {task[1:]}:
        return None
    name = ("yolo11" if found[1] == "yolo26" and task == "-cls" else found[1]) + scale + task
    try:
        resolve_arch(name)
    except SpecError:
        return None
    return (name, True) if _layout_difference(cfg, name, scale) is None else None


def _layout_difference(cfg: dict, name: str, scale: str) -> str | None:
    """Where the rows of an Ultralytics model's YAML `cfg` differ from those of netdef's architecture `name` (its
    family file), or its `scale`'s multiples from the file's ("row 11 (nn.Upsample: [its row], netdef's [row])",
    'the scale'); None where they agree. The head row's arguments are compared where both are lists (nc,
    kpt_shape are names in both)."""
    import yaml

    from .spec import resolve_arch

    ours = yaml.safe_load(resolve_arch(name)[0].read_text(encoding="utf-8"))
    rows, theirs = ours["backbone"] + ours["head"], [*cfg.get("backbone", []), *cfg.get("head", [])]
    if len(rows) != len(theirs):
        return f"its {len(theirs)} rows (netdef's {len(rows)})"
    for i, (row, their) in enumerate(zip(rows, theirs)):
        if i < len(rows) - 1:
            same = row == their
        else:  # the head: netdef's YOLO26 rows name reg_max and end2end in a mapping, Ultralytics' give [nc]
            lists = len(row) > 3 and len(their) > 3 and isinstance(row[3], list) and isinstance(their[3], list)
            same = row[:3] == their[:3] and (not lists or row[3] == their[3])
        if not same:
            block = their[2] if isinstance(their, (list, tuple)) and len(their) > 2 else repr(their)
            return f"row {i} ({block}: {their!r}, netdef's {row!r})"
    if list((ours.get("scales") or {}).get(scale, [])) != list((cfg.get("scales") or {}).get(scale, [])):
        return f"scale {scale}'s multiples"
    return None


def _head_task(head: Sequence[Any]) -> str | None:
    """The task suffix an Ultralytics head row builds ("" for Detect, "-seg", "-pose", "-cls"); None for another."""
    return _HEAD_TASKS.get(str(head[2]), "" if head[2] == "Detect" else None) if len(head) > 2 else None


def build_command(arch: str, weights: str | Path) -> str:
    """`netdef build ARCH -w WEIGHTS -o STEM.engine`, paths quoted for a shell, as export's hints print it."""
    engine = Path(weights).with_suffix(".engine").name
    return f"netdef build {shlex.quote(arch)} -w {shlex.quote(str(weights))} -o {shlex.quote(engine)}"


def _build_hint(model: Any, obj: Any, name: str, known: bool, output: str | Path,
                source: str | Path | None = None) -> str:
    """How to build the Ultralytics `model` (of the source or checkpoint `obj`) of architecture `name`
    (`ultralytics_arch`) from its .wts: the command with what the
    weights do not tell (a keypoint shape their output count leaves open: 18 outputs are 6 x 3 or 9 x 2; the input
    size it was trained at, where not the family file's; the `activation:` of its YAML as --set default_act), or why
    netdef's architecture of that name does not build it (other input channels, an activation netdef lacks).
    `source`: the checkpoint's path, for the verify command (CHECKPOINT where the model came as an object)."""
    if not known:  # a name with a note ('yolov5nu (Ultralytics' anchor-free YOLOv5u)'): the note outside the quotes
        arch, _, note = name.partition(" (")
        return (f"netdef has no architecture '{arch}'{' (' + note if note else ''}"
                f"{_why_no_architecture(model.yaml, output, source, _size_option(model, obj, (640, 640)))}")
    keys = getattr(model, "state_dict", dict)().keys()  # (a stand-in of the model's YAML alone has none)
    if any(k.endswith(".conv.bias") for k in keys) and not any(k.endswith(".bn.running_mean") for k in keys):
        return (f"its BatchNorm was fused into the convolutions (Ultralytics' fuse(), a fused export: "
                f"{next(k for k in keys if k.endswith('.conv.bias'))}), and netdef's {name} reads BatchNorm: export "
                f"the checkpoint as trained, before fusing")
    from .spec import load_spec, torch_activation

    cfg = model.yaml
    spec = load_spec(name)
    family = spec.path.name
    act = str(cfg.get("activation") or "nn.SiLU()")
    sets = ""
    if act.replace(" ", "") not in ("nn.SiLU()", "torch.nn.SiLU()"):  # Conv's build parameter default_act builds it
        try:
            sets = f" --set default_act={torch_activation(act, lambda key, what: ValueError(what))}"
        except ValueError:
            return (f"its YAML sets `activation: {act}`, an activation netdef's Conv does not build (relu, "
                    f"leaky:SLOPE, ...: `netdef blocks`): netdef has no architecture for it")
    differs = _layout_difference(cfg, name, str(spec.scale))
    if differs is not None:  # its own YAML, edited (a stride, an upsampling mode): same weights, other layers
        return (f"its YAML differs from netdef's {name} ({family}) at {differs}, so that architecture would compute "
                f"something else from the same weights"
                f"{_why_no_architecture(cfg, output, source, _size_option(model, obj, (640, 640)))}")
    channels = int(cfg.get("channels", 3))
    if channels != 3:
        return (f"its input has {channels} channel(s), netdef's {name} ({family}) 3: copy {family} to "
                f"{name}-{channels}ch.yaml with `input: {{name: {spec.input_name}, shape: "
                f"{[channels, *spec.input_shape[1:]]}}}` and build that file")
    kpt = cfg.get("kpt_shape")
    sets += f" --set kpt_shape={kpt[0]},{kpt[1]}" if kpt and name.endswith("-pose") and kpt[0] * kpt[1] % 6 == 0 \
        else ""  # n x 3 and m x 2 keypoints alike
    sets += _size_option(model, obj, tuple(spec.input_shape[1:]))
    return f"build it with `{build_command(name, output)}{sets}`"


def _size_option(model: Any, obj: Any, default: tuple[int, ...]) -> str:
    """' --input-shape HxW' of the size the Ultralytics `model` (of the checkpoint `obj`) was trained at, rounded up
    to its stride as Ultralytics' check_imgsz does (500 -> 512), where not the architecture's `default` (H, W)
    (Ultralytics' own export takes the training size too); '' otherwise."""
    hw = _trained_size(model, obj)
    if hw is None:
        return ""
    stride = _max_stride(model)
    hw = tuple(-(-v // stride) * stride for v in hw)
    return f" --input-shape {hw[0]}x{hw[1]}" if hw != tuple(default) else ""


def _why_no_architecture(cfg: dict, output: str | Path, source: str | Path | None = None, size: str = "") -> str:
    """What netdef would need for an Ultralytics model it has no architecture for, from its YAML `cfg`'s rows:
    the first block netdef knowingly does not build and why, or how to build a copy of its YAML, once blocks of
    one's own (`--blocks`) build the rows netdef's blocks do not ('' where it has no rows). `size`: the
    `--input-shape` option of the size it was trained at ('' for the YAML's)."""
    from .registry import UNBUILT, get_block
    from .spec import rows_text, unknown_blocks  # importing spec registers netdef's blocks

    rows = [*cfg.get("backbone", []), *cfg.get("head", [])]
    blocks = [str(row[2]) for row in rows if isinstance(row, (list, tuple)) and len(row) > 2]
    for i, b in enumerate(blocks):
        if b in UNBUILT:
            return f": its row {i} is {b}, which netdef does not build ({UNBUILT[b]})"
    if not blocks:
        return ""
    lacking = unknown_blocks(rows)
    own = [get_block(b) for b in dict.fromkeys(blocks) if b not in lacking]
    own = sorted({shown_path(b.source_file or b.module) for b in own if not b.module.startswith("netdef.")})
    blocks_option = "".join(f" --blocks {shlex.quote(f)}" for f in own) + (" --blocks MY_BLOCKS.py" if lacking else "")
    write = (f"; its rows use blocks netdef does not have: {rows_text(lacking)}: write each as a "
             f"@netdef.registry.block function under its Ultralytics name in a module of your own "
             f"(docs/writing-blocks.md), then" if lacking else
             "; its rows are all netdef blocks" + (" and your own" if own else "") + ":")
    stem = Path(str(cfg.get("yaml_file"))).stem  # Ultralytics records the scale in it: yolov8n-ghost-p2
    scales = cfg.get("scales")
    picks = "the scale letter in the name picks the scale"
    if isinstance(scales, dict) and scales and not cfg.get("scale"):  # none in the name: Ultralytics took the first
        from .spec import _scaled_names

        first = str(next(iter(scales)))
        scaled = _scaled_names(stem, [first])[0]
        if scaled == stem:  # no digits to put the scale after (custom.yaml): the YAML's `scale:` key says it
            picks = f"with `scale: {first}` added, the scale Ultralytics took for a name without one"
        stem = scaled
    trained = f"; trained at {size.split()[-1]}" if size else ""
    model = shlex.quote(str(source)) if source else "CHECKPOINT"
    shipped = _shipped_yaml(stem, cfg)
    return (f"{write} copy Ultralytics' YAML of it" + (f" ({shipped})" if shipped else "")
            + f" to {stem}.yaml ({picks}; input 'images' at 640x640 unless its "
            f"`input:` says otherwise{trained}), check it with `netdef verify {stem}.yaml -w "
            f"{shlex.quote(str(output))} --model {model} --cpu{size}{blocks_option}` and build it with "
            f"`{build_command(stem + '.yaml', output)}{size}{blocks_option}`")


def _shipped_yaml(stem: str, cfg: Mapping[str, Any]) -> str | None:
    """Where the installed ultralytics package keeps the YAML of the model `stem` names (yolov8n-ghost-p2: its
    cfg/models/v8/yolov8-ghost-p2.yaml, the scale letter left out as Ultralytics names most files; yolov10n.yaml
    as it is), found without importing it, where its rows are those of the model's `cfg`; None otherwise (an
    edited copy: its own YAML)."""
    import importlib.util

    import yaml

    found = importlib.util.find_spec("ultralytics")
    if found is None or not found.submodule_search_locations:
        return None
    family = re.sub(r"^(yolo(?:e-)?v?\d+)[nslmx]", r"\1", stem)
    models = Path(found.submodule_search_locations[0]) / "cfg" / "models"
    for path in [*sorted(models.rglob(f"{stem}.yaml")), *sorted(models.rglob(f"{family}.yaml"))]:  # yolov10n.yaml
        try:
            shipped = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(shipped, dict) and all(shipped.get(k) == cfg.get(k) for k in ("backbone", "head")):
            return shown_path(str(path))
    return None


def _trained_size(model: Any, obj: Any) -> tuple[int, int] | None:
    """(H, W) of the `imgsz` the Ultralytics `model` (of the checkpoint `obj`) was trained at (its `args`, else the
    checkpoint's `train_args`), or None where neither records one."""
    args = getattr(model, "args", None) or (obj.get("train_args") if isinstance(obj, Mapping) else None)
    size = args.get("imgsz") if isinstance(args, Mapping) else getattr(args, "imgsz", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return int(size[0]), int(size[1])
    return None


def _max_stride(model: Any) -> int:
    """The Ultralytics `model`'s largest stride (its `stride` tensor; 64 for P6 models), at least 32."""
    try:
        return max(32, int(max(float(v) for v in getattr(model, "stride"))))
    except (TypeError, ValueError, AttributeError):
        return 32


_HEAD_TASKS = {"Segment": "-seg", "Segment26": "-seg", "Pose": "-pose", "Pose26": "-pose", "Classify": "-cls"}


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global generators a model's initialisation may draw from (PyTorch's, CUDA's included, NumPy's,
    Python's) seeded for the `with` block, and their states restored after it (CUDA's where CUDA was already
    initialised; otherwise PyTorch seeds it when it starts, as `torch.manual_seed` does)."""
    import random

    import numpy as np

    torch = _torch()
    states = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])


# torchvision models that warn (FutureWarning) when built without init_weights, which then means True
UNSET_INIT_WARNS = ("googlenet", "inception_v3")


def _torchvision_model(name: str, given: Mapping[str, Any] | None = None, source: str = "") -> Any:
    """torchvision's model NAME with its own random init: no weights, and no pretrained backbone either (the
    segmentation and detection builders default `weights_backbone` to ImageNet weights, a download); `given`: the
    builder's keyword arguments (num_classes=10, width_mult=0.5)."""
    try:
        import torchvision
    except ImportError:
        raise NetdefError("torchvision is not installed: pip install torchvision") from None
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise NetdefError(f"torchvision has no model '{name}' (e.g. resnet18, resnet50)") from None
    kwargs = {"weights_backbone": None} if "weights_backbone" in inspect.signature(builder).parameters else {}
    if name in UNSET_INIT_WARNS:  # torchvision's default said explicitly: no FutureWarning the user cannot act on
        kwargs["init_weights"] = True
    kwargs.update(given or {})
    if kwargs.get("weights") is not None or kwargs.get("weights_backbone") is not None:
        raise NetdefError(f"{source}: netdef makes torchvision models with random weights (nothing is downloaded): "
                          f"leave weights= out and give yours with --state-dict")
    kwargs.pop("weights", None)
    try:
        return builder(weights=None, **kwargs).eval()
    except (TypeError, ValueError) as e:  # an unknown or bad argument of the builder's
        raise NetdefError(f"{source or name}: torchvision's {name}() refused its arguments: {e}") from None


def _module_in(ckpt: Any, torch: Any) -> Any:
    """The model a checkpoint pickles (itself, or under 'ema'/'model'/...: the first that is a module), or None."""
    if isinstance(ckpt, torch.nn.Module):
        return ckpt
    if isinstance(ckpt, dict):
        return next((ckpt[k] for k in CHECKPOINT_KEYS if isinstance(ckpt.get(k), torch.nn.Module)), None)
    return None


def _load_into(model: Any, ckpt: Any, where: str, source: str) -> None:
    """Load the state_dict of `ckpt` (the --state-dict file `where`) into `model` (of `source`), or a NetdefError
    that says how they differ (`_misfit`) instead of PyTorch's list of every tensor."""
    sd = state_dict_of(ckpt, where)
    if not callable(getattr(model, "load_state_dict", None)):
        raise NetdefError(f"--state-dict {where}: {source} gives a {type(model).__name__}, not a torch module to load "
                          f"the weights into: give a source that makes the model (a callable returning the "
                          f"torch.nn.Module), or export {where} itself (`netdef export {where} -o OUT.wts`)")
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        how, classes = _misfit(model, sd, where)
        raise NetdefError(f"--state-dict {where} does not fit the model of {source}: {how or e}; give the checkpoint "
                          f"of the model these weights were trained as, or export them alone (`netdef export {where} "
                          f"-o OUT.wts`{': `netdef build` takes the class count from the weights' if classes else ''})"
                          ) from None


def _misfit(model: Any, sd: Mapping[str, Any], where: str, shown_keys: int = 3) -> tuple[str, bool]:
    """How the state_dict `sd` differs from `model`'s: the head's class count where it differs (an Ultralytics
    head's `nc`, the state_dict's from the last 1-D head tensor of that size, the class biases), the first
    tensors whose shapes differ with both shapes, and the keys only one of them has ('' where none differ); whether
    the class count differs."""
    own = model.state_dict()
    shapes = [(k, list(own[k].shape), list(v.shape)) for k, v in sd.items() if k in own and own[k].shape != v.shape]
    missing, extra = [k for k in own if k not in sd], [k for k in sd if k not in own]
    parts = []
    head = model.model[-1] if isinstance(getattr(model, "model", None), _torch().nn.Sequential) else None
    nc = getattr(head, "nc", None)
    if isinstance(nc, int) and head is not None and shapes:
        prefix = next((f"{name}." for name, m in model.named_modules() if m is head), "")
        counts = [b[0] for k, a, b in shapes
                  if k.startswith(prefix) and k.endswith(".bias") and a == [nc] and len(b) == 1]
        if counts:
            parts.append(f"the head's class count differs (the model's {nc}, {where}'s {counts[-1]})")
    classes = bool(parts)
    if shapes:
        first = "; ".join(f"{k}: {a} in the model, {b} in {where}" for k, a, b in shapes[:shown_keys])
        parts.append(f"{len(shapes)} tensor(s)' shapes differ ({first}{'; ...' if len(shapes) > shown_keys else ''})")
    for keys, what in ((missing, f"missing from {where}"), (extra, "not in the model")):
        if keys:
            parts.append(f"{len(keys)} key(s) {what} (e.g. {', '.join(keys[:shown_keys])}"
                         f"{', ...' if len(keys) > shown_keys else ''})")
    return ", ".join(parts), classes


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise NetdefError("exporting weights needs PyTorch: pip install torch") from None
    return torch
