"""Custom sizes: `zoo make PRESET DIR --set key=value` edits a preset's config.json before its checkpoint is written.

The edited config goes through the arch's own config.json checks, so a custom size is refused
exactly as a hostile checkpoint would be.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from omnimodel.errors import ConfigError

SOURCE = "--set"  # the `source` the config checks name in their errors


def parse_set(item: str) -> tuple[list[str], Any]:
    """`a.b.0.c=VALUE` as its key path and value (JSON where it parses: 4, 1e-5, true, null; else the text)."""
    key, sep, text = item.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set text_config.num_hidden_layers=4")
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return path, value


def apply_sets(config: dict, items: Iterable[str]) -> dict:
    """A copy of `config` with each `key=value` set; every key on the path must exist (no silent typos)."""
    out = copy.deepcopy(config)
    for item in items:
        path, value = parse_set(item)
        node: Any = out
        for i, part in enumerate(path):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {item}: {where}: expected an index below {len(node)}")
                part = int(part)
            elif isinstance(node, dict):
                if part not in node:
                    raise ConfigError(f"--set {item}: no key {where}; keys there: {', '.join(sorted(node))}")
            else:
                raise ConfigError(
                    f"--set {item}: {'.'.join(path[:i])} holds a value, not an object or a list"
                )
            if i == len(path) - 1:
                node[part] = value
            else:
                node = node[part]
    return out
