"""Reliability round 3, class B (issue 24): a plugin cannot take the run down, hang it, or
change where it writes.

Observers and loggers are isolated from BaseException (``sys.exit``, their own
KeyboardInterrupt) while a real signal still interrupts; every plugin failure lands in
``summary.json``'s warnings and on stderr even with ``-q``; stdout is JSON alone with
``--json``; a non-daemon thread started by a hook does not keep the process alive;
``job_defaults`` cannot set paths or job-level keys.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from plugin_fixtures import make_plugin
from zoo.errors import PluginError, RunInterrupted
from zoo.hookspecs import hookimpl
from zoo.kit.testing import make_catalog, run_tiny
from zoo_cli_helpers import TINY_FLAGS, zoo


def _run_dir(out: Path) -> Path:
    [run_dir] = [p for p in Path(out).iterdir() if p.is_dir()]
    return run_dir


class _ExitingLogger:
    def __init__(self, run, first_epoch):
        pass

    def log_epoch(self, epoch, metrics):
        sys.exit(9)

    def close(self, summary):
        raise AssertionError("never: disabled after log_epoch failed")


class _InterruptingCloser:
    def __init__(self, run, first_epoch):
        pass

    def log_epoch(self, epoch, metrics):
        pass

    def close(self, summary):
        raise KeyboardInterrupt  # the logger's own, not a signal


class Rude:
    """Every way an observer or logger can try to end the run from inside a hook."""

    name = "rude-plugin"

    def __init__(self):
        self.epochs = []

    @hookimpl
    def on_epoch_end(self, run, epoch, metrics):
        self.epochs.append(epoch)
        if epoch == 1:
            sys.exit(7)
        raise KeyboardInterrupt  # raised by the hook's code: no signal arrived

    @hookimpl
    def on_run_end(self, run, summary):
        raise SystemExit("bye from on_run_end")

    @hookimpl
    def register_loggers(self, register):
        register("exiting", _ExitingLogger)
        register("closer", _InterruptingCloser)


def test_observers_and_loggers_cannot_end_the_run(tmp_path, capsys):
    rude = Rude()
    summary = run_tiny(make_catalog(rude), tmp_path, train={"epochs": 3},
                       loggers=["exiting", "closer"])  # quiet, like -q
    assert summary["status"] == "completed" and rude.epochs == [1, 2, 3]
    run_dir = _run_dir(tmp_path)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    written = json.loads((run_dir / "summary.json").read_text())
    warnings = written["warnings"]
    assert any("plugin 'rude-plugin': on_epoch_end called sys.exit(7)" in w for w in warnings)
    assert any("on_epoch_end raised KeyboardInterrupt" in w for w in warnings)
    # on_run_end runs after summary.json is written: the file still records its failure
    assert any("plugin 'rude-plugin': on_run_end called sys.exit('bye from on_run_end')" in w
               for w in warnings)
    assert any("logger 'exiting'" in w and "sys.exit(9)" in w for w in warnings)
    assert any("logger 'closer'" in w and "close raised KeyboardInterrupt" in w
               for w in warnings)
    err = capsys.readouterr().err  # quiet: warnings are still printed (not progress)
    assert "on_epoch_end called sys.exit(7)" in err and "on_run_end called sys.exit" in err


class CtrlC:
    """Sends a real SIGINT from inside a hook: the documented interrupt must happen."""

    name = "ctrl-c-plugin"

    @hookimpl
    def on_epoch_end(self, run, epoch, metrics):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # held while the epoch is saved; delivered right after


def test_a_real_signal_during_a_hook_still_interrupts_and_epoch_1_is_resumable(tmp_path):
    with pytest.raises(RunInterrupted) as info:
        run_tiny(make_catalog(CtrlC()), tmp_path, train={"epochs": 3})
    assert info.value.exit_code == 130 and "zoo run --resume" in str(info.value)
    written = json.loads((_run_dir(tmp_path) / "summary.json").read_text())
    assert written["status"] == "interrupted"
    assert (_run_dir(tmp_path) / "checkpoint" / "last.safetensors").is_file()


def test_call_isolated_passes_real_signals_and_swallows_the_plugins_own():
    from zoo.engine import guard
    from zoo.engine.isolation import call_isolated

    said: list = []
    previous = guard.install_signal_handlers()
    try:
        ok, _ = call_isolated(lambda: (_ for _ in ()).throw(KeyboardInterrupt()), "p", said.append)
        assert not ok and "KeyboardInterrupt" in said[0]

        def real_ctrl_c():
            signal.raise_signal(signal.SIGINT)

        with pytest.raises(KeyboardInterrupt):
            call_isolated(real_ctrl_c, "p", said.append)

        def real_term():
            signal.raise_signal(signal.SIGTERM)

        with pytest.raises(guard.Terminated):
            call_isolated(real_term, "p", said.append)
        ok, value = call_isolated(lambda: 42, "p", said.append)
        assert ok and value == 42 and len(said) == 1
    finally:
        guard.restore_signal_handlers(previous)


class ExitingMetric:
    name = "exiting-metric-plugin"

    @hookimpl
    def register_metrics(self, register):
        from plugin_fixtures import broken_metric

        def factory(num_classes):
            metric = broken_metric(num_classes)
            metric.compute = lambda: sys.exit(5)
            return metric

        register("exiter", factory)


def test_sys_exit_inside_plugin_code_fails_the_run_naming_the_plugin(tmp_path):
    with pytest.raises(PluginError) as info:
        run_tiny(make_catalog(ExitingMetric()), tmp_path, metrics=["accuracy", "exiter"])
    msg = str(info.value)
    assert "\n" not in msg and "exiting-metric-plugin" in msg
    assert json.loads((_run_dir(tmp_path) / "summary.json").read_text())["status"] == "failed"


# -- job_defaults stay inside their component -------------------------------------------------
@pytest.mark.parametrize("kind, defaults, key", [
    ("heads", {"out": "/tmp/elsewhere"}, "out"),
    ("heads", {"name": "hijacked"}, "name"),
    ("strategies", {"weights": "/tmp/w.safetensors"}, "weights"),
    ("datasets", {"data": {"path": "/etc"}}, "data.path"),
    ("heads", {"strategy": {"params": {"r": 4}}}, "strategy.params"),
    ("metrics", {"data": {"params": {"x": 1}}}, "data.params"),
])
def test_job_defaults_may_not_set_paths_or_job_level_keys(kind, defaults, key):
    class Overreaching:
        name = "overreaching"

        @hookimpl
        def register_heads(self, register):
            if kind == "heads":
                register("h", lambda i, n: None, job_defaults=defaults)

        @hookimpl
        def register_strategies(self, register):
            if kind == "strategies":
                register("s", object(), job_defaults=defaults)

        @hookimpl
        def register_datasets(self, register):
            if kind == "datasets":
                register("d", lambda spec, split, transform, seed: None, job_defaults=defaults)

        @hookimpl
        def register_metrics(self, register):
            if kind == "metrics":
                register("m", lambda n: None, job_defaults=defaults)

    with pytest.raises(AssertionError, match=rf"may not set {key}\b"):
        make_catalog(Overreaching(), testing=False)


def test_job_defaults_inside_the_component_are_still_accepted():
    class Fine:
        name = "fine"

        @hookimpl
        def register_strategies(self, register):
            register("s", object(), job_defaults={"strategy": {"params": {"k": 1}},
                                                  "head": {"params": {"normalize": True}},
                                                  "train": {"lr": 0.1},
                                                  "data": {"augment": "none"}})

    assert "s" in make_catalog(Fine(), testing=False).names("strategies")


# -- a real process: --json stdout, -q warnings, a hook's non-daemon thread ------------------
def test_chatty_plugin_with_a_lingering_thread_keeps_json_clean_and_exits(tmp_path):
    make_plugin(tmp_path / "plug", "zoo-chatty-hooks", "zoo_chatty_hooks", """
        import threading, time
        from zoo.hookspecs import hookimpl

        @hookimpl
        def on_epoch_end(run, epoch, metrics):
            print("PLUGIN SAYS HELLO ON STDOUT")
            raise RuntimeError("observer broke")

        @hookimpl
        def on_run_end(run, summary):
            print("PLUGIN SAYS BYE")
            threading.Thread(target=time.sleep, args=(600,), name="plugin-sleeper").start()
        """)
    start = time.monotonic()
    proc = zoo("run", "timm:test_resnet", "-s", "finetune", "--epochs", "1", "--out",
               tmp_path / "runs", *TINY_FLAGS, "--json", "-q",
               env={"PYTHONPATH": str(tmp_path / "plug")}, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 200  # not the thread's 600 s
    summary = json.loads(proc.stdout)  # stdout is exactly JSON
    assert summary["status"] == "completed"
    assert "PLUGIN SAYS HELLO" in proc.stderr and "PLUGIN SAYS BYE" in proc.stderr
    assert "on_epoch_end raised RuntimeError: observer broke" in proc.stderr  # even with -q
    assert any("observer broke" in w for w in summary["warnings"])
    assert "plugin-sleeper" in proc.stderr  # said which thread was left behind


# -- loggers never block training ----------------------------------------------------------
class _StuckLogger:
    """A logger whose service never answers (a closed port behind a retrying client)."""

    release = None

    def __init__(self, run, first_epoch):
        pass

    def log_epoch(self, epoch, metrics):
        _StuckLogger.release.wait(60)

    def close(self, summary):
        pass


class StuckLoggerPlugin:
    name = "stuck-logger-plugin"

    @hookimpl
    def register_loggers(self, register):
        register("stuck", _StuckLogger)


def test_a_hanging_logger_does_not_block_training_or_the_end(tmp_path, monkeypatch):
    import threading

    from zoo.engine import loggers

    _StuckLogger.release = threading.Event()
    monkeypatch.setattr(loggers, "CLOSE_TIMEOUT_S", 1.0)
    start = time.monotonic()
    try:
        summary = run_tiny(make_catalog(StuckLoggerPlugin()), tmp_path, train={"epochs": 3},
                           loggers=["stuck"])
    finally:
        _StuckLogger.release.set()
    assert time.monotonic() - start < 40  # not 3 × 60 s of a logger that never returns
    assert summary["status"] == "completed"
    run_dir = _run_dir(tmp_path)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    written = json.loads((run_dir / "summary.json").read_text())
    assert any("loggers were still busy" in w for w in written["warnings"])


class WriterFails:
    name = "writer-fails-plugin"

    @hookimpl
    def register_metrics(self, register):
        def factory(num_classes):
            from torchmetrics.classification import MulticlassAccuracy

            return MulticlassAccuracy(num_classes=num_classes)

        def writer(run_dir, value, classes):
            raise OSError("writer exploded")

        register("acc-with-file", factory, writer=writer)


def test_a_metric_writer_failure_is_recorded_and_printed_with_quiet(tmp_path, capsys):
    summary = run_tiny(make_catalog(WriterFails()), tmp_path,
                       metrics=["accuracy", "acc-with-file"])
    assert summary["status"] == "completed"
    written = json.loads((_run_dir(tmp_path) / "summary.json").read_text())
    assert any("acc-with-file" in w and "writer exploded" in w for w in written["warnings"])
    assert "writer exploded" in capsys.readouterr().err
