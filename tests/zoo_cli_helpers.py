"""Helpers shared by the weights/runs/resume tests: the CLI in-process or as a subprocess,
and tiny runs (timm's ``test_resnet``, demo data with 20 images per class)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TINY_FLAGS = ["--weights", "none", "--batch-size", "32", "--set", "data.params.per_class=20"]


def cli(capsys, *args) -> tuple[int, str, str]:
    """``zoo ARGS`` in this process: ``(exit code, stdout, stderr)``."""
    from zoo.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def zoo(*args, env: dict | None = None, cwd=None, timeout: int = 300):
    """``zoo ARGS`` as a subprocess (``python -m zoo``): a CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd)


def assert_one_line_error(proc_or_err, code: int | None = None, expected: int = 2) -> str:
    """stderr is exactly one line starting with ``error: ``; the exit code is ``expected``."""
    if isinstance(proc_or_err, subprocess.CompletedProcess):
        err, code = proc_or_err.stderr, proc_or_err.returncode
    else:
        err = proc_or_err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def tiny_run(out: Path, name: str, *extra, strategy: str = "finetune", epochs: int = 1,
             env: dict | None = None) -> dict:
    """A tiny ``zoo run`` in a subprocess; its summary."""
    proc = zoo("run", "timm:test_resnet", "--strategy", strategy, "--epochs", epochs,
               "--out", out, "--name", name, *TINY_FLAGS, *extra, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def snapshot(folder: Path) -> dict:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}
