"""Typed dataclass configs: to and from their JSON form, and the documentation of their fields.

A config is a (nested) dataclass whose fields hold the papers' defaults. Its JSON form is what
``dataclasses.asdict`` gives (tuples as lists); ``config_from_dict`` reads it back. The text a
field is documented with is the comment on its line, or the comment lines just above it; the
command line shows it as the option's help (``field_docs``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import textwrap
import tokenize
import typing
from typing import Any, TypeVar

from distill3d.atomic_files import json_default

T = TypeVar("T")


def config_to_dict(config: Any) -> dict:
    """The JSON form of a config dataclass (nested dataclasses as dicts, tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=json_default))


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (nested) config dataclass from its JSON form (lists -> tuples); unknown keys are ignored."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data or not f.init:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its documentation (comment on the field's line, else the comment lines above it)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        docs.update(_comments_of_fields(source))
    return docs


def _comments_of_fields(source: str) -> dict[str, str]:
    trailing: dict[int, str] = {}   # line -> comment after code on that line
    alone: dict[int, str] = {}      # line -> comment that is the whole line
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            text = token.string.lstrip("#").strip()
            (alone if not lines[row - 1][:col].strip() else trailing)[row] = text
    docs = {}
    body = ast.parse(source).body[0].body
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = " ".join(trailing[row] for row in range(node.lineno, node.end_lineno + 1) if row in trailing)
        if not text:
            above, row = [], node.lineno - 1
            while row in alone:
                above.insert(0, alone[row])
                row -= 1
            text = " ".join(above)
        if text:
            docs[node.target.id] = text
    return docs
