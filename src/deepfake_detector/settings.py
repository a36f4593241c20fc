"""Settings declared once, as dataclass fields with their help; flags and files are made from them here.

Every configuration of the package is such a dataclass: `DetectorConfig` (loading a model),
`ServeConfig`, `RayScoringConfig`, `TrainConfig` and `HeadTrainingConfig`. A field's ``metadata`` holds
its ``help`` and, where its flag is not the plain ``--field-name`` of its type, argparse's own keywords,
the convention of transformers' `HfArgumentParser`:

- ``help``, ``choices``, ``metavar``, ``type`` (a parser such as `positive_int`), ``nargs``, ``const``:
  passed to ``add_argument``;
- ``flag``: the flag's name when it is not ``--field-name``; fields that name the same flag share it
  (``--ray-retries`` sets both of Ray's retry counts). A config read from a file has flags only for the
  fields that name one;
- ``aliases``: more names for the flag (``-o``);
- ``shorthand``: for a section of a file, the key a plain value given for the whole section sets
  (``faces: true`` is ``faces: {enabled: true}``).

The type comes from the annotation (``int | None`` reads an int; ``list[str]`` one or more strings), and a
bool field's flag switches it: ``--allow-pickle`` turns on a field that is off by default, ``--no-provenance``
turns off one that is on.

Two uses:

- a config made from flags alone (`DetectorConfig`, `ServeConfig`, `RayScoringConfig`): `add_flags`
  gives every field a flag whose default is the field's, `build_from_flags` makes the config from them;
- a config read from a YAML or JSON file (`TrainConfig`, `HeadTrainingConfig`; sections are nested
  dataclasses): `add_file_flags` adds the flags the fields name, each None unless given, and
  `load_config` reads the file, puts the flags given (`file_flag_values`) and ``KEY=VALUE``
  assignments on top, and builds the config, refusing unknown keys.

Written here rather than taken whole from a library: `HfArgumentParser` reads flat dataclasses only
(train's config has sections), adds its flags to a parser of its own rather than to a group of a
sub-command's parser, and names them ``--field_name``; jsonargparse would rename every flag
(``--data.path_column``). What this builds on: argparse for the flags, PyYAML (read with YAML 1.2
scalars) and json for the files, `dataclasses` and `typing` for the fields and their types.
"""

from __future__ import annotations

import argparse
import json
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from typing import Any

# Field metadata that is ours, not argparse's.
_OWN_KEYS = ("help", "flag", "aliases", "shorthand")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            least = "must be 0 or more" if minimum == 0 else f"must be at least {minimum}"
            raise argparse.ArgumentTypeError(f"{least}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value: 'x'"
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def float_at_least(minimum: float, what: str) -> Callable[[str], float]:
    """An argparse type: a number of at least ``minimum`` (``what`` says what the minimum means)."""

    def parse(text: str) -> float:
        value = float(text)
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} ({what}), got {value}")
        return value

    parse.__name__ = "float"
    return parse


def probability(text: str) -> float:
    """An argparse type: a number between 0 and 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a number of at least 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


# --- flags ------------------------------------------------------------------------------------------


def flag_name(item: Field) -> str:
    """The field's flag: its ``flag`` metadata, else ``--field-name``."""
    return item.metadata.get("flag") or "--" + item.name.replace("_", "-")


def flag_dest(item: Field) -> str:
    """Where argparse puts the field's flag (``--ray-actors``: ``args.ray_actors``)."""
    return flag_name(item)[2:].replace("-", "_")


