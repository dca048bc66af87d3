"""The run directory: naming, the files in it, and checkpoints for ``--resume``.

Layout (``docs/runs.md``): ``job.yaml``, ``metrics.jsonl``, ``splits.json``,
``model.safetensors``, ``summary.json``, ``curves.png``, ``confusion.png``/``.csv``, and
``checkpoint/last.safetensors`` (resume state, one file; zoo.engine.checkpoint).  Every file is
written atomically (:mod:`zoo.io.atomic`).
"""
from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from zoo.io import atomic
from zoo.errors import CheckpointError, ConfigError
from zoo.io.yamlio import read_bounded

SCHEMA = 1
MAX_JSON_BYTES = 64 * 1024 * 1024   # splits.json of a million images is ~40 MB
MAX_IMAGE_SIZE = 4096               # the job spec's bound: 100000 px would allocate 30 GB
MAX_CLASSES = 1_000_000


def sanitise(name: str) -> str:
    """A folder-safe name: no ``:``, ``/`` or spaces."""
    clean = re.sub(r"[^\w.\-]+", "-", name, flags=re.UNICODE).strip("-.")
    return clean or "run"


def new_run_dir(out: str | Path, name: str | None, model: str, strategy: str) -> Path:
    """Create a fresh run folder; unique even for runs started in the same second."""
    out = check_out_dir(out)
    base = sanitise(name) if name else sanitise(
        f"{model}-{strategy}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the output folder {out}: "
                              f"{exc.strerror or exc} — pass --out a writable folder") from None
    for i in range(1000):
        candidate = out / (base if i == 0 else f"{base}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise CheckpointError(f"cannot create the run folder {candidate}: "
                                  f"{exc.strerror or exc} — pass --out a writable folder"
                                  ) from None
    raise CheckpointError(f"could not create a unique run folder under {out}")


def check_out_dir(out: str | Path, option: str = "--out") -> Path:
    """``out`` as a Path when a folder can be created or written there; a one-line
    :class:`CheckpointError` when it is a file, or below a file, or read-only — checked
    before any work, so a long job does not fail at its first write."""
    out = Path(out)
    probe = out
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: mkdir would fail
            raise CheckpointError(f"{option} {out}: {probe} is a broken symlink")
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == out else f"is below the file {probe}"
        raise CheckpointError(f"{option} {out} {where}, not a folder — pass --out a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise CheckpointError(f"{option} {out}: {probe} is not writable (read-only?) — pass "
                              "--out a writable folder")
    return out


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "job.yaml").is_file()


def require_run_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"run folder {p} does not exist — `zoo runs` lists past runs")
    if not is_run_dir(p):
        raise CheckpointError(f"{p} is not a zoo run folder (no job.yaml) — `zoo runs` "
                              "lists past runs")
    return p


def read_summary(run_dir: Path) -> dict | None:
    """``summary.json`` as a mapping, or None when it is missing or unusable (a listing of
    runs shows such a run as ``running?`` rather than failing)."""
    try:
        data = read_json(Path(run_dir) / "summary.json")
    except CheckpointError:
        return None
    return data if isinstance(data, dict) else None


