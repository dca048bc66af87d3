"""Reading YAML safely: ``yaml.safe_load`` semantics, plus line numbers and size limits.

Line numbers let validation errors say *where* an unknown key is.  Limits refuse the
classic hostile inputs (huge files, alias bombs) before they cost memory.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ConfigError

MAX_YAML_BYTES = 1_000_000
MAX_EXPANDED_NODES = 100_000


def load_yaml(source: str | Path, *, text: str | None = None) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML from a file (or ``text``); return ``(data, lines)``.

    ``lines`` maps a key path such as ``("train", "lr")`` to its 1-based line number.
    """
    name = str(source)
    if text is None:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from None
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{name} is {size} bytes; YAML files above {MAX_YAML_BYTES} "
                              "bytes are refused — is this the right file?")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {name}: {exc}") from None
    elif len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{name}: YAML text above {MAX_YAML_BYTES} bytes is refused")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        expanded = _expanded_size(node, {})
        if expanded > MAX_EXPANDED_NODES:
            raise ConfigError(f"{name}: its YAML aliases expand to {expanded:,} nodes; more "
                              f"than {MAX_EXPANDED_NODES:,} are refused (a 'billion laughs' "
                              "bomb?)")
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{name}: invalid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}
    _collect_lines(node, (), lines)
    return data, lines


def _expanded_size(node, memo: dict[int, int]) -> int:
    # An alias re-uses a node object, so the size the document would have once expanded
    # (what a consumer walking it pays) is computed per node object, memoised: no expansion.
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # guards against recursive structures
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def _collect_lines(node, path: tuple, lines: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                sub = path + (key.value,)
                lines.setdefault(sub, key.start_mark.line + 1)
                _collect_lines(value, sub, lines)


def parse_scalar(text: str) -> Any:
    """Parse a ``--set`` value as a YAML scalar/flow value (``1e-3``, ``[a, b]``, ``null``)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


# -- job trees: layering and --set ----------------------------------------------------------
def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(value)}  # params merge one level
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_path(tree: dict, dotted: str) -> dict:
    """Apply one ``a.b.c=value`` to ``tree`` (in place) and return it."""
    if "=" not in dotted:
        raise ConfigError(f"--set {dotted!r}: expected KEY=VALUE, e.g. --set train.lr=0.01")
    key, _, raw = dotted.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {dotted!r}: empty key part; write e.g. train.lr=0.01")
    node = tree
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = parse_scalar(raw)
    return tree