def _kinds(hint: Any) -> tuple:
    """The types an annotation allows, None aside (``int | None``: ``(int,)``)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return tuple(kind for kind in (typing.get_args(hint) if union else (hint,)) if kind is not type(None))


def _section(hint: Any) -> type | None:
    """The dataclass a field holds (a section of a file), if it holds one."""
    kinds = _kinds(hint)
    return kinds[0] if len(kinds) == 1 and isinstance(kinds[0], type) and is_dataclass(kinds[0]) else None


def _is_mapping(hint: Any) -> bool:
    kinds = _kinds(hint)
    return len(kinds) == 1 and (kinds[0] is dict or typing.get_origin(kinds[0]) is dict)


def _default(item: Field) -> Any:
    if item.default is not MISSING:
        return item.default
    return item.default_factory() if item.default_factory is not MISSING else None


def _add_field(group, item: Field, hint: Any, *, default: Any, help_text: str) -> None:
    """One flag for one field (see the module docstring for how it is made)."""
    kwargs = {key: value for key, value in item.metadata.items() if key not in _OWN_KEYS}
    flag, aliases = flag_name(item), tuple(item.metadata.get("aliases", ()))
    kinds = _kinds(hint)
    if kinds == (bool,) and item.default is None:  # three states: --x, --no-x, or as stored (None)
        kwargs.update(action=argparse.BooleanOptionalAction, help=help_text)
        group.add_argument(flag, *aliases, dest=flag_dest(item), default=None, **kwargs)
        return
    if kinds == (bool,) and "nargs" not in kwargs:
        if item.default is True:
            flag = "--no-" + flag[2:]
            help_text += "; on by default, this flag turns it off"
        kwargs.update(action="store_false" if item.default is True else "store_true", help=help_text)
        group.add_argument(flag, *aliases, dest=flag_dest(item), default=default, **kwargs)
        return
    if len(kinds) == 1 and typing.get_origin(kinds[0]) is list:
        kwargs.setdefault("nargs", "+")
        kinds = typing.get_args(kinds[0])
    if "type" not in kwargs and len(kinds) == 1 and kinds[0] in (int, float, str):
        kwargs["type"] = kinds[0]
    group.add_argument(flag, *aliases, dest=flag_dest(item), default=default, help=help_text, **kwargs)


def _help(item: Field) -> str:
    return item.metadata["help"].replace("%", "%%")  # argparse formats help with %


def add_flags(
    group, cls: type, *, skip: Sequence[str] = (), custom: Mapping[str, Callable] | None = None
) -> None:
    """Adds a flag for every field of ``cls``, in order, each defaulting to the field's default.

    Args:
        group: The parser, or an argument group of it.
        cls: The config dataclass.
        skip: Fields given no flag here (the command declares a flag of the same name itself).
        custom: Field name -> ``adder(group, field)`` for a field whose flags are not one flag of its type.
    """
    custom = custom or {}
    hints = typing.get_type_hints(cls)
    own = [item for item in fields(cls) if item.name not in skip]
    sharing: dict[str, list[Field]] = {}
    for item in own:
        if item.name not in custom:
            sharing.setdefault(flag_name(item), []).append(item)
    for item in own:
        if item.name in custom:
            custom[item.name](group, item)
            continue
        shared = sharing.pop(flag_name(item), None)
        if shared is None:  # added with the first field that shares it
            continue
        default = _default(item)
        help_text = "; ".join(dict.fromkeys(_help(each) for each in shared))
        if default is not None and not isinstance(default, bool):
            help_text += "; default: %(default)s"
        _add_field(group, item, hints[item.name], default=default, help_text=help_text)


def build_from_flags(cls: type, args: argparse.Namespace, *, readers: Mapping[str, Callable] | None = None):
    """The ``cls`` the flags describe, as given: each field from its flag (a skipped field from the
    same-named flag its command declares), or ``readers[name](args)`` for a field with custom flags."""
    readers = readers or {}
    return cls(
        **{
            item.name: readers[item.name](args) if item.name in readers else getattr(args, flag_dest(item))
            for item in fields(cls)
        }
    )


def _flagged(cls: type, prefix: str = "") -> Iterator[tuple[str, Field, Any]]:
    """``(key, field, type)`` of every field of a file-read config, sections included, that names a flag."""
    hints = typing.get_type_hints(cls)
    for item in fields(cls):
        section = _section(hints[item.name])
        if section is not None:
            yield from _flagged(section, f"{prefix}{item.name}.")
        elif "flag" in item.metadata:
            yield prefix + item.name, item, hints[item.name]


def add_file_flags(group, cls: type) -> None:
    """Adds the flags that the fields of a file-read config name (sections included); each is None
    unless given, so that one left out leaves the file's value, and its help says which key it sets."""
    for key, item, hint in _flagged(cls):
        _add_field(group, item, hint, default=None, help_text=f"{_help(item)} (sets {key})")


