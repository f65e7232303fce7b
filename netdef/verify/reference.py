"""The PyTorch side of `netdef verify`: the model loaded with the .wts strictly, and its modules' outputs."""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import NetdefError, WeightKeyError
from ..export import load_source
from ..network import IGNORED_KEY_SUFFIXES
from ..tools.verify import tf32_off


@dataclass
class ModuleOutputs:
    """What the forward hooks saw: each hooked module's output (float64 numpy) or why it cannot be compared."""

    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    finals: list[np.ndarray] = field(default_factory=list)  # the model's output tensors, nested tuples flattened
    calls: dict[str, int] = field(default_factory=dict)  # how often each counted module ran


def load_model(source: str) -> Any:
    """A torch module from SOURCE (as `netdef export` reads it); a bare state_dict is no model."""
    import torch

    from ..fileio import WTS_TEXT, read_head, recognised

    if os.path.isfile(source) and recognised(read_head(source)) == WTS_TEXT:
        raise NetdefError(f"--model {source} is a .wts weights file: verify builds the network from the .wts given to "
                          "-w and compares it with the PyTorch model --model gives: the checkpoint the weights were "
                          "exported from, or the model's code (torchvision:NAME, file.py:callable)")
    model = load_source(source)
    if isinstance(model, Mapping):
        for key in ("ema", "model"):  # a checkpoint holding a pickled model
            if isinstance(model.get(key), torch.nn.Module):
                model = model[key]
                break
    if not isinstance(model, torch.nn.Module):
        kind = type(model).__name__
        what = f"a mapping of type {kind} (weights without the model's code)" if isinstance(model, Mapping) else \
            f"an object of type {kind}"
        raise NetdefError(f"--model {source}: gives {what}, not a torch.nn.Module; verify needs the model's code: "
                          f"torchvision:NAME, package.module:callable or file.py:callable (a function returning the "
                          f"model, e.g. \"ultralytics.nn.tasks:DetectionModel(cfg='yolo11n.yaml', nc=3)\"), or a "
                          f"checkpoint holding the pickled model")
    return model


