"""Dataclass parameters from config dicts: unknown keys and wrong types are rejected by name."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _accepts(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_accepts, args, value))
        return all(_accepts(args[0], v) for v in value) if args else True
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict | tp)
    return isinstance(value, tp)


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass a field holds: `tp` itself, or the one dataclass of a union such as `X | None`."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and hasattr(tp, "__name__"):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def from_dict(cls: type[T], d: dict[str, Any], where: str) -> T:
    """Build dataclass `cls` from `d`; nested dataclass fields take dicts. Errors name `where.key`."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; expected one of {sorted(fields)}")
    kwargs = {}
    for key, value in d.items():
        tp = hints[key]
        if not _accepts(tp, value):
            raise ValueError(f"{where}.{key}={value!r}: expected {type_name(tp)}, got {type(value).__name__}")
        sub = _dataclass_in(tp)
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, f"{where}.{key}")
        elif isinstance(value, list) and typing.get_origin(tp) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
