"""docs/plugins.md, executed literally.

The tutorial marks what to execute with HTML comments right before a fenced block:
``<!-- tutorial: file PATH -->`` (write the block to PATH) and ``<!-- tutorial: run -->`` (run
the block with bash; ``cd`` carries over to the next block).  The blocks run in order in a
temporary folder, with one stand-in: ``pip`` on PATH installs into a private ``--target``
folder on PYTHONPATH (``--no-deps --no-build-isolation``, not editable) instead of the shared
venv, so nothing needs uninstalling and the repo's own ``zoo-example-plugin`` (if installed)
is shadowed, not replaced.  ``zoo`` and ``python`` are this venv's.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "plugins.md"
EXAMPLE = ROOT / "plugins" / "zoo-example-plugin"
BLOCK = re.compile(r"<!-- tutorial: (run|file (\S+)) -->\s*\n(`{3,})[\w-]*\n(.*?)\n\3\n", re.S)

PIP_STANDIN = """#!/bin/bash
# tutorial test stand-in: `pip install [-e] X` installs X into $ZOO_TUTORIAL_SITE
set -e
if [ "$1" != "install" ]; then exec "$ZOO_TUTORIAL_PYTHON" -m pip "$@"; fi
shift
args=()
for a in "$@"; do [ "$a" = "-e" ] || args+=("$a"); done
exec "$ZOO_TUTORIAL_PYTHON" -m pip install -q --no-deps --no-build-isolation \\
    --target "$ZOO_TUTORIAL_SITE" "${args[@]}"
"""


def tutorial_steps() -> list[tuple[str, str | None, str]]:
    """``(kind, path, text)`` for every marked block of docs/plugins.md, in order."""
    return [("file" if m.group(2) else "run", m.group(2), m.group(4))
            for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]


def test_tutorial_has_the_steps():
    steps = tutorial_steps()
    runs = "\n".join(text for kind, _, text in steps if kind == "run")
    files = [path for kind, path, _ in steps if kind == "file"]
    assert "pip install -e ." in runs
    assert "zoo plugins" in runs and "zoo heads" in runs
    assert "zoo run" in runs and "--head cosine" in runs
    assert "pytest" in runs
    assert {"pyproject.toml", "zoo_example_plugin/__init__.py",
            "tests/test_zoo_example_plugin.py"} <= set(files)
    assert "[project.entry-points.zoo]" in dict((p, t) for _, p, t in steps)["pyproject.toml"]


def test_tutorial_files_are_the_repo_example():
    """The doc shows exactly the files of plugins/zoo-example-plugin (kept in sync)."""
    for kind, path, text in tutorial_steps():
        if kind == "file":
            repo = (EXAMPLE / path).read_text(encoding="utf-8").rstrip("\n")
            assert text == repo, f"docs/plugins.md's {path} differs from {EXAMPLE / path}"


@pytest.mark.slow
def test_tutorial_runs_literally(tmp_path):
    work, site, bin_dir = tmp_path / "work", tmp_path / "site", tmp_path / "bin"
    for d in (work, site, bin_dir):
        d.mkdir()
    pip = bin_dir / "pip"
    pip.write_text(PIP_STANDIN)
    pip.chmod(0o755)
    venv_bin = Path(sys.executable).parent
    env = {**os.environ,
           "PATH": os.pathsep.join([str(bin_dir), str(venv_bin), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(
               p for p in [str(site), os.environ.get("PYTHONPATH", "")] if p),
           "ZOO_TUTORIAL_SITE": str(site), "ZOO_TUTORIAL_PYTHON": sys.executable,
           "NO_COLOR": "1", "COLUMNS": "200"}
    cwd = work
    outputs = []
    state = tmp_path / "cwd.txt"
    for kind, path, text in tutorial_steps():
        if kind == "file":
            target = cwd / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text + "\n", encoding="utf-8")
            continue
        script = f"set -e\n{text}\npwd > '{state}'\n"
        proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, (f"tutorial step failed:\n{text}\n--- stdout\n"
                                      f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
        outputs.append(proc.stdout)
        cwd = Path(state.read_text().strip())
    everything = "\n".join(outputs)
    # installed for real (a wheel built from the tutorial's pyproject) and seen by zoo
    assert (site / "zoo_example_plugin" / "__init__.py").is_file()
    entry_points = next(site.glob("zoo_example_plugin-*.dist-info")) / "entry_points.txt"
    assert "example = zoo_example_plugin" in entry_points.read_text()
    assert "example" in everything and "cosine" in everything
    # the run used the plugin's head
    run_dir = cwd / "runs" / "cosine-demo"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert "example" in summary["versions"]["plugins"]
    assert re.search(r"^head:\s*\n\s+name: cosine", (run_dir / "job.yaml").read_text(), re.M) \
        or "name: cosine" in (run_dir / "job.yaml").read_text()
    assert "passed" in outputs[-1] and "failed" not in outputs[-1]
