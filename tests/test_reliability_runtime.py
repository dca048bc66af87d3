"""Reliability round 2 (issue 13, sections 1, 4, 5): plugins at run time, the checkpoint as
one atomic unit, the run-folder lock, changed data on resume, empty splits, a training batch
of one image, DataLoader workers, folder symlinks, export crashes, plugin import hygiene.

Runs are in-process and tiny (``zoo.kit.testing``: tiny_cnn on 32-px images), except where
a real process boundary is the point (export's child process, stdout of ``--json``).
"""
from __future__ import annotations

import json
from dataclasses import replace
import os
from pathlib import Path

import pytest

from plugin_fixtures import broken_metric, make_plugin
from zoo.errors import CheckpointError, DataError, PluginError, RunInterrupted
from zoo.hookspecs import hookimpl
from zoo.kit.testing import make_catalog, run_tiny
from zoo_cli_helpers import assert_one_line_error, zoo


def _summary(out: Path) -> dict:
    [run_dir] = [p for p in Path(out).iterdir() if p.is_dir()]
    return json.loads((run_dir / "summary.json").read_text())


# -- 5. a plugin's bug at run time: one line naming plugin and component; summary failed ---------
class BadStrategy:
    name = "bad-strategy-plugin"

    @hookimpl
    def register_strategies(self, register):
        class Plan:
            def plan(self, model, groups, job, ctx=None):
                raise ValueError("plan exploded")

        register("exploding", Plan())


class BadMetric:
    name = "bad-metric-plugin"

    @hookimpl
    def register_metrics(self, register):
        register("broken", broken_metric)


class BadDataset:
    name = "bad-dataset-plugin"

    @hookimpl
    def register_datasets(self, register):
        def factory(spec, split, transform, seed):
            raise KeyError("factory exploded")

        register("exploding-data", factory)


@pytest.mark.parametrize("plugin, overrides, component", [
    (BadStrategy(), {"strategy": {"name": "exploding"}}, "strategy 'exploding'"),
    (BadMetric(), {"metrics": ["accuracy", "broken"]}, "metric 'broken'"),
    (BadDataset(), {"data": {"name": "exploding-data"}}, "dataset 'exploding-data'"),
])
def test_plugin_bug_at_run_time_is_one_line_and_summary_says_failed(tmp_path, plugin,
                                                                   overrides, component):
    cat = make_catalog(plugin)
    with pytest.raises(PluginError) as info:
        run_tiny(cat, tmp_path, **overrides)
    msg = str(info.value)
    assert "\n" not in msg and f"plugin '{plugin.name}'" in msg and component in msg
    assert "--debug" in msg and "exploded" in msg
    if "metrics" in overrides:  # failed during training: the run folder says so
        summary = _summary(tmp_path)
        assert summary["status"] == "failed" and "exploded" in summary["error"]
        assert "plugin 'bad-metric-plugin'" in summary["error"]
    else:  # a dataset or plan that fails does so before any run folder exists
        assert not tmp_path.exists() or not list(tmp_path.iterdir())


class RaisingObserver:
    name = "raising-observer"

    def __init__(self):
        self.calls = 0

    @hookimpl
    def on_epoch_end(self, run, epoch, metrics):
        self.calls += 1
        raise RuntimeError("observer exploded")

    @hookimpl
    def on_run_end(self, run, summary):
        raise RuntimeError("observer exploded at the end")


def test_raising_observer_is_reported_and_the_run_goes_on(tmp_path, capsys):
    obs = RaisingObserver()
    cat = make_catalog(obs)
    from zoo.engine.pipeline import run
    from zoo.kit.testing import tiny_job
    from zoo.layering import complete_job

    job = complete_job(tiny_job(out=str(tmp_path), train={"epochs": 2}), cat)
    summary = run(job, cat)  # not quiet: the warnings are printed
    assert summary["status"] == "completed" and obs.calls == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "plugin 'raising-observer': on_epoch_end raised" in text
    assert "on_run_end raised" in text


# -- plugin import and registration hygiene ---------------------------------------------------
@pytest.mark.parametrize("code, kind", [
    ("import sys\nsys.exit(3)\n", "SystemExit"),
    ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ("raise SystemExit('bye')\n", "SystemExit"),
])
def test_plugin_exiting_at_import_is_recorded_failed(tmp_path, monkeypatch, code, kind):
    import importlib

    from zoo.catalog import Catalog

    mod = f"zoo_exit_{abs(hash(code)) % 10_000}"
    make_plugin(tmp_path, "zoo-exiting", mod, code)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    cat = Catalog()
    rec = cat.pm.records["zoo-exiting"]
    assert rec.status == "failed" and kind in rec.error
    assert "linear" in cat.names("heads")