def model_key_difference(model_keys: Iterable[str], file_keys: Iterable[str], derived: Iterable[str] = (),
                         supplied: Iterable[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """How a model's state_dict keys and a .wts's differ, BatchNorm's counters left out: (the keys both hold, in
    the model's order; the model's the file lacks; the file's the model lacks). `derived` keys (values netdef checked
    against the others: tensorrtx's YOLOv5 anchor_grid and strides) either may lack; `supplied` ones (fixed values
    netdef makes itself: DFL's bins) the file may lack."""
    model_keys = [k for k in model_keys if not k.endswith(IGNORED_KEY_SUFFIXES)]
    file_keys = [k for k in file_keys if not k.endswith(IGNORED_KEY_SUFFIXES)]
    in_model, in_file, excused, supplied = set(model_keys), set(file_keys), set(derived), set(supplied)
    both = [k for k in model_keys if k in in_file]
    model_only = [k for k in model_keys if k not in in_file and k not in excused and k not in supplied]
    return both, model_only, [k for k in file_keys if k not in in_model and k not in excused]


def load_weights_strict(model: Any, tensors: Mapping[str, np.ndarray], where: str,
                        derived: Iterable[str] = (), supplied: Iterable[str] = ()) -> None:
    """Load the .wts arrays into `model` (made float32 where it was half precision, as trainers save checkpoints):
    its keys must be the model's state_dict keys (sizes equal), but for `derived` and `supplied` ones
    (`model_key_difference`; a supplied key the file lacks keeps the model's value)."""
    import torch

    sd = model.state_dict()
    if any(t.is_floating_point() and t.element_size() < 4 for t in sd.values()):
        sd = model.float().state_dict()  # a half-precision checkpoint: the .wts's float32 values, not rounded again
    keys, missing, unexpected = model_key_difference(sd, tensors, derived, supplied)
    if missing or unexpected:
        parts = [f"{len(missing)} model key(s) missing from it: {_few(missing)}" if missing else "",
                 f"{len(unexpected)} key(s) the model does not have: {_few(unexpected)}" if unexpected else ""]
        raise WeightKeyError(f"{where} does not fit the PyTorch model: " + "; ".join(p for p in parts if p))
    wrong = [f"{k} ({np.asarray(tensors[k]).size} values, model {tuple(sd[k].shape)})" for k in keys
             if np.asarray(tensors[k]).size != sd[k].numel()]
    if wrong:
        raise WeightKeyError(f"{where}: {len(wrong)} key(s) differ in size from the PyTorch model: {_few(wrong)}")
    state = OrderedDict((k, torch.from_numpy(np.asarray(tensors[k]).reshape(tuple(sd[k].shape))).to(sd[k].dtype))
                        for k in keys)
    state._metadata = getattr(sd, "_metadata", None)  # module versions: torchvision's MNASNet needs them
    try:
        model.load_state_dict(state, strict=False)
    except Exception as e:  # noqa: BLE001  a module's own loading code (its _load_from_state_dict) is the user's
        raise NetdefError(f"{where}: the PyTorch model failed to load it: {type(e).__name__}: {e}") from e


def run_hooked(model: Any, x: np.ndarray, names: Iterable[str], *, device: str = "cpu",
               dtype: str = "float64", count: Iterable[str] = ()) -> ModuleOutputs:
    """Run `model` on `x` with forward hooks on the modules `names` (those absent are ignored); a module returning
    a tuple (MultiheadAttention's (output, weights)) is compared by its first tensor. In float64 on the CPU, or
    float32 on a GPU with TF32 off (the reference is then exact fp32). The modules `count` have their calls
    counted (`calls`)."""
    import torch

    names, count = set(names), set(count)
    seen: dict[str, list] = {}

    def hook(name: str) -> Callable[..., None]:  # a copy: a later in-place op (ReLU) changes `out`
        return lambda m, i, out: seen.setdefault(name, []).append(_first_tensor(out, torch))

    def counter(name: str) -> Callable[..., None]:
        return lambda m, i, out: seen.setdefault(name, []).append(None)

    y = _run(model, x, {name: counter(name) for name in count} | {name: hook(name) for name in names}, device, dtype)
    res = ModuleOutputs(calls={name: len(seen.get(name, ())) for name in count})
    seen = {name: outs for name, outs in seen.items() if name in names}
    for name, outs in seen.items():
        if len(outs) > 1:
            res.skipped[name] = f"module called {len(outs)} times (shared)"
        elif not isinstance(outs[0], torch.Tensor):
            res.skipped[name] = f"module returns a {type(outs[0]).__name__}"
        else:
            res.outputs[name] = outs[0].detach().cpu().double().numpy()
    res.finals = [t.detach().cpu().double().numpy() for t in _tensors(y, torch)]
    return res


def module_input(model: Any, x: np.ndarray, name: str, *, device: str = "cpu",
                 dtype: str = "float64") -> np.ndarray | None:
    """The first tensor module `name` takes when `model` runs on `x` (run again, as `run_hooked` runs it); None
    where it takes none or runs more than once."""
    import torch

    seen: list = []
    _run(model, x, {name: lambda m, args: seen.append(_first_tensor(args, torch))}, device, dtype, pre=True)
    return seen[0].detach().cpu().double().numpy() if len(seen) == 1 and isinstance(seen[0], torch.Tensor) else None


def _run(model: Any, x: np.ndarray, hooks: Mapping[str, Any], device: str, dtype: str, pre: bool = False) -> Any:
    """`model`'s output on `x` in `dtype` on `device`, each module named in `hooks` hooked with its function (a
    forward pre-hook where `pre`) for the run."""
    import torch

    handles = [(module.register_forward_pre_hook if pre else module.register_forward_hook)(hooks[name])
               for name, module in model.named_modules() if name in hooks]
    tdtype = getattr(torch, dtype)
    try:
        model = model.to(device=device, dtype=tdtype).eval()
        with tf32_off(), torch.no_grad():
            return model(torch.from_numpy(x).to(device=device, dtype=tdtype))
    except Exception as e:  # noqa: BLE001  the user's model failing on the network's input is the user's to see
        raise NetdefError(f"the PyTorch model failed on a {tuple(x.shape)} {dtype} input: {type(e).__name__}: "
                          f"{e}") from e
    finally:
        for h in handles:
            h.remove()


def _first_tensor(out: Any, torch: Any) -> Any:
    """A copy of a module's output (a later in-place op, a ReLU, would change it), or of its tuple's first tensor."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    return out.detach().clone() if isinstance(out, torch.Tensor) else out


def _tensors(y: Any, torch: Any) -> list[Any]:
    """The tensors of a model's output in order: itself, or those of a (nested) tuple, list or dict."""
    if isinstance(y, torch.Tensor):
        return [y]
    items = y.values() if isinstance(y, Mapping) else y if isinstance(y, (tuple, list)) else ()
    return [t for item in items for t in _tensors(item, torch)]


def _few(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")
