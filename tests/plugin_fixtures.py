"""Make throwaway plugin distributions on disk: a module plus a ``.dist-info`` with an
entry point in group ``zoo`` — exactly what ``pip install`` of a plugin leaves behind; and
components with a planted bug for the failure tests (:func:`broken_metric`)."""
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


def broken_metric(num_classes: int):
    """A torchmetrics metric whose ``compute`` raises ZeroDivisionError("compute exploded")."""
    import torch
    from torchmetrics import Metric

    class Broken(Metric):
        def __init__(self):
            super().__init__()
            self.add_state("n", default=torch.tensor(0), dist_reduce_fx="sum")

        def update(self, probs, targets):
            self.n += 1

        def compute(self):
            raise ZeroDivisionError("compute exploded")

    return Broken()