def test_plugin_printing_at_import_keeps_json_stdout_clean(tmp_path):
    make_plugin(tmp_path, "zoo-chatty", "zoo_chatty_mod", """
        print("hello from a chatty plugin")
        from zoo.hookspecs import hookimpl

        @hookimpl
        def register_heads(register):
            print("registering!")
        """)
    proc = zoo("plugins", "--json", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)  # stdout is exactly JSON
    assert "hello from a chatty plugin" in proc.stderr and "registering!" in proc.stderr


class HalfPlugin:
    name = "half-plugin"

    @hookimpl
    def register_heads(self, register):
        register("half-head", object())

    @hookimpl
    def register_strategies(self, register):
        register("half-strategy", object())
        raise RuntimeError("registration exploded")


def test_registration_hook_that_raises_registers_nothing_of_that_plugin():
    from zoo.catalog import Catalog
    from zoo.kit.testing import make_catalog as _mk

    base = _mk()
    pm = base.pm
    pm.add_plugin(HalfPlugin(), "half-plugin")
    cat = Catalog(pm, registry=base.registry)
    assert not cat.has("heads", "half-head") and not cat.has("strategies", "half-strategy")
    rec = pm.records["half-plugin"]
    assert rec.status == "failed" and "registration exploded" in rec.error
    assert rec.components == {} and cat.has("heads", "linear")


