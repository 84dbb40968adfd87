"""Command-line options generated from a config dataclass (one option per field).

``add_config_options(parser, FitConfig, skip={"data"})`` adds ``--steps``, ``--seed``, ... with
the dataclass defaults and help text taken from the field's comment-free name; ``Literal`` fields
become choices, ``bool`` fields become ``--flag / --no-flag``. ``config_from_args`` builds the
config back from the parsed namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Literal, get_args, get_origin


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional_of(hint: Any) -> Any:
    """``T`` for a hint ``T | None`` (else None)."""
    args = get_args(hint)
    if len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return None


def add_config_options(parser: argparse.ArgumentParser, config_type: type, *, skip: set[str] = frozenset(),
                       title: str | None = None) -> None:
    hints = typing.get_type_hints(config_type)
    group = parser.add_argument_group(title or f"{config_type.__name__} settings")
    for field in dataclasses.fields(config_type):
        if field.name in skip or not field.init:
            continue
        hint = hints[field.name]
        default = field.default if field.default is not dataclasses.MISSING else None
        kwargs: dict[str, Any] = {"dest": field.name, "default": default, "help": f"(default: {default})"}
        if get_origin(hint) is Literal:
            kwargs.update(choices=list(get_args(hint)), type=type(get_args(hint)[0]))
        elif hint is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif hint in (int, float, str):
            kwargs.update(type=hint)
        elif _optional_of(hint) in (int, float, str):
            kwargs.update(type=_optional_of(hint))
        else:
            continue  # tuples and nested configs stay at their defaults
        group.add_argument(_option(field.name), **kwargs)


def config_from_args(config_type: type, args: argparse.Namespace, **fixed: Any):
    """Build ``config_type`` from parsed options (fields absent from ``args`` keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_type)
              if f.init and hasattr(args, f.name) and f.name not in fixed}
    return config_type(**values, **fixed)
