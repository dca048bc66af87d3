"""The test split's extra metrics and files, as the metric plugins declare them.

A metric registered with ``always=True`` is computed on the test split of every run, named
by the job or not; one registered with ``writer=fn(run_dir, value, classes)`` writes its own
files from its test value.  The core names no metric: what ``confusion`` or ``per-class``
write is their plugin's business.
"""
from __future__ import annotations

from pathlib import Path

from zoo.contracts import check_metric


def add_always_metrics(catalog, test_metrics: dict, num_classes: int, device) -> dict:
    """``test_metrics`` plus every ``always=True`` metric it lacks (built on ``device``);
    a factory that returns ``None`` (the metric does not apply) adds nothing."""
    out = dict(test_metrics)
    for name in catalog.always_metrics():
        if name in out:
            continue
        comp = catalog.get("metrics", name)
        metric = check_metric(comp, comp.obj(num_classes))
        if metric is not None:
            out[name] = metric.to(device)
    return out


def write_metric_files(catalog, run_dir: Path, results: dict, classes: list,
                       warnings: list) -> None:
    """Call the ``writer`` of every metric in ``results`` that declared one.  A writer that
    raises leaves a warning: a file of a metric must never lose a finished run."""
    for name, value in results.items():
        if not catalog.has("metrics", name):
            continue
        writer = catalog.get("metrics", name).options.get("writer")
        if writer is None:
            continue
        try:
            writer(Path(run_dir), value, list(classes))
        except Exception as exc:
            warnings.append(f"metric '{name}' could not write its files "
                            f"({type(exc).__name__}: {exc})")