# -- 1. the checkpoint: one file, the previous generation kept, validated on load -------------
def test_checkpoint_is_one_file_with_a_previous_generation(tmp_path):
    from zoo.engine.checkpoint import load_checkpoint, read_info

    cat = make_catalog()
    # early stopping armed: every epoch is written (pacing may hold the last of a tiny run)
    summary = run_tiny(cat, tmp_path, train={"epochs": 3, "early_stop_patience": 50})
    run_dir = Path(summary["run_dir"])
    names = sorted(p.name for p in (run_dir / "checkpoint").iterdir())
    assert names == ["last.safetensors", "prev.safetensors"]
    assert read_info(run_dir)["epoch"] == 3
    # a damaged last generation: loading falls back to the previous one, and says so
    last = run_dir / "checkpoint" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:500])
    said = []
    _, state, info = load_checkpoint(run_dir, warn=said.append)
    assert state.epoch == 2 and info["epoch"] == state.epoch
    assert said and f"previous checkpoint (epoch {state.epoch})" in said[0]
    (run_dir / "checkpoint" / "prev.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match="no earlier checkpoint"):
        load_checkpoint(run_dir)


def test_early_stop_then_resume_trains_no_extra_epoch(tmp_path, monkeypatch):
    from zoo.engine.checkpoint import read_info

    cat = make_catalog()
    kw = {"train": {"epochs": 6, "early_stop_patience": 1, "lr": 1e-9},
          "monitor": {"metric": "accuracy", "mode": "max"}}
    full = run_tiny(cat, tmp_path / "a", **kw)
    stopped = read_info(full["run_dir"])
    assert stopped["stopped_early"] and len(stopped["history"]) < 6
    # resume from the checkpoint written at the stopping epoch: nothing more is trained
    from zoo.engine.pipeline import run
    from zoo.kit.testing import tiny_job
    from zoo.layering import complete_job

    summary_path = Path(full["run_dir"]) / "summary.json"
    summary_path.write_text(json.dumps(dict(full, status="interrupted")))
    job = complete_job(tiny_job(out=str(tmp_path / "a"), **kw), cat)
    again = run(job, cat, quiet=True, resume=full["run_dir"])
    assert again["test"] == full["test"]
    lines = (Path(full["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(stopped["history"])


# -- the lock and changed data -----------------------------------------------------------------
def test_second_process_cannot_use_a_locked_run_folder(tmp_path):
    from zoo.engine.guard import RunRecord

    first, second = RunRecord(), RunRecord()
    first.lock(tmp_path)
    with pytest.raises(CheckpointError, match="in use by another zoo process"):
        second.lock(tmp_path)
    first.release()
    second.lock(tmp_path)  # free again
    second.release()
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


def test_resume_after_the_data_changed_is_refused(tmp_path):
    from PIL import Image

    from zoo.engine.pipeline import run
    from zoo.kit.testing import tiny_job
    from zoo.layering import complete_job

    data = tmp_path / "data"
    for c, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (data / c).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (16, 16), tuple(max(0, v - 9 * i) for v in color)).save(
                data / c / f"{i}.png")
    cat = make_catalog()
    job = complete_job(tiny_job(out=str(tmp_path / "runs"), train={"epochs": 2},
                                data={"name": None, "path": str(data)}), cat)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_FAULT", "interrupt_after_epoch:1")
        with pytest.raises(RunInterrupted):
            run(job, cat, quiet=True)
    [run_dir] = list((tmp_path / "runs").iterdir())
    splits = (run_dir / "splits.json").read_text()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(data / "red" / "new.png")
    with pytest.raises(CheckpointError, match="the data changed since the run started"):
        run(job, cat, quiet=True, resume=str(run_dir))
    assert (run_dir / "splits.json").read_text() == splits  # not re-split, not overwritten
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"


# -- 4. empty splits, a batch of one, workers ---------------------------------------------------
class NoValData:
    name = "no-val-data"

    @hookimpl
    def register_datasets(self, register):
        from zoo.kit.testing.components import tiny_dataset_factory

        class Empty:
            classes = ["colour0", "colour1", "colour2"]

            def __len__(self):
                return 0

        def factory(spec, split, transform, seed):
            return Empty() if split == "val" else tiny_dataset_factory(spec, split,
                                                                        transform, seed)

        register("no-val", factory)


def test_no_test_or_val_images_is_an_error_not_accuracy_zero(tmp_path):
    cat = make_catalog(NoValData())
    with pytest.raises(DataError, match="no test images"):
        run_tiny(cat, tmp_path, data={"test_split": 0.0})
    with pytest.raises(DataError, match="no validation images"):
        run_tiny(cat, tmp_path, data={"name": "no-val"})
    assert not tmp_path.exists() or not list(tmp_path.iterdir())
    # data.val_split=0 asks for no val split: the training loss is monitored instead
    assert run_tiny(cat, tmp_path, data={"name": "no-val", "val_split": 0.0})["status"] \
        == "completed"


def test_last_training_batch_of_one_image_is_dropped_and_said(tmp_path):
    from zoo.engine.data import make_loader

    notes: list = []
    loader = make_loader(list(range(17)), 8, True, 0, 0, "cpu", notes)
    assert loader.drop_last and len(loader) == 2
    assert notes and "BatchNorm" in notes[0] and "dropped" in notes[0]
    assert not make_loader(list(range(18)), 8, True, 0, 0, "cpu").drop_last
    from zoo.kit.testing import tiny_job
    from zoo.kit.testing.components import tiny_dataset_factory

    n = len(tiny_dataset_factory(tiny_job().data, "train"))
    cat = make_catalog()
    summary = run_tiny(cat, tmp_path, train={"batch_size": n - 1})  # n-1, then 1 left over
    assert summary["status"] == "completed"
    assert any("BatchNorm" in w for w in summary["warnings"])


def test_augmentation_is_seeded_per_sample_and_epoch():
    import torch

    from zoo.engine.data import SeededSampler, Transformed

    noisy = Transformed([(torch.zeros(1), 0)] * 4, lambda x: x + torch.rand(1))
    sampler = SeededSampler(range(4), seed=5)
    sampler.set_epoch(2)
    keys = list(sampler)
    first = [noisy[k][0].item() for k in keys]
    torch.manual_seed(123)  # the caller's RNG neither matters nor is changed
    state = torch.get_rng_state()
    assert [noisy[k][0].item() for k in reversed(keys)] == first[::-1]
    assert torch.equal(torch.get_rng_state(), state)
    sampler.set_epoch(3)
    assert [noisy[k][0].item() for k in sampler] != first


def test_decode_failure_in_a_worker_names_the_file():
    from zoo.errors import DataError as DE

    text = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most "
            "recent call last):\n  File \"x.py\", line 1\nzoo.errors.DataError: cannot read "
            "/data/cat/7.jpg (truncated) — remove it")
    assert str(DE(text)) == ("cannot read /data/cat/7.jpg (truncated) — remove it "
                             "(in a DataLoader worker)")


def test_symlink_to_an_ancestor_invents_no_class(tmp_path):
    from PIL import Image

    from zoo_datasets.folder import scan

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / c / f"{i}.png")
    os.symlink(tmp_path, tmp_path / "loop")           # would be a class holding everything
    os.symlink(tmp_path, tmp_path / "a" / "up")       # would relabel b's images as a
    os.symlink(tmp_path / "b", tmp_path / "a" / "sib")  # likewise, through a sibling
    index = scan(str(tmp_path), False)
    assert index.classes == ["a", "b"]
    assert sorted(index.files) == [f"{c}/{i}.png" for c in "ab" for i in range(3)]
    assert all(f.startswith(index.classes[lab] + "/")
               for f, lab in zip(index.files, index.labels))


# -- export in a child process ------------------------------------------------------------------
def test_export_that_aborts_in_cpp_is_one_line(tmp_path):
    from zoo_cli_helpers import tiny_run

    summary = tiny_run(tmp_path / "runs", "r")
    target = tmp_path / "exp" / "m.pt2"
    proc = zoo("export", summary["run_dir"], "--format", "torch-export", "--out", target,
               env={"ZOO_FAULT": "abort_in_export"})
    line = assert_one_line_error(proc)
    assert "SIGABRT" in line and "nothing was written" in line
    assert not target.exists() and not [p for p in target.parent.glob(".*")]


def test_workers_do_not_change_results_and_resume_is_exact_with_workers(tmp_path):
    from zoo.engine.pipeline import run
    from zoo.kit.testing import tiny_job
    from zoo.layering import complete_job

    cat = make_catalog()

    def job(out, workers):
        return complete_job(tiny_job(out=str(tmp_path / out), train={"epochs": 3},
                                     data={"augment": "light", "num_workers": workers}), cat)

    zero = run(job("zero", 0), cat, quiet=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_FAULT", "interrupt_after_epoch:1")
        with pytest.raises(RunInterrupted):
            run(job("two", 2), cat, quiet=True)
    [run_dir] = list((tmp_path / "two").iterdir())
    from zoo.engine.checkpoint import read_info

    assert read_info(run_dir)["loader"]["workers"] == 2  # recorded, reused on resume
    two = run(job("two", None), cat, quiet=True, resume=str(run_dir))
    assert two["loader"]["workers"] == 2
    assert two["test"] == zero["test"]

    def hist(d):
        return [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]

    assert [r["train"]["loss"] for r in hist(run_dir)] == \
        [r["train"]["loss"] for r in hist(zero["run_dir"])]


def test_joint_source_head_is_in_the_checkpoint_and_restored(tmp_path):
    import torch

    from zoo.engine.checkpoint import load_checkpoint, restore_loss_terms
    from zoo.engine.pipeline import run
    from zoo.kit.testing import tiny_job
    from zoo.layering import complete_job

    cat = make_catalog()
    job = complete_job(tiny_job(out=str(tmp_path), train={"epochs": 2},
                                strategy={"name": "joint"},
                                source_data={"name": "tiny", "params": {"data_seed": 4}}), cat)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_FAULT", "interrupt_after_epoch:1")
        with pytest.raises(RunInterrupted):
            run(job, cat, quiet=True)
    [run_dir] = list(tmp_path.iterdir())
    _, state, info = load_checkpoint(run_dir)
    assert [t["name"] for t in info["loss_terms"]] == ["joint-source"]
    saved = state.term_states[0]
    assert set(saved) == {"head.weight", "head.bias", "drawn"}  # head + source stream position
    assert int(saved["drawn"]) > 0
    fresh = torch.nn.Module()
    fresh.head = torch.nn.Linear(*saved["head.weight"].shape[::-1])
    fresh.register_buffer("drawn", torch.zeros((), dtype=torch.long))
    restore_loss_terms([fresh], state.term_states, run_dir)
    assert torch.equal(fresh.head.weight, saved["head.weight"])
    resumed = run(job, cat, quiet=True, resume=str(run_dir))
    assert resumed["status"] == "completed"
    # exact: the resumed run equals an uninterrupted one, epoch by epoch
    (tmp_path / "whole").mkdir()
    whole = run(replace(job, out=str(tmp_path / "whole")), cat, quiet=True)

    def hist(d):
        return [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]

    assert [r["train"]["loss"] for r in hist(run_dir)] == \
        [r["train"]["loss"] for r in hist(whole["run_dir"])]
    assert resumed["test"] == whole["test"]
