"""Declarative checks of the config fields a checkpoint brings, before any module is built.

An arch lists the fields it reads (`Field`: key, type, range, optional) and calls `check_section`
on each JSON object; sizes that must divide one another go through `check_divides`. Every failure
is one `ConfigError` line naming the file, the key, the value and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from omnimodel.errors import ConfigError

# Caps far above any released model, low enough that a hostile value cannot make us build layers
# until memory runs out.
MAX_LAYERS = 1024
MAX_WIDTH = 1 << 17
MAX_HEADS = 1024
MAX_VOCAB = 1 << 22
MAX_POSITIONS = 1 << 22
MAX_IMAGE = 4096

_FIX = "fix config.json or re-download"


def _fix(source: str) -> str:
    """What the user changes: the JSON file `source` names (config.json, omnimodel.json, ...), or a `zoo make --set` value."""
    if source == "--set":
        return "fix the --set value"
    name = PurePath(source).name
    return f"fix {name} or re-download" if name.endswith(".json") else _FIX


@dataclass(frozen=True)
class Field:
    """One config key: its type (int, float, bool, str), an inclusive range, whether it may be absent or null."""

    key: str
    kind: type
    low: float | None = None
    high: float | None = None
    optional: bool = False  # may be absent (the reader has a default)
    nullable: bool = False  # may be JSON null


def fail(source: str, key: str, value: Any, expected: str) -> ConfigError:
    """The one-line error for `key = value` in `source`."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return ConfigError(f"{source}: {key} = {text}: expected {expected}; {_fix(source)}")


def _describe(f: Field) -> str:
    what = {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        dict: "a JSON object",
    }[f.kind]
    if f.low is not None and f.high is not None:
        return f"{what} in [{f.low:g}, {f.high:g}]"
    if f.low is not None:
        return f"{what} >= {f.low:g}"
    if f.high is not None:
        return f"{what} <= {f.high:g}"
    return what


def check_value(source: str, key: str, value: Any, f: Field) -> Any:
    """`value` if it fits `f`, else a ConfigError; ints are accepted where numbers are asked."""
    if value is None and f.nullable:
        return None
    if f.kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and value == value and value not in (float("inf"), float("-inf"))
    elif f.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, f.kind)
    if ok and f.kind in (int, float):
        ok = (f.low is None or value >= f.low) and (f.high is None or value <= f.high)
    if not ok:
        raise fail(source, key, value, _describe(f))
    return value


def require_mapping(source: str, key: str, value: Any) -> dict:
    """`value` if it is a JSON object (dict with string keys), else a ConfigError."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise fail(source, key, value, "a JSON object")
    return dict(value)


def require_list(source: str, key: str, value: Any, length: int | None = None) -> list:
    """`value` if it is a JSON array (of `length` items when given), else a ConfigError."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise fail(source, key, value, f"a list of {length} items" if length is not None else "a list")
    return value


def check_section(
    source: str,
    section: Mapping,
    fields: Iterable[Field],
    prefix: str = "",
    closed: bool = False,
) -> dict:
    """Check every listed field present in `section`; with `closed`, unknown keys are errors too.

    Missing required fields are errors; returns the checked values of the fields present.
    """
    fields = list(fields)
    known = {f.key for f in fields}
    if closed:
        for key in section:
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key {prefix}{key}: expected one of {', '.join(sorted(known))}; {_fix(source)}"
                )
    out = {}
    for f in fields:
        if f.key not in section:
            if f.optional:
                continue
            raise ConfigError(f"{source}: {prefix}{f.key} missing: expected {_describe(f)}; {_fix(source)}")
        out[f.key] = check_value(source, prefix + f.key, section[f.key], f)
    return out


def check_divides(source: str, key: str, value: int, by_key: str, by: int) -> None:
    """`value` must be a multiple of `by` (e.g. hidden_size of num_attention_heads)."""
    if by <= 0 or value % by:
        raise ConfigError(f"{source}: {key} = {value} is not divisible by {by_key} = {by}; {_fix(source)}")


def check_count_matches(source: str, key: str, declared: int, found: int, what: str) -> None:
    """A layer count in the config must match what the weights hold (`found` distinct indices)."""
    if declared != found:
        raise ConfigError(
            f"{source}: {key} = {declared} but the checkpoint's tensor names hold {found} {what}; {_fix(source)}"
        )


def check_tensors(
    source: object, expected: dict, state, implied_by: str = "config.json", fix: str = "fix config.json"
) -> None:
    """Every tensor the model built from the config expects is in `state` with its shape, and no other is.

    One-line CheckpointErrors naming `source` and the tensor; `expected` may hold meta tensors.
    """
    from omnimodel.errors import CheckpointError

    for key, ref in expected.items():
        if key not in state:
            raise CheckpointError(
                f"{source}: tensor {key} missing from the checkpoint; config.json and weights disagree"
            )
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(state[key].shape)} but {implied_by} implies {tuple(ref.shape)}; {fix}"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected tensor {unexpected[0]} ({len(unexpected)} in all); wrong model family?"
        )
