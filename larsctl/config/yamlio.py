"""YAML files with line numbers, and pydantic errors as one line naming file and line.

Profiles and recipes are validated by pydantic; this module only finds where in
the file a failing field lives (``yaml.compose`` keeps every node's start mark)
and words the first error as ``<file>:<line>: <field>: <expected> (got <value>)``.
"""
from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pydantic
import yaml


class YamlFileError(ValueError):
    """A file that is not readable YAML of the expected shape (one line, file:line)."""


def load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse ``path``; return the data and the composed node tree (for line numbers)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise YamlFileError(f"{path}:1: not a UTF-8 text file") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlFileError(f"{path}:{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{path}:1: YAML syntax error: {exc}") from None
    return data, node


def require_mapping(path: Path, data: Any, node: yaml.Node | None) -> dict:
    """The top level of profiles and recipes is a mapping of field names."""
    if not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        got = "an empty file" if data is None else type(data).__name__
        raise YamlFileError(f"{path}:{line}: expected a mapping of field names (got {got})")
    return data


def line_of(node: yaml.Node | None, loc: tuple) -> int:
    """1-based line of the deepest node along ``loc`` (a pydantic error location)."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    current = node
    for part in loc:
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if key_node.value == str(part):
                    line = key_node.start_mark.line + 1
                    current = value_node
                    break
            else:
                return line  # missing key: point at the enclosing mapping
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(current.value):
                return line
            current = current.value[part]
            line = current.start_mark.line + 1
        else:
            return line  # "[key]" markers and scalars end the walk
    return line


def _field_path(loc: tuple) -> str:
    text = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def _unwrap_model(annotation: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap_model(arg)
            if found is not None:
                return found
    return None


def _model_at(model: type[pydantic.BaseModel], loc: tuple) -> type[pydantic.BaseModel]:
    """The (nested) model class that owns the last element of ``loc``."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        nested = _unwrap_model(field.annotation) if field is not None else None
        if nested is None:
            break
        model = nested
    return model


def _got(value: Any) -> str:
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, (dict, list)):
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    else:
        text = str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(error: dict, model: type[pydantic.BaseModel]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        owner = _model_at(model, error["loc"])
        return "unknown key; expected one of: " + ", ".join(owner.model_fields)
    if kind == "missing":
        return "missing required field"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if msg.startswith("Input should be "):
        text = msg.removeprefix("Input should be ")
        if text.startswith("a valid "):
            text = text.split(",")[0]  # "a valid integer, unable to parse ..." -> "a valid integer"
        for words, sign in (("greater than or equal to ", ">= "), ("less than or equal to ", "<= "),
                            ("greater than ", "> "), ("less than ", "< ")):
            text = text.replace(words, sign)
        return "expected " + text
    return msg[:1].lower() + msg[1:]


def validation_message(path: Path, node: yaml.Node | None, exc: pydantic.ValidationError,
                       model: type[pydantic.BaseModel]) -> str:
    """The error nearest the top of the file, as one line (others counted)."""
    errors = exc.errors()
    ranked = sorted(errors, key=lambda e: line_of(node, e["loc"]))
    first = ranked[0]
    line = line_of(node, first["loc"])
    text = f"{path}:{line}: {_field_path(first['loc'])}: {_expected(first, model)}"
    if first["type"] not in ("missing",) and "input" in first:
        text += f" (got {_got(first['input'])})"
    if len(errors) > 1:
        text += f" [+{len(errors) - 1} more error{'s' if len(errors) > 2 else ''}]"
    return text


def load_model(path: Path, model: type[pydantic.BaseModel], error: type[Exception]) -> Any:
    """Load ``path`` and validate it as ``model``; any problem raises ``error`` (one line)."""
    try:
        data, node = load_yaml(path)
        data = require_mapping(path, data, node)
    except YamlFileError as exc:
        raise error(str(exc)) from None
    try:
        return model.model_validate(data), node
    except pydantic.ValidationError as exc:
        raise error(validation_message(path, node, exc, model)) from None
