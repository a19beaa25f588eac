"""Rewrites msgspec validation errors in the API's words: a dotted field path, then the problem.

``Expected `int` >= 1 - at `$.max_tokens``` becomes ``max_tokens: Expected `int` >= 1, got `0```;
an unknown tag becomes ``messages.0.content.1.type: unknown content block type 'foo' (expected
one of: …)``, with the accepted values read from the target type itself.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import inspect

__all__ = ["describe_validation_error"]

_LOCATED = re.compile(r"^(?P<detail>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_INVALID = re.compile(r"^Invalid (?:enum )?value (?P<value>.+)$")
_NOUNS = {"content": "content block", "system": "system block"}
_GOT_LIMIT = 60

Segment = str | int


def describe_validation_error(error: msgspec.ValidationError, raw: Any, target: type) -> str:
    """The client-facing message for ``error``, raised decoding ``raw`` (the untyped JSON) as ``target``."""
    text = str(error)
    located = _LOCATED.match(text)
    detail, segments = (located["detail"], _segments(located["path"])) if located else (text, [])

    missing = _MISSING.match(detail)
    if missing:
        return f"{_dotted([*segments, missing['field']])}: Field required"
    if not segments:
        return f"request body must be a JSON object, got `{_json_kind(raw)}`"

    path = _dotted(segments)
    invalid = _INVALID.match(detail)
    if invalid:
        return f"{path}: {_describe_invalid(target, raw, segments, invalid['value'])}"
    if ", got " not in detail:
        detail += f", got `{_preview(_value_at(raw, segments))}`"
    return f"{path}: {detail}"


def _segments(path: str) -> list[Segment]:
    found: list[Segment] = []
    for match in _SEGMENT.finditer(path):
        name, index = match.group(1), match.group(2)
        found.append(name if name is not None else int(index) if index is not None else "*")
    return found


def _dotted(segments: list[Segment]) -> str:
    return ".".join(str(segment) for segment in segments)


def _describe_invalid(target: type, raw: Any, segments: list[Segment], value: str) -> str:
    parent = _type_at(inspect.type_info(target), raw, segments[:-1])
    last = segments[-1]
    tags = [
        repr(member.tag)
        for member in _members(parent)
        if isinstance(member, inspect.StructType) and member.tag_field == last
    ]
    if tags:
        names = [name for name in segments[:-1] if isinstance(name, str)]
        noun = _NOUNS.get(names[-1], names[-1]) if names else "object"
        return f"unknown {noun} {last} {value} (expected one of: {', '.join(tags)})"
    literals = [
        repr(option)
        for member in _members(_field_type(parent, raw_parent=_value_at(raw, segments[:-1]), name=last))
        if isinstance(member, inspect.LiteralType)
        for option in member.values
    ]
    if literals:
        return f"Input should be one of {', '.join(literals)}, got {value}"
    return f"Invalid value {value}"


def _type_at(node: inspect.Type, raw: Any, segments: list[Segment]) -> inspect.Type:
    """The type at ``segments``, choosing union members by what the raw JSON holds."""
    for depth, segment in enumerate(segments):
        if isinstance(segment, int):
            lists = [member for member in _members(node) if isinstance(member, inspect.ListType)]
            node = lists[0].item_type if lists else inspect.AnyType()
        else:
            node = _field_type(node, raw_parent=_value_at(raw, segments[:depth]), name=segment)
    return node


def _field_type(node: inspect.Type, *, raw_parent: Any, name: Segment) -> inspect.Type:
    struct = _pick_struct(node, raw_parent)
    if struct is None:
        return inspect.AnyType()
    for field in struct.fields:
        if field.encode_name == name:
            return field.type
    return inspect.AnyType()


def _pick_struct(node: inspect.Type, raw: Any) -> inspect.StructType | None:
    structs = [m for m in _members(node) if isinstance(m, inspect.StructType)]
    if len(structs) == 1:
        return structs[0]
    for struct in structs:
        if isinstance(raw, dict) and struct.tag_field is not None and raw.get(struct.tag_field) == struct.tag:
            return struct
    return None


def _members(node: inspect.Type) -> tuple[inspect.Type, ...]:
    return node.types if isinstance(node, inspect.UnionType) else (node,)


def _value_at(raw: Any, segments: list[Segment]) -> Any:
    value = raw
    for segment in segments:
        if isinstance(segment, int) and isinstance(value, list) and segment < len(value):
            value = value[segment]
        elif isinstance(segment, str) and isinstance(value, dict):
            value = value.get(segment)
        else:
            return None
    return value


def _preview(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= _GOT_LIMIT else text[: _GOT_LIMIT - 1] + "…"


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "str", bool: "bool", int: "int", float: "float"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)
