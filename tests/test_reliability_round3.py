"""Reliability round 3, class G (issue 24): the rest — each a one-line clear error, or the
right behaviour: regular files only where zoo reads, a read-only ``$ZOO_HOME``, a completed
run resumed, ``-q`` on every command that shows progress, a deleted working directory,
symlinked class folders leaving the data root, network loggers' timeouts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zoo_cli_helpers import assert_one_line_error, cli, zoo

MODEL = "timm:test_resnet"


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "zoo"
    monkeypatch.setenv("ZOO_HOME", str(path))
    return path


def _weights_file(tmp_path: Path) -> Path:
    import timm

    torch.manual_seed(0)
    path = tmp_path / "w.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), path)
    return path


def test_a_fifo_as_the_store_manifest_is_an_error_not_a_hang(home, tmp_path):
    (home / "weights").mkdir(parents=True)
    os.mkfifo(home / "weights" / "manifest.json")
    proc = zoo("weights", "list", env={"ZOO_HOME": str(home)}, timeout=60)
    line = assert_one_line_error(proc)
    assert "manifest" in line and "FIFO" in line


def test_weights_import_into_an_unwritable_zoo_home_is_one_line(tmp_path, capsys,
                                                               monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ZOO_HOME", str(blocker / "home"))  # mkdir fails: ENOTDIR
    code, _, err = cli(capsys, "weights", "import", _weights_file(tmp_path), "--model", MODEL)
    line = assert_one_line_error(err, code)
    assert "cannot write the weight store" in line and "zoo bug" not in line


def test_read_only_store_error_names_the_fix(tmp_path, monkeypatch):
    import errno

    from zoo.errors import WeightsError
    from zoo.weights import store

    def refuse(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(WeightsError, match=r"Read-only file system; choose a writable place"):
        with store.locked(tmp_path / "ro"):
            pass


@pytest.mark.parametrize("command", ["compare", "rank", "lr-find", "shift", "explain"])
def test_every_command_that_shows_progress_takes_quiet_and_json(capsys, command):
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0 and "-q, --quiet" in out and "--json" in out


def test_lr_find_quiet_prints_the_result_only(capsys, tmp_path, home):
    args = ["lr-find", MODEL, "-s", "finetune", "--steps", "10", "--weights", "none",
            "--set", "data.params.per_class=8", "--out", tmp_path]
    code, out, _ = cli(capsys, *args, "-q")
    assert code == 0 and "suggested lr:" in out and "lr-find folder:" in out
    assert "zoo lr-find ·" not in out and "note:" not in out
    code, out, _ = cli(capsys, *args)
    assert code == 0 and "zoo lr-find ·" in out  # without -q the progress is there


def test_running_from_a_deleted_working_directory_is_one_line_or_works(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    code = ("import os, sys, runpy; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
            "sys.argv = ['zoo', 'list', 'test_*']; runpy.run_module('zoo', run_name='__main__')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1])] + [p for p in sys.path if p]))
    proc = subprocess.run([sys.executable, "-c", code, str(gone)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert "oneMKL" not in proc.stderr and "Traceback" not in proc.stderr
    if proc.returncode != 0:
        line = assert_one_line_error(proc)
        assert "working directory" in line


# -- symlinked class folders leaving the data root -------------------------------------------
def _image_folder(root: Path, classes=("a", "b"), n: int = 3) -> None:
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 40, 60, 0)).save(root / c / f"{i}.png")


def test_links_leaving_the_data_root_are_skipped_and_counted(tmp_path):
    from zoo_datasets.folder import scan

    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    _image_folder(data)
    _image_folder(outside, classes=("c", "x"), n=4)
    os.symlink(outside / "c", data / "c")                  # a class folder leaving the root
    os.symlink(outside / "x", data / "a" / "more")         # a subfolder leaving the root
    os.symlink(outside / "x" / "0.png", data / "b" / "9.png")  # a file leaving the root
    index = scan(str(data), False)
    assert index.classes == ["a", "b"]
    assert sorted(index.files) == [f"{c}/{i}.png" for c in "ab" for i in range(3)]
    [warning] = [w for w in index.warnings if "outside the data folder" in w]
    assert warning.startswith("skipped 3 symlink(s)") and "follow_links=true" in warning
    followed = scan(str(data), False, follow_links=True)    # the user opted in
    assert followed.classes == ["a", "b", "c"] and len(followed.files) == 6 + 4 + 4 + 1
    assert not any("outside the data folder" in w for w in followed.warnings)


def test_follow_links_is_a_checked_folder_parameter(tmp_path):
    from zoo.errors import DataError
    from zoo.jobspec import DataSpec
    from zoo_datasets.folder import build

    data = tmp_path / "data"
    _image_folder(data, n=6)
    ok = build(DataSpec(path=str(data), params={"follow_links": True}), "train", None, 0)
    assert len(ok) > 0
    for params in ({"follow_links": "yes"}, {"follw_links": True}):
        with pytest.raises(DataError, match="follow_links"):
            build(DataSpec(path=str(data), params=params), "train", None, 0)


def test_nproc_with_failing_ranks_prints_their_lines_and_no_torchrun_traceback(tmp_path):
    proc = zoo("run", MODEL, "-s", "finetune", "--weights", "none", "--data",
               tmp_path / "missing", "--nproc", "2", "--out", tmp_path / "runs", "-q",
               timeout=240)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    assert all(line.startswith("error: ") for line in lines), proc.stderr
    assert any("rank 0 of 2: data folder" in line for line in lines)
    assert lines[-1].startswith("error: distributed run failed")


# -- DANN resumes exactly ----------------------------------------------------------------------
def _dann_job(out, catalog, **train):
    from zoo.kit.testing import tiny_job
    from zoo.layering import complete_job

    return complete_job(tiny_job(
        out=str(out), strategy={"name": "dann"}, head={"name": "linear"},
        data={"name": "shift:digits", "max_per_class": 4, "test_split": 0.05,
              "params": {"transform": "noise", "severity": 3}},
        source_data={"name": "digits", "max_per_class": 4, "num_workers": 0,
                     "val_split": 0.05},
        train={"epochs": 3, "batch_size": 20, **train}), catalog)


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["train"]["loss"]
            for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("fault, train", [
    ("interrupt_after_epoch:1", {"early_stop_patience": 50}),  # every epoch written
    ("interrupt_at:2:1", {}),        # mid-epoch 2; epoch 1's checkpoint may be held (paced)
])
def test_dann_resumed_after_an_interrupt_has_the_uninterrupted_history(tmp_path, monkeypatch,
                                                                        fault, train):
    from zoo.engine.pipeline import run
    from zoo.errors import RunInterrupted
    from zoo.kit.testing import make_catalog

    catalog = make_catalog()
    full = run(_dann_job(tmp_path / "full", catalog, **train), catalog, quiet=True)
    monkeypatch.setenv("ZOO_FAULT", fault)
    with pytest.raises(RunInterrupted):
        run(_dann_job(tmp_path / "part", catalog, **train), catalog, quiet=True)
    monkeypatch.delenv("ZOO_FAULT")
    [part] = list((tmp_path / "part").iterdir())
    again = run(_dann_job(tmp_path / "part", catalog, **train), catalog, quiet=True,
                resume=str(part))
    assert _losses(part) == _losses(full["run_dir"])  # the λ ramp continued, not restarted
    assert again["test"] == full["test"]


def test_dann_term_state_holds_its_schedule_position():
    from zoo_strategies.domain_terms import DANNTerm

    term = DANNTerm(4, 8, epochs=3)
    term.calls, term._epoch_calls = 7, {1: 3, 2: 3, 3: 1}
    state = term.state_dict()
    assert int(state["progress_calls"]) == 7 and int(state["progress_first_epoch"]) == 3
    fresh = DANNTerm(4, 8, epochs=3)
    fresh.load_state_dict(state)  # strict: the extra keys are the term's own
    assert fresh.calls == 7 and fresh._epoch_calls == {1: 3}


# -- what the folder says and what can be resumed agree ----------------------------------------
class _TermAfterEpochLine:
    """SIGTERM from outside right after an epoch's line is in metrics.jsonl (an observer
    runs right after it is written)."""

    name = "sigterm-after-epoch-line"

    from zoo.hookspecs import hookimpl as _impl

    @_impl
    def on_epoch_end(self, run, epoch, metrics):
        import signal

        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_right_after_a_training_free_epoch_line_leaves_it_resumable(tmp_path):
    from zoo.errors import RunInterrupted
    from zoo.kit.testing import make_catalog, run_tiny

    with pytest.raises(RunInterrupted) as info:
        run_tiny(make_catalog(_TermAfterEpochLine()), tmp_path, strategy={"name": "ncm"})
    [run_dir] = list(tmp_path.iterdir())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and info.value.exit_code == 143
    # metrics.jsonl shows epoch 1, so the checkpoint of epoch 1 exists and the hint agrees
    assert "nothing to resume" not in str(info.value) and "--resume" in str(info.value)
    assert (run_dir / "checkpoint" / "last.safetensors").is_file()


def test_predict_names_a_fifo_for_what_it_is(tmp_path):
    from zoo.errors import DataError
    from zoo.runs.predict import decode_image

    os.mkfifo(tmp_path / "img.png")
    with pytest.raises(DataError, match=r"img.png is a FIFO \(named pipe\)"):
        decode_image(tmp_path / "img.png")
    with pytest.raises(DataError, match="does not exist"):
        decode_image(tmp_path / "missing.png")
