"""Dataclass parameters from config dicts: unknown keys, wrong types and non-finite numbers are rejected
by name. The one checker of its kind: task parameters, model specs, training and analysis settings and
claims all go through `from_dict` (or `coerce`, for keys read off a builder's signature)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value converted to tp): ints are accepted as floats (and converted), bools are neither ints
    nor floats, NaN and infinities are not floats, lists are accepted as tuples, dicts as dataclasses
    (converted by `from_dict`)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, out = coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(tp), value
    if tp is type(None):
        return value is None, value
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            return False, value
        if origin is tuple and args and args[-1] is not Ellipsis:
            ok = len(value) == len(args) and all(coerce(v, a)[0] for v, a in zip(value, args))
        else:
            ok = all(coerce(v, args[0])[0] for v in value) if args else True
        return ok, value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return ok, float(value) if ok else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict | tp), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value  # an annotation we cannot check: let the code that uses it decide


def dataclass_in(tp: Any) -> type | None:
    """The dataclass a field holds: `tp` itself, or the one dataclass of a union such as `X | None`."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def type_name(tp: Any) -> str:
    if tp is float:
        return "a finite number"
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
        ok, value = coerce(value, tp)
        if not ok:
            raise ValueError(f"{where}.{key}={value!r}: expected {type_name(tp)}, got {type(value).__name__}")
        sub = dataclass_in(tp)
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, f"{where}.{key}")
        elif isinstance(value, list) and typing.get_origin(tp) is tuple:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
