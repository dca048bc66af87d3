"""The whole-process fixed costs (issue 17): metrics built at the first validation pass,
the per-sample seeding that touches only the CPU generator, checkpoints that store equal
best-epoch tensors once, and the console script's quick exit."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from plugin_fixtures import broken_metric
from zoo.errors import ConfigError
from zoo.hookspecs import hookimpl
from zoo.kit.testing.components import make_catalog, run_tiny


class CountingMetrics:
    """A metric plugin whose factory counts its calls (and can refuse to apply)."""

    name = "counting"

    def __init__(self, applies: bool = True):
        self.calls, self.applies = 0, applies

    @hookimpl
    def register_metrics(self, register):
        def factory(num_classes):
            from torchmetrics.classification import MulticlassAccuracy

            self.calls += 1
            return MulticlassAccuracy(num_classes=num_classes) if self.applies else None

        register("counted", factory, mode="max", description="counts its builds")


def _job(catalog, **over):
    from zoo.kit.testing.components import complete_job, tiny_job

    return complete_job(tiny_job(out="unused", **over), catalog)


def test_metrics_are_built_at_first_use_once():
    from zoo.engine.build import build_metrics

    plugin = CountingMetrics()
    catalog = make_catalog(plugin)
    job = _job(catalog, metrics=["accuracy", "counted"])
    scalar, other = build_metrics(catalog, job, 3, torch.device("cpu"))
    assert plugin.calls == 0  # nothing built (torchmetrics not needed) before training
    assert set(scalar) == {"accuracy", "counted"} and plugin.calls == 1
    assert list(other) == [] and len(scalar) == 2 and plugin.calls == 1  # built once


def test_monitor_that_cannot_apply_is_refused_before_anything_is_built():
    from zoo.engine.build import build_metrics

    plugin = CountingMetrics()
    catalog = make_catalog(plugin)
    job = _job(catalog, monitor={"metric": "top5", "mode": "max"})
    with pytest.raises(ConfigError, match="monitor metric 'top5' does not apply.*3 classes"):
        build_metrics(catalog, job, 3, torch.device("cpu"))  # top5 declares min_classes=5
    assert plugin.calls == 0


def test_monitor_whose_factory_returns_none_fails_the_run_in_one_line(tmp_path):
    catalog = make_catalog(CountingMetrics(applies=False))
    with pytest.raises(ConfigError, match="monitor metric 'counted' does not apply"):
        run_tiny(catalog, tmp_path, metrics=["counted"],
                 monitor={"metric": "counted", "mode": "max"})


def test_seeded_call_is_deterministic_restores_the_rng_and_skips_cuda_seeding(monkeypatch):
    from zoo.engine.data import seeded_call

    def draw(image):
        return torch.rand(3)

    torch.manual_seed(123)
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    before = torch.random.get_rng_state()
    a = seeded_call(draw, None, epoch_seed=7, index=3)
    b = seeded_call(draw, None, epoch_seed=7, index=3)
    c = seeded_call(draw, None, epoch_seed=7, index=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream goes on
    assert calls == []  # no per-sample CUDA seeding (it formatted a stack trace each time)


def test_checkpoint_stores_a_best_epoch_equal_to_the_model_once(tmp_path):
    from zoo.engine.checkpoint import load_checkpoint, read_info, save_checkpoint
    from zoo.engine.state import FitState, snapshot
    from zoo.kit.testing.components import tiny_transfer_model
    from zoo.weights.formats import read_safetensors

    model, _ = tiny_transfer_model()
    best = snapshot(model)  # copies of the trainable tensors, equal to the model's
    save_checkpoint(tmp_path, model, FitState(epoch=1, best_value=0.5, best_epoch=1,
                                              best_state=best, history=[{"epoch": 1}]), {})
    tensors, _ = read_safetensors(tmp_path / "checkpoint" / "last.safetensors")
    assert not [k for k in tensors if k.startswith("best.")]
    assert set(read_info(tmp_path)["best_from_model"]) == set(best)
    _, state, _ = load_checkpoint(tmp_path)
    assert all(torch.equal(state.best_state[k], v) for k, v in best.items())
    # once the model moves on, the best epoch's tensors are stored separately
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_checkpoint(tmp_path, model, FitState(epoch=2, best_value=0.5, best_epoch=1,
                                              best_state=best,
                                              history=[{"epoch": 1}, {"epoch": 2}]), {})
    tensors, _ = read_safetensors(tmp_path / "checkpoint" / "last.safetensors")
    assert len([k for k in tensors if k.startswith("best.")]) == 1
    _, state, _ = load_checkpoint(tmp_path)
    assert all(torch.equal(state.best_state[k], v) for k, v in best.items())


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_quick_exit_runs_atexit_handlers_flushes_and_keeps_the_status():
    proc = _python("""
        import atexit, sys
        atexit.register(lambda: print("handler ran"))
        sys.stdout.write("unflushed line")
        from zoo.cli import quick_exit
        quick_exit.exit_now(3)
    """)
    assert proc.returncode == 3
    assert proc.stdout.startswith("unflushed line") and "handler ran" in proc.stdout


def test_quick_exit_waits_for_a_running_non_daemon_thread():
    proc = _python("""
        import threading, time
        def late():
            time.sleep(0.3)
            print("thread finished", flush=True)
        threading.Thread(target=late).start()
        from zoo.cli import quick_exit
        quick_exit.exit_now(None)
    """)
    assert proc.returncode == 0 and "thread finished" in proc.stdout


def test_a_torchrun_rank_exits_quickly_once_its_process_group_is_gone(tmp_path):
    """Under torchrun the normal exit is kept only while a process group lives (its teardown
    is in finalisers); once zoo destroyed it, a rank that succeeded exits quickly — the
    interpreter's teardown is where gloo's threads met the static destructors and aborted a
    rank."""
    proc = _python(f"""
        import os
        os.environ["LOCAL_RANK"] = "0"
        from zoo.cli import quick_exit
        before = quick_exit.can_exit_now()
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method="file://{tmp_path / 'store'}",
                                rank=0, world_size=1)
        during = quick_exit.can_exit_now()
        dist.destroy_process_group()
        print(before, during, quick_exit.can_exit_now(), quick_exit.can_exit_now(2))
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # a failing rank keeps the normal exit: torchrun must see the rank that crashed fail first
    assert proc.stdout.split() == ["True", "False", "True", "False"]