def file_flag_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The keys (``data.path_column``) the flags given set, with their values, for `load_config`."""
    values = {key: getattr(args, flag_dest(item)) for key, item, _ in _flagged(cls)}
    return {key: value for key, value in values.items() if value is not None}


# --- files ------------------------------------------------------------------------------------------


def load_config(
    cls: type,
    path: str | Path | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
    assignments: Sequence[str] = (),
    error: type[Exception] = ValueError,
):
    """Reads ``cls`` from a YAML or JSON file, with the flags given and ``KEY=VALUE`` assignments on top.

    Args:
        cls: The config dataclass; fields that hold dataclasses are sections of the file.
        path: The file (``.json``: JSON, else YAML 1.2); None starts from the defaults.
        flags: Keys like ``data.path_column`` with their values (`file_flag_values`).
        assignments: Items like ``training.learning_rate=1e-4``, applied last; values are read as YAML.
        error: The exception raised for a bad file, key or value, with a message that names it.
    """
    values = load_settings_file(path, error=error) if path is not None else {}
    for key, value in (flags or {}).items():
        _set_nested(values, key.split("."), value, error)
    apply_assignments(values, assignments, error=error)
    try:
        return build_config(cls, values, error=error)
    except TypeError as problem:  # e.g. a section given a list where a number belongs
        raise error(f"{path or 'config'}: {problem}") from None


def load_settings_file(path: str | Path, *, error: type[Exception] = ValueError) -> dict:
    """The mapping a YAML or JSON settings file holds (an empty file: no settings)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as problem:
        raise error(f"{path}: cannot read the config ({problem.strerror or problem})") from None
    if Path(path).suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as problem:
            raise error(f"{path}: not valid JSON ({problem})") from None
    else:
        yaml = _yaml()
        try:
            values = yaml.load(text, Loader=_yaml_12_loader(yaml))
        except yaml.YAMLError as problem:
            raise error(f"{path}: not valid YAML ({problem})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise error(f"{path}: the config must be a mapping of settings, got {type(values).__name__}")
    return values


def apply_assignments(
    values: dict, assignments: Sequence[str], *, error: type[Exception] = ValueError
) -> None:
    """Sets ``section.key=value`` items (values read as YAML 1.2) into nested ``values``."""
    if not assignments:
        return
    yaml = _yaml()
    loader = _yaml_12_loader(yaml)
    for item in assignments:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            raise error(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.load(text, Loader=loader)
        except yaml.YAMLError as problem:
            raise error(f"override {item!r}: value is not valid YAML ({problem})") from None
        _set_nested(values, key.strip().split("."), value, error)


def build_config(cls: type, values: Mapping, *, error: type[Exception] = ValueError, prefix: str = ""):
    """Builds ``cls`` from nested plain values (a file's), sections included, refusing unknown keys.

    A section or mapping given as null or left empty is its default; a plain value given for a section
    with a ``shorthand`` sets that key of it.
    """
    values = dict(values)
    known = [item.name for item in fields(cls)]
    for key in values:
        if key not in known:
            raise error(f"unknown config key {prefix}{key!r}; known keys: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    for item in fields(cls):
        section, given = _section(hints[item.name]), values.get(item.name)
        if section is None and not _is_mapping(hints[item.name]):
            continue
        if not given:  # null or empty: the default
            values.pop(item.name, None)
            continue
        if section is None:
            if not isinstance(given, Mapping):
                raise error(f"{prefix}{item.name} must be a mapping, got {given!r}")
            values[item.name] = dict(given)
            continue
        if "shorthand" in item.metadata and not isinstance(given, Mapping):
            given = {item.metadata["shorthand"]: given}
        if not isinstance(given, Mapping):
            raise error(f"{prefix}{item.name} must be a mapping of settings, got {given!r}")
        values[item.name] = build_config(section, given, error=error, prefix=f"{prefix}{item.name}.")
    return cls(**values)


def _set_nested(values: dict, keys: list[str], value: Any, error: type[Exception]) -> None:
    node = values
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise error(f"cannot set {'.'.join(keys)}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def _yaml():
    from deepfake_detector.optional import require

    return require("yaml", "train")


def _yaml_12_loader(yaml):
    """PyYAML's safe loader with YAML 1.2 booleans and floats.

    YAML 1.1 reads yes/no/on/off as booleans, so ``eval_strategy: no`` would reach TrainingArguments as
    False, and it reads ``1e-4`` (no dot) as a string; YAML 1.2 keeps "no" a string and 1e-4 a number.
    """

    class Loader(yaml.SafeLoader):
        pass

    bool_tag, float_tag = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers if tag not in (bool_tag, float_tag)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    booleans = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
    Loader.add_implicit_resolver(bool_tag, booleans, list("tTfF"))
    number = r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    special = r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
    # Integers keep their own resolver, registered first, so "3" stays an int.
    Loader.add_implicit_resolver(float_tag, re.compile(f"^(?:{number}|{special})$"), list("-+0123456789."))
    return Loader
