"""Reading YAML safely: ``yaml.safe_load`` semantics, plus line numbers and size limits.

Line numbers let validation errors say *where* an unknown key is.  Limits refuse the
classic hostile inputs (huge files, alias bombs, 20,000-deep nesting, FIFOs and devices such
as ``/dev/zero`` given as a file) before they cost memory, time or a RecursionError.
"""
from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ConfigError

MAX_YAML_BYTES = 1_000_000
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64           # nesting levels; a job is 3 deep, PyYAML's composer recurses


def read_bounded(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a *regular* file of at most ``limit`` bytes; a :class:`ConfigError`
    otherwise.

    Opened non-blocking, so a FIFO cannot hang the open; ``fstat`` of the open file decides
    (no race with a rename), and at most ``limit + 1`` bytes are ever read, so a device or a
    file that grows while read (``/dev/zero``, ``/proc`` files) cannot make zoo read forever.
    """
    name = str(path)
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {name}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a folder" if stat.S_ISDIR(info.st_mode) else
                    "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else
                    "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
                    else "not a regular file")
            raise ConfigError(f"{what} {name} is {kind}; give the path of a regular file")
        if info.st_size > limit:
            raise ConfigError(f"{name} is {info.st_size} bytes; {what}s above {limit} bytes "
                              "are refused — is this the right file?")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {name}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if total > limit:
        raise ConfigError(f"{name} grew past {limit} bytes while being read; {what}s above "
                          f"{limit} bytes are refused")
    return b"".join(chunks)


def load_yaml(source: str | Path, *, text: str | None = None) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML from a file (or ``text``); return ``(data, lines)``.

    ``lines`` maps a key path such as ``("train", "lr")`` to its 1-based line number.
    """
    name = str(source)
    if text is None:
        data = read_bounded(source, MAX_YAML_BYTES, "YAML file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"cannot read {name}: it is not UTF-8 text ({exc.reason} at "
                              f"byte {exc.start})") from None
    elif len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{name}: YAML text above {MAX_YAML_BYTES} bytes is refused")
    _check_depth(text, name)
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


def _check_depth(text: str, name: str) -> None:
    # PyYAML's parser is a state machine (no recursion); its composer and constructor
    # recurse once per level.  Counting levels on the event stream first refuses deep
    # nesting before anything recursive sees it.
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else "?"
                    raise ConfigError(f"{name}: YAML nested more than {MAX_DEPTH} levels deep "
                                      f"(line {line}) is refused")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return  # reported with its line by the real parse below


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