@pytest.mark.parametrize("code,status", [(None, 0), (0, 0), (2, 2), ("message", 1)])
def test_exit_code_maps_system_exit_codes(code, status):
    from zoo.cli.quick_exit import exit_code

    assert exit_code(code) == status


def test_console_script_keeps_exit_codes_and_output():
    ok = subprocess.run([sys.executable, "-m", "zoo", "--version"], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and "zoo" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "zoo", "run", "--epochs", "x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "epochs" in bad.stderr


def test_no_progress_bar_thread_when_the_console_is_not_a_terminal():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from zoo.engine.pipeline import _progress

    assert _progress(Console(file=io.StringIO())) is None  # a log file or a pipe
    assert isinstance(_progress(Console(file=io.StringIO(), force_terminal=True)), Progress)


def test_a_probe_auto_chose_trains_on_cached_features(tmp_path):
    """auto gives a probe's train split the val transform (no augmentation); the run then
    caches features as ``--strategy linear-probe`` does (it ran the backbone every step)."""
    summary = run_tiny(make_catalog(), tmp_path, data={"augment": "light"}, train={"epochs": 3},
                       strategy={"name": "auto", "params": {"candidates": "linear-probe"}})
    phase = summary["phases"][0]
    assert phase["name"] == "probe"
    assert "train" not in phase["backbone_passes"]  # cached: no per-epoch backbone pass


def test_checkpoint_pacing_spends_at_most_two_percent_of_an_epoch(monkeypatch):
    from zoo.engine import state as st

    clock = [100.0]
    monkeypatch.setattr(st.time, "perf_counter", lambda: clock[0])
    pacer = st.CheckpointPacer(max_gap=5.0)

    def write(_state):
        clock[0] += 0.11  # a 0.11 s checkpoint

    pacer.save(write, None)
    assert pacer.cost == pytest.approx(0.11)
    clock[0] += 3.5  # a 3.5 s epoch later: 3 % of it — held, not written
    assert not pacer.due(3.5)
    assert pacer.due(6.0)  # under 2 % of a 6 s epoch: written every epoch
    clock[0] += 1.6  # 5 s since the last write: written whatever it costs
    assert pacer.due(3.5)


class FailsAtTest:
    """A metric only the test pass builds (``always``) whose compute raises: a failure
    after the last epoch."""

    name = "fails-at-test"

    @hookimpl
    def register_metrics(self, register):
        register("broken-at-test", broken_metric, mode="max", scalar=False, always=True)


def _never_due(monkeypatch):
    from zoo.engine import state as st

    monkeypatch.setattr(st.CheckpointPacer, "due", lambda self, seconds: False)


def test_the_last_epoch_is_paced_but_earlier_phase_ends_are_written(tmp_path, monkeypatch):
    from zoo.engine.checkpoint import read_info

    _never_due(monkeypatch)  # pacing holds every epoch it may
    one = run_tiny(make_catalog(), tmp_path / "a", train={"epochs": 3})
    assert one["status"] == "completed"  # the results follow the last epoch: not written
    from pathlib import Path

    assert not (Path(one["run_dir"]) / "checkpoint" / "last.safetensors").exists()
    two = run_tiny(make_catalog(), tmp_path / "b", train={"epochs": 4},
                   strategy={"name": "lp-ft", "params": {"probe_epochs": 2}})
    assert [p["epochs"] for p in two["phases"]] == [2, 2]
    assert read_info(two["run_dir"])["epoch"] == 2  # the probe phase's end: written


def test_a_failure_after_training_writes_the_held_epoch(tmp_path, monkeypatch):
    from zoo.engine.checkpoint import read_info
    from zoo.errors import PluginError

    _never_due(monkeypatch)
    with pytest.raises(PluginError, match="compute exploded"):
        run_tiny(make_catalog(FailsAtTest()), tmp_path, train={"epochs": 3})
    run_dir = next(p for p in tmp_path.rglob("summary.json")).parent
    assert read_info(run_dir)["epoch"] == 3  # resumable without training again
    import json

    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
