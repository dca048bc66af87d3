"""Make throwaway plugin distributions on disk: a module plus a ``.dist-info`` with an
entry point in group ``zoo`` — exactly what ``pip install`` of a plugin leaves behind."""
from __future__ import annotations

import textwrap
from pathlib import Path


def make_plugin(root: Path, dist: str, module: str, code: str, ep_name: str | None = None,
                version: str = "0.1.0") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[zoo]\n{ep_name or dist} = {module}\n")
    return root
