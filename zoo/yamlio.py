"""Reading YAML safely: ``yaml.safe_load`` semantics, plus line numbers and size limits.

Line numbers let validation errors say *where* an unknown key is.  Limits refuse the
classic hostile inputs (huge files, alias bombs) before they cost memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

MAX_YAML_BYTES = 1_000_000
MAX_ALIASES = 100


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
        aliases = _count_aliases(node, set())
        if aliases > MAX_ALIASES:
            raise ConfigError(f"{name}: {aliases} YAML aliases; more than {MAX_ALIASES} are "
                              "refused (a YAML 'billion laughs' bomb?)")
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


def _count_aliases(node, seen: set[int]) -> int:
    # An alias re-uses a node object; counting repeated visits of the same node object
    # counts alias uses without expanding them.
    if id(node) in seen:
        return 1
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        return sum(_count_aliases(k, seen) + _count_aliases(v, seen) for k, v in node.value)
    if isinstance(node, yaml.SequenceNode):
        return sum(_count_aliases(v, seen) for v in node.value)
    return 0


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
