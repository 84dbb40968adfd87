"""Command-line options generated from a (nested) config dataclass: one option per field.

``add_config_options(parser, Consistent3DConfig)`` adds ``--steps``, ``--seed``, ... for the
top-level fields and ``--scene.representation``, ``--cds.t-max``, ... for the fields of nested
configs, one argument group per nested config. A field of a config nested one level deep whose
name no other field shares also answers to its short name (``--representation``). The help of each option is the field's
documentation (``distill3d.configs.field_docs``) and its default as the method sets it;
``Literal`` fields become choices, ``bool`` fields ``--flag / --no-flag``, ``T | None`` fields
take ``none``. ``config_from_args`` builds the config back from what was given on the command
line, so every field left out keeps the method's default (and defaults that depend on other
fields, such as the run length, are resolved by the config itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections import Counter
from typing import Any, Literal, get_args, get_origin

from distill3d.configs import config_from_dict, config_to_dict, field_docs
from distill3d.errors import UserError


METAVARS = {int: "N", float: "X", str: "TEXT"}


@dataclasses.dataclass
class _Leaf:
    path: tuple[str, ...]   # field names from the top-level config down
    hint: Any
    default: Any
    doc: str


def _optional_of(hint: Any) -> Any:
    """``T`` for a hint ``T | None`` (else None)."""
    args = get_args(hint)
    if len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return None


def _raw_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _leaves(config_type: type, prefix: tuple[str, ...] = (), defaults: Any = None) -> list[_Leaf]:
    """The fields of ``config_type`` and of its nested configs, with the defaults ``defaults`` gives them."""
    hints, docs, out = typing.get_type_hints(config_type), field_docs(config_type), []
    for f in dataclasses.fields(config_type):
        if not f.init:
            continue
        default = getattr(defaults, f.name) if defaults is not None else _raw_default(f)
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaves(hints[f.name], prefix + (f.name,), default)
        else:
            out.append(_Leaf(prefix + (f.name,), hints[f.name], default, docs.get(f.name, "")))
    return out


def _read(kind: type):
    def read(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)
    read.__name__ = kind.__name__  # argparse names the type in its error message
    return read


def add_config_options(parser: argparse.ArgumentParser, config_type: type, *, skip: set[str] = frozenset()) -> None:
    """Options for every field of ``config_type`` but the top-level fields in ``skip``."""
    leaves = [leaf for leaf in _leaves(config_type) if leaf.path[0] not in skip]
    counts = Counter(leaf.path[-1] for leaf in leaves)
    hints = typing.get_type_hints(config_type)
    groups: dict[tuple[str, ...], argparse._ArgumentGroup] = {}
    for leaf in leaves:
        group_path = leaf.path[:-1]
        if group_path not in groups:
            title = ".".join(group_path) if group_path else "settings"
            owner = _owner(hints, group_path)
            groups[group_path] = parser.add_argument_group(title, _first_line(owner.__doc__) if group_path else None)
        names = ["--" + ".".join(p.replace("_", "-") for p in leaf.path)]
        if len(leaf.path) == 2 and counts[leaf.path[-1]] == 1:
            names.append("--" + leaf.path[-1].replace("_", "-"))
        unset = leaf.default is None or leaf.default is dataclasses.MISSING
        shown = "" if unset else f" (default: {leaf.default})"
        kwargs: dict[str, Any] = {"dest": ".".join(leaf.path), "default": argparse.SUPPRESS,
                                  "help": (leaf.doc + shown).strip().replace("%", "%%") or None}
        hint, optional = leaf.hint, _optional_of(leaf.hint)
        if get_origin(hint) is Literal:
            kwargs.update(choices=list(get_args(hint)), type=type(get_args(hint)[0]))
        elif hint is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif hint in (int, float, str):
            kwargs.update(type=hint, metavar=METAVARS[hint])
        elif optional in (int, float, str):
            kwargs.update(type=_read(optional), metavar=METAVARS[optional])
        else:
            raise TypeError(f"{'.'.join(leaf.path)}: fields of type {hint} cannot be set on the command line")
        groups[group_path].add_argument(*names, **kwargs)


def _owner(hints: dict, path: tuple[str, ...]) -> type:
    hint = None
    for name in path:
        hint = hints[name]
        hints = typing.get_type_hints(hint)
    return hint


def _first_line(doc: str | None) -> str | None:
    return doc.strip().splitlines()[0] if doc else None


def config_from_args(config_type: type, args: argparse.Namespace, **fixed: Any):
    """``config_type`` with the options given in ``args`` (and ``fixed`` top-level fields) set; the rest keep
    the defaults of ``config_type``. A value the config rejects is a ``UserError``."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config_type):
        default = _raw_default(f)
        if f.init and default is not dataclasses.MISSING:
            values[f.name] = config_to_dict(default) if dataclasses.is_dataclass(default) else default
    values.update(fixed)
    for dest, value in vars(args).items():
        path = dest.split(".")
        if path[0] not in values or (len(path) == 1 and isinstance(values[path[0]], dict)):
            continue  # not a field of this config (--out, --resume, the command's own options)
        target = values
        for name in path[:-1]:
            target = target[name]
        target[path[-1]] = value
    try:
        return config_from_dict(config_type, values)
    except (TypeError, ValueError) as error:
        if isinstance(error, UserError):
            raise
        raise UserError(f"invalid settings: {error}") from None
