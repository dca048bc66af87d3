"""The run directory: naming, the files in it, and checkpoints for ``--resume``.

Layout (``docs/runs.md``): ``job.yaml``, ``metrics.jsonl``, ``splits.json``,
``model.safetensors``, ``summary.json``, ``curves.png``, ``confusion.png``/``.csv``, and
``checkpoint/last.safetensors`` + ``checkpoint/last.json`` (resume state).  Every file is
written atomically (:mod:`zoo.io.atomic`).
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from zoo.io import atomic
from zoo.errors import CheckpointError

SCHEMA = 1


def sanitise(name: str) -> str:
    """A folder-safe name: no ``:``, ``/`` or spaces."""
    clean = re.sub(r"[^\w.\-]+", "-", name, flags=re.UNICODE).strip("-.")
    return clean or "run"


def new_run_dir(out: str | Path, name: str | None, model: str, strategy: str) -> Path:
    """Create a fresh run folder; unique even for runs started in the same second."""
    out = Path(out)
    base = sanitise(name) if name else sanitise(
        f"{model}-{strategy}-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        candidate = out / (base if i == 0 else f"{base}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise CheckpointError(f"could not create a unique run folder under {out}")


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
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    atomic.write_text(run_dir / "metrics.jsonl",
                      "".join(json.dumps(r, default=atomic._jsonable) + "\n" for r in history))
