"""Issue 23, points 5 and 6: one writer of the run folder (summary.json with lr_find and
auto's choice, written before on_run_end fires); faults come into the loop from outside,
through hooks wired at the run's entry."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from zoo.hookspecs import hookimpl
from zoo.kit.testing import make_catalog, run_tiny

ROOT = Path(__file__).resolve().parents[1]


class SummaryWatcher:
    """An observer that reads summary.json from disk when on_run_end fires."""

    name = "summary-watcher"

    def __init__(self):
        self.seen: list = []

    @hookimpl
    def on_run_end(self, run, summary):
        on_disk = json.loads((Path(run.dir) / "summary.json").read_text())
        self.seen.append((summary, on_disk))


def test_the_final_summary_with_lr_find_is_written_before_on_run_end(tmp_path):
    watcher = SummaryWatcher()
    summary = run_tiny(make_catalog(watcher), tmp_path, strategy={"name": "finetune"},
                       train={"lr": "auto"})
    (given, on_disk), = watcher.seen
    assert on_disk["status"] == "completed" and on_disk == json.loads(json.dumps(given))
    assert on_disk["lr_find"]["strategy"] == "finetune"
    assert on_disk["lr_find"]["lr"] == pytest.approx(summary["lr_find"]["lr"])
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert saved["lr_find"] == on_disk["lr_find"]


def test_auto_s_choice_is_in_the_summary_before_on_run_end(tmp_path):
    watcher = SummaryWatcher()
    summary = run_tiny(make_catalog(watcher), tmp_path, strategy={
        "name": "auto", "params": {"candidates": "linear-probe,finetune", "lr_factor": 1}})
    (_, on_disk), = watcher.seen
    choice = on_disk["auto"]
    assert choice["chosen"] in ("linear-probe", "finetune")
    assert choice["chosen"] == summary["auto"]["chosen"]
    # the tiny model has no source weights: auto falls back without trials, and says so
    assert choice["trials"] == [] and isinstance(choice["lr"], float)
    assert summary["strategy"] == "auto"


def test_the_writer_owns_every_status(tmp_path):
    from zoo.engine.run_writer import RunWriter

    writer = RunWriter(tmp_path)
    assert writer.finish("failed", error="boom")["status"] == "failed"  # a stub: no record yet
    assert json.loads((tmp_path / "summary.json").read_text())["error"] == "boom"
    writer.begin({"model": "m"})
    writer.update(test={"accuracy": 0.5})
    done = writer.finish("completed", seconds=1.0)
    assert done["status"] == "completed" and done["test"] == {"accuracy": 0.5}
    # an interrupt after the final record keeps it
    writer.finish("interrupted")
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    resumed = RunWriter(tmp_path / "other", resume=True)
    assert resumed.finish("interrupted") is None  # a resume keeps its run's own summary
    assert not (tmp_path / "other").exists()


def test_only_the_writer_writes_summary_json():
    writers = []
    for path in (ROOT / "zoo").rglob("*.py"):
        text = path.read_text()
        if '"summary.json"' in text and "write_json" in text and path.name != "run_writer.py":
            for i, line in enumerate(text.splitlines(), 1):
                if "write_json" in line and "summary.json" in line:
                    writers.append(f"{path.relative_to(ROOT)}:{i}")
    assert not writers, writers


# -- faults from outside the loop (point 6) -------------------------------------------------------
def test_the_loop_does_not_know_about_faults():
    tree = ast.parse((ROOT / "zoo" / "engine" / "loop.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    # no test switch and no reaching past the Runtime to the process group
    assert not {m for m in imported if m and ("faults" in m or m == "zoo.engine.distributed")}
    assert "ZOO_FAULT" not in (ROOT / "zoo" / "engine" / "loop.py").read_text()


def test_hooks_are_called_at_their_points_and_production_has_none(monkeypatch):
    import torch

    from zoo.engine.loop import fit
    from zoo.engine.loop_hooks import NO_HOOKS, LoopHooks, loop_hooks
    from zoo.engine.runtime import Runtime
    from zoo.kit.testing import tiny_job, tiny_transfer_model
    from zoo.strategy import Phase, StrategyPlan, all_groups

    monkeypatch.delenv("ZOO_FAULT", raising=False)
    assert loop_hooks() is NO_HOOKS
    monkeypatch.setenv("ZOO_FAULT", "interrupt_after_epoch:1")
    with pytest.raises(KeyboardInterrupt):
        loop_hooks().after_epoch(1)
    loop_hooks().after_epoch(2)  # not the fault's epoch: nothing

    torch.manual_seed(0)
    model, groups = tiny_transfer_model()
    job = tiny_job(train={"epochs": 2, "on_nan": "skip"})
    x, y = torch.rand(12, 3, 32, 32), torch.arange(12) % 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    loader.dataset.classes = ["a", "b", "c"]
    calls: dict = {"steps": [], "epochs": []}
    hooks = LoopHooks(after_step=lambda e, s: calls["steps"].append((e, s)),
                      after_epoch=calls["epochs"].append,
                      bad_loss=lambda e, s: (e, s) == (1, 0))
    plan = StrategyPlan("x", [Phase("all", 2, all_groups(groups))])
    state = fit(model, groups, plan, {"train": loader, "val": None}, {}, job,
                Runtime.for_job(job, torch.device("cpu")), hooks=hooks, log=lambda *a: None)
    assert calls["epochs"] == [1, 2]
    assert calls["steps"] == [(1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]  # the skipped one: none
    assert state.history[0]["train"]["skipped_steps"] == 1
    assert state.history[1]["train"]["skipped_steps"] == 0
    with pytest.raises(TypeError, match="Runtime"):
        fit(model, groups, plan, {"train": loader, "val": None}, {}, job,
            torch.device("cpu"))
