"""Class names from a checkpoint to the labels of `netdef detect` and `netdef serve`.

`netdef export` of a model that carries class names (Ultralytics' and YOLOv5's `model.names`) writes them beside
the .wts, in `WTS.names.json` (`names_sidecar`; the .wts stays a plain tensorrtx file), with the .wts's SHA-256;
`netdef build` records the names of its .wts (or of `--names`) in the engine header ("names"), `netdef refit` those
of its new .wts (`exported_names`), and detection uses the header's names unless given others (`engine_names`). A
names count other than the model's class count is an error naming both files. An export of weights without names
over a .wts removes the names file an earlier export wrote for it (`names_written_for`).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import NetdefError, OptionError, SpecError
from .fileio import (HEAD_BYTES, JSON_FILE, atomic_write, describe_head, json_kind, not_a_file, printable,
                     read_head, recognised, side_file)

NAMES_SUFFIX = ".names.json"
NAMES_FORMAT = 1
NAMES_FILE = json_kind("a netdef class names file",
                       lambda d: isinstance(d, dict) and isinstance(d.get("names"), list) and "weights_sha256" in d)


def names_sidecar(wts: str | os.PathLike) -> Path:
    """The class names file of a .wts: `weights/y.wts` -> `weights/y.wts.names.json` (a name too long for the file
    system: no such file, `fileio.SideFile`)."""
    return side_file(wts, NAMES_SUFFIX)


def model_names(model: Any) -> list[str] | None:
    """The class names a model carries (`model.names`: Ultralytics' {0: 'person', ...}, YOLOv5's list or dict), in
    class order; None without them, or where they are only the class indices (Ultralytics' default '0', '1', ...)."""
    names = getattr(model, "names", None)
    if isinstance(names, Mapping):
        names = by_index(names)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        return None
    return None if index_names(names) else list(names)


def index_names(values: Sequence[Any]) -> bool:
    """Whether class names are only the class indices '0', '1', ... (Ultralytics' default names)."""
    return [str(v) for v in values] == [str(i) for i in range(len(values))]


def by_index(names: Mapping[Any, Any]) -> list[Any] | None:
    """The values of a mapping of class indices 0..N-1 in class order ('0' keys are 0, as Ultralytics'
    check_class_names reads them; keys of mixed types too), None where its keys are not those indices."""
    index = {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in names.items()}
    if len(index) != len(names) or set(index) != set(range(len(names))):
        return None
    return [index[i] for i in range(len(names))]


def write_names_sidecar(path: str | os.PathLike, names: Sequence[str], wts: str | os.PathLike,
                        weights_sha256: str) -> None:
    """Write the class names of the .wts `wts` (whose SHA-256 is `weights_sha256`) to `path`, atomically."""
    atomic_write(path, names_document(names, wts, weights_sha256))


def names_document(names: Sequence[str], wts: str | os.PathLike, weights_sha256: str) -> bytes:
    """The names file of the class `names` of the .wts `wts`, whose SHA-256 is `weights_sha256`."""
    doc = {"format": NAMES_FORMAT, "weights": Path(wts).name, "weights_sha256": weights_sha256, "names": list(names)}
    return (json.dumps(printable(doc), indent=1, ensure_ascii=False) + "\n").encode()


def read_names_sidecar(path: str | os.PathLike) -> tuple[list[str], str]:
    """(the class names, the SHA-256 of the .wts they belong to) of a names file `netdef export` wrote."""
    doc = _names_document(path)
    return list(doc["names"]), doc["weights_sha256"]


def _names_document(path: str | os.PathLike) -> dict[str, Any]:
    """The names file `netdef export` wrote, checked: its "names" and "weights_sha256" (and "weights", the .wts's
    name, where recorded)."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except OSError as e:
        raise NetdefError(f"cannot read class names {path}: {e.strerror}") from None
    except ValueError as e:  # cut short or edited by hand: where it broke; another file: what it looks like
        head = read_head(path)
        why = f"invalid JSON: {str(e)[:200]}" if JSON_FILE.test(head) else describe_head(head)
        raise NetdefError(f"class names {path}: not JSON ({why}): export the weights again to rewrite it") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if not (valid_names(names) and isinstance(doc.get("weights_sha256"), str)):
        raise NetdefError(f"class names {path}: expected {{\"names\": [strings], \"weights_sha256\": ...}} as `netdef "
                          "export` writes it: export the weights again to rewrite it")
    return doc


def names_written_for(wts: str | os.PathLike) -> str | None:
    """The SHA-256 that the names file beside the .wts `wts` records where `netdef export` wrote it for that .wts
    (it names the .wts, or records the SHA-256 of the file there now), else None (no names file, or one of
    another file's: never removed by an export to `wts`)."""
    from .fileio import file_sha256_and_key

    path = names_sidecar(wts)
    try:
        doc = json.loads(path.read_bytes()) if path.is_file() else None
    except (ValueError, OSError):
        return None
    if not NAMES_FILE.holds(doc) or not isinstance(sha := doc["weights_sha256"], str):  # type: ignore[misc]
        return None
    if doc.get("weights") == Path(wts).name:
        return sha
    try:
        return sha if Path(wts).is_file() and file_sha256_and_key(wts)[0] == sha else None
    except OSError:
        return None


def load_names(path: str | os.PathLike) -> list[str]:
    """Class names: one per line (blank lines at the end ignored; a blank line before a name is refused: it would
    shift the labels after it), or the names of a YAML or JSON document: a list of them, an Ultralytics
    data.yaml's `names:` (a list, or a mapping of the class indices 0..N-1), a model's `names` mapping as such
    (`json.dump(model.names, f)`), or the names file `netdef export` writes (WTS.names.json). Any other YAML or
    JSON is refused: its lines ('path: coco') are no names."""
    import yaml

    kind = not_a_file(path)
    if kind:
        raise NetdefError(f"class names {path} is {kind}, not a file of names, one per line")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise NetdefError(f"cannot read class names {path}: {e}") from None
    except UnicodeDecodeError:
        raise NetdefError(f"class names {path}: not UTF-8 text ({describe_head(read_head(path))}); --names takes a "
                          "text file of the names, one per line") from None
    what = recognised(text.encode("utf-8")[:HEAD_BYTES])  # the bytes read above, not a second read
    if what not in (None, "a JSON file"):  # text of another kind (a .wts, UTF-16): its lines are no names
        raise NetdefError(f"class names {path}: it looks like {what}, not one name per line; --names takes a text "
                          "file of the names, one per line")
    try:  # JSON first: PyYAML refuses some (tab-indented, keys over 1024 characters)
        doc = json.loads(text, object_pairs_hook=_unique_keys)
    except _GivenTwice as e:
        try:
            _refuse_duplicate_keys(text, path)  # with its line, where PyYAML reads the text
        except yaml.YAMLError:
            pass
        raise NetdefError(f"class names {path}: the key {e.args[0]!r} is given twice in one object: give it once")
    except ValueError:
        try:
            doc = yaml.safe_load(text)  # plain lines of names are one YAML string
        except yaml.YAMLError as e:
            _refuse_broken_document(path, text, e)
            doc = None
        if isinstance(doc, (dict, list)):
            _refuse_duplicate_keys(text, path)
    if isinstance(doc, (dict, list)):
        return _document_names(doc, path)
    names = [ln.strip() for ln in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise NetdefError(f"{path} holds no class names (one per line)")
    if "" in names:
        blank = names.index("")
        after = next(i for i in range(blank, len(names)) if names[i])  # trailing blank lines are gone
        raise NetdefError(f"class names {path}: line {blank + 1} is blank, before the name on line {after + 1}: "
                          "every class needs a name on its own line (a blank one would shift the labels after it)")
    return names


class _GivenTwice(Exception):
    """A key a JSON object gives twice (json keeps the last)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict; _GivenTwice for a key given twice."""
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise _GivenTwice(twice)
    return dict(pairs)


_DATA_KEYS = r"(names|nc|path|train|val|test|download|kpt_shape|flip_idx)\s*:(\s|$)"  # an Ultralytics data.yaml's


def _refuse_broken_document(path: str | os.PathLike, text: str, error: Exception) -> None:
    """A NetdefError naming the line where a YAML or JSON document of names (by its suffix, its text in brackets,
    or its first line that is no comment: a data.yaml's `names:`, `path: ...`, or a list's `- `) fails to parse:
    read as one name per line, its lines ('names:', '- cat') would become the labels."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    bracketed = text.strip()[:1] + text.strip()[-1:] in ("[]", "{}")  # a JSON list or object, not "[background]\ncat"
    if Path(path).suffix.lower() not in (".yaml", ".yml", ".json") and not (
            bracketed or first.startswith("- ") or re.match(_DATA_KEYS, first)):
        return
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    raise NetdefError(f"class names {where}: not valid YAML or JSON ({problem}): fix it, or give a text file of the "
                      "names, one per line")


def _refuse_duplicate_keys(text: str, path: str | os.PathLike) -> None:
    """A NetdefError naming `path` and the line where a key of the YAML or JSON `text` is given twice in one mapping
    (`names:` twice: a loader keeps the last silently), as an architecture YAML's is refused."""
    import yaml

    from .spec import MAX_YAML_VALUES, check_yaml_tree  # here: importing the architectures takes a moment

    try:
        check_yaml_tree(f"class names {path}", yaml.compose(text, Loader=yaml.SafeLoader),
                        limit=max(MAX_YAML_VALUES, len(text)))  # a long list of names, not expanded aliases
    except SpecError as e:
        raise NetdefError(str(e)) from None


def _document_names(doc: dict | list, path: str | os.PathLike) -> list[str]:
    """The class names of a YAML or JSON document (`load_names`), in class order; a NetdefError naming `path` and
    what it holds otherwise."""
    names = doc.get("names") if isinstance(doc, dict) else doc
    bare = by_index(doc) if isinstance(doc, dict) and "names" not in doc and doc else None
    if bare is not None:
        names = bare  # a model's names mapping, dumped as it is ({"0": "person", ...})
    if isinstance(names, dict):  # a data.yaml's {0: person, 1: car} ('0' in JSON): the indices must be 0..N-1
        ordered = by_index(names)
        if ordered is None:
            raise NetdefError(f"class names {path}: its names: mapping has the keys {shown(list(map(str, names)))}, "
                              f"not the class indices 0..{len(names) - 1}")
        names = ordered
    names = [n.strip() if isinstance(n, str) else n for n in names] if isinstance(names, list) else names
    if not valid_names(names):
        what = ("a list whose items are not all names (strings, not empty)" if isinstance(doc, list) else
                "a mapping whose names: are not all names (strings, not empty)" if "names" in doc else
                "a mapping without a names: list, nor the class indices 0..N-1 as its keys")
        raise NetdefError(f"class names {path}: YAML or JSON, {what}; --names takes names one per line, a list of "
                          "them, a data.yaml's names:, a model's names mapping or a WTS.names.json")
    return names


def check_count(names: Sequence[str], names_from: str | os.PathLike | None, nc: int | None, model_from: str,
                fix: str = "give one name per class") -> None:
    """A NetdefError naming both sources when there are not `nc` names (the model's class count; None: unknown)."""
    if nc is not None and len(names) != nc:
        raise NetdefError(f"{names_from or 'the names given'}: {len(names)} class name{'' if len(names) == 1 else 's'}"
                          f", but {model_from} holds a model of {nc} class{'' if nc == 1 else 'es'}: {fix}")


def check_given(names: Sequence[str] | None, names_from: str | os.PathLike | None) -> None:
    """An OptionError unless the class `names` a caller gives (read from `names_from`) are None or valid."""
    if names is not None and not valid_names(list(names)):
        raise OptionError(f"names {names_from or list(names)[:5]}: expected a non-empty list of non-empty strings")


def exported_names(weights: Path, sha: str, log: Callable[[str], None]) -> tuple[list[str] | None, Path | None]:
    """(the class names `netdef export` wrote beside the .wts `weights` whose SHA-256 is `sha`, their file), or
    (None, None) where there are none for these weights (an earlier export's are said on `log` and left alone)."""
    path = names_sidecar(weights)
    if not path.is_file():
        return None, None
    doc = _names_document(path)
    names = list(doc["names"])
    if doc["weights_sha256"] != sha:
        written_for = doc.get("weights")  # the .wts the export wrote
        origin = f"an earlier export to {written_for}" if isinstance(written_for, str) else "an earlier export"
        log(f"[netdef] {path} holds the class names of other weights ({origin}): not recorded; export again to "
            "renew it, or give --names")
        return None, None
    log(f"[netdef] class names from {path}: {shown(names)}")
    return names, path


def engine_names(given: Sequence[str] | None, meta: Mapping[str, Any], engine: str | os.PathLike,
                 given_from: str | os.PathLike | None = None) -> list[str]:
    """The class names detection labels with: `given` (read from `given_from`, a --names file), else those the
    engine header records, else none (labels are class indices); given ones must be one per class of the model
    the header records."""
    if given:
        check_count(given, given_from, (meta.get("model") or {}).get("nc"), str(engine))
        return list(given)
    return list(meta.get("names") or [])


def shown(names: Sequence[str], at_most: int = 5) -> str:
    """The first names, for a message: "cat, dog, fox" or "person, bicycle, car, ..."; a name with a line break or
    another control character, or a comma, quoted as Python writes it ('a\\nb'), so that it stays one name on one
    line."""
    def one(name: str) -> str:
        return repr(name) if "," in name or any(c.isspace() and c != " " or not c.isprintable() for c in name) \
            else name

    return ", ".join(map(one, names[:at_most])) + (", ..." if len(names) > at_most else "")


def valid_names(names: Any) -> bool:
    """Whether `names` is a non-empty list of non-empty strings (the engine header's "names")."""
    return type(names) is list and bool(names) and all(type(n) is str and n for n in names)
