"""How a config key is declared and read: the `key(...)` field marker, the Key rows derived from
dataclass fields, and the coercion of one raw YAML value by its key's kind (runnerd/config.py
declares the keys themselves)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Literal, get_args, get_origin, get_type_hints


class ConfigError(Exception):
    """A config file that cannot be used. The message names the file and the key path."""


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    kind: str  # bool | int | number | str | list[str] | list[int] | enum
    help: str
    unit: str = ""
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False


_KEY = "runnerd.config.key"  # the dataclass field metadata that makes a field a config key
# A key's kind follows from its field's type (a Literal is an enum of its values).
_KINDS: dict[Any, str] = {bool: "bool", int: "int", float: "number", str: "str", tuple[str, ...]: "list[str]",
                          tuple[int, ...]: "list[int]"}


def key(default: Any, help: str, *, unit: str = "", minimum: float | None = None, required: bool = False) -> Any:
    """One config key, declared where its field is: `name: type = key(default, help, …)` is both the
    field of Settings or Environment and, through `keys_of`, its row in GLOBAL_KEYS or ENV_KEYS."""
    return field(metadata={_KEY: {"default": default, "help": help, "unit": unit, "minimum": minimum,
                                  "required": required}})


def keys_of(cls: type) -> tuple[Key, ...]:
    """The Key rows of a settings class, in field order (the order the docs list them in)."""
    hints = get_type_hints(cls)
    rows = []
    for f in fields(cls):
        if _KEY in f.metadata:
            hint = hints[f.name]
            choices = get_args(hint) if get_origin(hint) is Literal else ()
            rows.append(Key(f.name, kind="enum" if choices else _KINDS[hint], choices=choices, **f.metadata[_KEY]))
    return tuple(rows)


def fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _coerce(key: Key, value: Any, path: str) -> Any:
    unit = f" ({key.unit})" if key.unit else ""
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise fail(path, f"must be true or false, got {value!r}")
        return value
    if key.kind in ("int", "number"):
        if not is_number(value) or (key.kind == "int" and not float(value).is_integer()):
            want = "a whole number" if key.kind == "int" else "a number (fractions allowed, e.g. 0.25)"
            raise fail(path, f"must be {want}{unit}, got {value!r}")
        if key.minimum is not None and value < key.minimum:
            raise fail(path, f"must be at least {key.minimum}{unit}, got {value!r}")
        return int(value) if key.kind == "int" else float(value)
    if key.kind in ("str", "enum"):
        if not isinstance(value, str):
            raise fail(path, f"must be a string, got {value!r}")
        if key.kind == "enum" and value not in key.choices:
            raise fail(path, f"must be one of {', '.join(key.choices)}; got {value!r}")
        return value
    if key.kind in ("list[str]", "list[int]"):
        if not isinstance(value, list):
            raise fail(path, f"must be a list, got {value!r}")
        item_ok: Callable[[Any], bool] = (
            (lambda v: isinstance(v, str) and v != "")
            if key.kind == "list[str]"
            else (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
        )
        for i, item in enumerate(value):
            if not item_ok(item):
                want = "a non-empty string" if key.kind == "list[str]" else "a positive integer"
                raise fail(f"{path}[{i}]", f"must be {want}, got {item!r}")
        return tuple(value)
    raise AssertionError(key.kind)


def read_block(keys: tuple[Key, ...], raw: dict[str, Any], path: str) -> dict[str, Any]:
    known = {k.name for k in keys}
    for name in raw:
        if name not in known:
            hint = f"; known keys: {', '.join(sorted(known))}"
            raise fail(f"{path}{name}", f"unknown key{hint}")
    out: dict[str, Any] = {}
    for key in keys:
        if key.name in raw and raw[key.name] is not None:
            out[key.name] = _coerce(key, raw[key.name], f"{path}{key.name}")
        elif key.required:
            raise fail(f"{path}{key.name}", "is required")
        else:
            default = key.default
            out[key.name] = tuple(default) if isinstance(default, list) else default
    return out
