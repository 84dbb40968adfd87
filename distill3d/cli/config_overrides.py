"""``--set FIELD=VALUE``: change any field of a (nested) config dataclass from the command line.

``apply_overrides(config, ["blur_probability=0.1", "pool.refresh_every=25", "net.widths=48,96,192,384"])``
returns a copy of ``config`` with those fields replaced; dots walk into nested configs. The
value is read by the field's type: int, float, str, bool (true / false), one of a ``Literal``'s
choices, ``T | None`` ("none"), or a tuple of those (comma-separated). An unknown field, a value
that does not read, or one that the config rejects is a ``UserError`` that names what is allowed.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal, Sequence, get_args, get_origin

from distill3d.errors import UserError

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def apply_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """``config`` with each ``FIELD=VALUE`` of ``overrides`` applied (a later one wins over an earlier one of
    the same field). The fields of one nested config are replaced together, so a pair that must stay in
    order (a minimum and a maximum, say) can both move in one command."""
    tree: dict[str, Any] = {}
    for text in overrides:
        path, sep, raw = text.partition("=")
        if not sep or not path.strip():
            raise UserError(f"--set {text!r}: expected FIELD=VALUE, e.g. --set blur_probability=0.1")
        node = tree
        names = path.strip().split(".")
        for name in names[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {text!r}: {name!r} is a value, not a group of settings")
        node[names[-1]] = (raw.strip(), text)
    return _replace(config, tree)


def _replace(config: Any, tree: dict[str, Any]) -> Any:
    fields = [f.name for f in dataclasses.fields(config) if f.init and f.name != "kind"]  # kind names the model
    hints = typing.get_type_hints(type(config))
    values, texts = {}, []
    for name, sub in tree.items():
        text = sub[1] if isinstance(sub, tuple) else _first_text(sub)
        texts.append(text)
        if name not in fields:
            raise UserError(f"--set {text!r}: {type(config).__name__} has no field {name!r}; "
                            f"its fields: {', '.join(fields)}")
        current = getattr(config, name)
        if isinstance(sub, dict):
            if not dataclasses.is_dataclass(current):
                raise UserError(f"--set {text!r}: {name!r} is a value, not a group of settings")
            values[name] = _replace(current, sub)
        elif dataclasses.is_dataclass(current):
            raise UserError(f"--set {text!r}: {name!r} is a group of settings; set one of its fields, "
                            f"e.g. {name}.{dataclasses.fields(current)[0].name}=...")
        else:
            values[name] = _parse(sub[0], hints[name], text)
    try:
        return dataclasses.replace(config, **values)
    except (TypeError, ValueError) as error:
        raise UserError(f"--set {' '.join(repr(t) for t in texts)}: {error}") from None


def _first_text(tree: dict[str, Any]) -> str:
    """The text of the first override under ``tree`` (for messages)."""
    first = next(iter(tree.values()))
    return first[1] if isinstance(first, tuple) else _first_text(first)


def _parse(raw: str, hint: Any, text: str) -> Any:
    """``raw`` read as a value of type ``hint``."""
    args = get_args(hint)
    if type(None) in args and len(args) == 2:  # T | None
        return None if raw.lower() == "none" else _parse(raw, next(a for a in args if a is not type(None)), text)
    if get_origin(hint) is Literal:
        choices = [str(c) for c in args]
        if raw not in choices:
            raise UserError(f"--set {text!r}: choose one of {', '.join(choices)}")
        return args[choices.index(raw)]
    if get_origin(hint) is tuple:
        items = [item.strip() for item in raw.split(",") if item.strip()]
        kinds = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(items):
            raise UserError(f"--set {text!r}: expected {len(kinds)} comma-separated values")
        return tuple(_parse(item, kind, text) for item, kind in zip(items, kinds))
    if hint is bool:
        if raw.lower() not in _TRUE + _FALSE:
            raise UserError(f"--set {text!r}: expected true or false")
        return raw.lower() in _TRUE
    if hint in (int, float, str):
        try:
            return hint(raw)
        except ValueError:
            raise UserError(f"--set {text!r}: expected {'an integer' if hint is int else 'a number'}") from None
    raise UserError(f"--set {text!r}: this field ({hint}) cannot be set with --set")