# -- reading files of a run folder: every one is untrusted ------------------------------------
def read_json(path: str | Path, limit: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file of a run folder; a one-line :class:`CheckpointError` naming the file
    when it is missing, not a regular file, too large, not JSON or nested absurdly deep."""
    path = Path(path)
    try:
        raw = read_bounded(path, limit, "file")  # regular files only, never read past limit
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else \
            str(exc).splitlines()[0][:120]
        raise CheckpointError(f"{path} is not valid JSON ({reason}) — is the run folder "
                              "damaged?") from None


def _bad(path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what} — the file is damaged or was edited by hand")


def _is_int(v, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_splits(run_dir: str | Path) -> dict:
    """``splits.json``: ``classes`` (names) and per split the sample ids, checked."""
    path = Path(run_dir) / "splits.json"
    data = read_json(path)
    if not isinstance(data, dict):
        raise _bad(path, f"expected a mapping, got {type(data).__name__}")
    classes = data.get("classes")
    if classes is not None and (not isinstance(classes, list) or
                                not all(isinstance(c, str) for c in classes)):
        raise _bad(path, "'classes' must be a list of class names")
    for split in ("train", "val", "test"):
        ids = data.get(split)
        if ids is not None and (not isinstance(ids, list) or
                                not all(isinstance(i, (str, int)) and not isinstance(i, bool)
                                        for i in ids)):
            raise _bad(path, f"'{split}' must be a list of sample ids")
    return data


def check_model_meta(meta: Any, path: str | Path) -> dict:
    """The ``zoo`` metadata of a ``model.safetensors``: every key the reload needs, with
    its type and a sane range (``image_size: 100000`` would allocate ~30 GB)."""
    if not isinstance(meta, dict):
        raise _bad(path, "its zoo metadata is not a mapping")
    for key in ("model", "head", "num_classes", "classes", "image_size", "pretrained_cfg"):
        if key not in meta:
            raise _bad(path, f"its zoo metadata lacks '{key}'")
    if not isinstance(meta["model"], str) or not meta["model"].strip():
        raise _bad(path, "'model' must be a model name")
    head = meta["head"]
    if not (isinstance(head, dict) and isinstance(head.get("name"), str)
            and isinstance(head.get("params", {}), dict)
            and all(isinstance(k, str) for k in head.get("params", {}))):
        raise _bad(path, "'head' must be {name: ..., params: {...}}")
    if not _is_int(meta["num_classes"], 1, MAX_CLASSES):
        raise _bad(path, f"'num_classes' must be an integer in 1..{MAX_CLASSES}, got "
                   f"{meta['num_classes']!r}")
    classes = meta["classes"]
    if not (isinstance(classes, list) and len(classes) == meta["num_classes"]
            and all(isinstance(c, str) for c in classes)):
        raise _bad(path, f"'classes' must be {meta['num_classes']} class names")
    if not _is_int(meta["image_size"], 8, MAX_IMAGE_SIZE):
        raise _bad(path, f"'image_size' must be an integer in 8..{MAX_IMAGE_SIZE}, got "
                   f"{meta['image_size']!r}")
    cfg = meta["pretrained_cfg"]
    if not isinstance(cfg, dict):
        raise _bad(path, "'pretrained_cfg' must be a mapping")
    channels = cfg.get("channels", 3)
    if not _is_int(channels, 1, 64):
        raise _bad(path, "'pretrained_cfg.channels' must be an integer in 1..64")
    for key in ("mean", "std"):
        v = cfg.get(key)
        if not (isinstance(v, list) and len(v) == channels and all(_is_number(x) for x in v)):
            raise _bad(path, f"'pretrained_cfg.{key}' must be {channels} numbers (one per "
                       "channel)")
    if any(x <= 0 for x in cfg["std"]):
        raise _bad(path, "'pretrained_cfg.std' must be positive")
    if "input_size" in cfg and not _is_int(cfg["input_size"], 1, 100_000):
        raise _bad(path, "'pretrained_cfg.input_size' must be a positive integer")
    if "crop_pct" in cfg and not (_is_number(cfg["crop_pct"]) and 0 < cfg["crop_pct"] <= 1):
        raise _bad(path, "'pretrained_cfg.crop_pct' must be a number in (0, 1]")
    if "interpolation" in cfg and not isinstance(cfg["interpolation"], str):
        raise _bad(path, "'pretrained_cfg.interpolation' must be a name")
    unknown = set(cfg) - {"input_size", "mean", "std", "interpolation", "crop_pct", "channels"}
    if unknown:
        raise _bad(path, f"'pretrained_cfg' has unknown keys {sorted(unknown)}")
    unmerged = meta.get("unmerged", [])
    if not (isinstance(unmerged, list) and len(unmerged) <= 16 and all(
            isinstance(u, dict) and isinstance(u.get("strategy"), str)
            and isinstance(u.get("state"), dict) for u in unmerged)):
        raise _bad(path, "'unmerged' must be a list of {strategy: NAME, state: {...}}")
    return meta


def check_checkpoint_info(info: Any, path: str | Path) -> dict:
    """The fields of a checkpoint's JSON state (the ``zoo_checkpoint`` metadata of
    ``checkpoint/last.safetensors``; ``last.json`` in older run folders) that resuming
    reads, checked for type."""
    if not isinstance(info, dict):
        raise _bad(path, "expected a mapping")
    if not _is_int(info.get("epoch"), 0, 10**6):
        raise _bad(path, f"'epoch' must be a whole number, got {info.get('epoch')!r}")
    for key in ("best_epoch", "bad_epochs"):
        if info.get(key) is not None and not _is_int(info[key], 0, 10**6):
            raise _bad(path, f"'{key}' must be a whole number or null")
    best = info.get("best_value")
    if best is not None and not (isinstance(best, (int, float)) and not isinstance(best, bool)):
        raise _bad(path, "'best_value' must be a number or null")
    if not isinstance(info.get("history", []), list) or \
            not all(isinstance(r, dict) for r in info.get("history", [])):
        raise _bad(path, "'history' must be a list of epoch records")
    if not isinstance(info.get("best_from_model") or [], list):
        raise _bad(path, "'best_from_model' must be a list of tensor names")
    opt = info.get("optimizer")
    if opt is not None and not (isinstance(opt, dict) and isinstance(opt.get("param_groups"),
                                                                       list)
                                and isinstance(opt.get("state"), dict)):
        raise _bad(path, "'optimizer' must be {param_groups: [...], state: {...}} or null")
    return info


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    atomic.write_text(run_dir / "metrics.jsonl",
                      "".join(json.dumps(r, default=atomic._jsonable) + "\n" for r in history))
