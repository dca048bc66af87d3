"""Reliability round 3, classes D and E (issue 24): a checkpoint's contents are verified
(tensor checksum, a state that agrees with itself and the plan; a damaged generation falls
back to ``prev.safetensors``), and weight values are checked (finite, floating point) where
weights are imported or loaded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zoo.engine.checkpoint import LAST, META_KEY, PREV, load_checkpoint
from zoo.errors import CheckpointError
from zoo.kit.testing import make_catalog, run_tiny


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """A finished 3-epoch tiny run whose every epoch was checkpointed; (run_dir, summary)."""
    out = tmp_path_factory.mktemp("ckpt")
    # early stopping armed (never triggered): every epoch is written, not paced
    summary = run_tiny(make_catalog(), out, train={"epochs": 3, "early_stop_patience": 50})
    return Path(summary["run_dir"]), summary


@pytest.fixture
def run_dir(three_epochs, tmp_path):
    """A fresh copy of the run folder for each test to damage."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(three_epochs[0], copy)
    return copy


def _rewrite_state(path: Path, edit) -> None:
    """Rewrite ``path``'s JSON state through ``edit(info)`` (tensors untouched)."""
    with safe_open(str(path), "pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    info = json.loads(meta[META_KEY])
    edit(info)
    meta[META_KEY] = json.dumps(info)
    save_file(tensors, str(path), metadata=meta)


def _rot_tensor_bytes(path: Path, count: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # after the header: tensor data
    middle = start + (len(data) - start) // 2
    for i in range(middle, min(len(data), middle + count)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _edits():
    def epoch_99(info):
        info["epoch"] = 99

    def no_best_value(info):
        del info["best_value"]

    def history_reversed(info):
        info["history"] = list(reversed(info["history"]))

    def history_short(info):
        info["history"] = info["history"][:1]

    def best_after_history(info):
        info["best_epoch"] = 7

    return [epoch_99, no_best_value, history_reversed, history_short, best_after_history]


@pytest.mark.parametrize("edit", _edits(), ids=lambda f: f.__name__)
def test_inconsistent_state_falls_back_to_the_previous_generation(run_dir, edit):
    _rewrite_state(run_dir / "checkpoint" / LAST, edit)
    said: list = []
    _, state, info = load_checkpoint(run_dir, warn=said.append, epochs=3)
    assert state.epoch == 2 and len(state.history) == 2
    assert said and "damaged or edited checkpoint" in said[0]
    assert "previous checkpoint (epoch 2)" in said[0]


def test_epoch_beyond_the_plan_is_refused_when_both_generations_say_so(run_dir):
    for name in (LAST, PREV):
        _rewrite_state(run_dir / "checkpoint" / name, lambda info: info.update(epoch=99))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(run_dir, epochs=3)
    msg = str(info.value)
    assert "\n" not in msg and "epoch 99" in msg and "no earlier checkpoint" in msg


def test_missing_best_value_is_a_clear_error_not_a_zoo_bug(run_dir):
    for name in (LAST, PREV):
        _rewrite_state(run_dir / "checkpoint" / name, lambda info: info.pop("best_value"))
    with pytest.raises(CheckpointError, match="lacks 'best_value'"):
        load_checkpoint(run_dir)


def test_rotten_tensor_bytes_fall_back_to_prev(run_dir):
    _rot_tensor_bytes(run_dir / "checkpoint" / LAST)
    said: list = []
    _, state, _ = load_checkpoint(run_dir, warn=said.append, epochs=3)
    assert state.epoch == 2
    assert "does not match the checksum" in said[0]


def test_rotten_newest_checkpoint_resumes_exactly_from_prev(three_epochs, run_dir):
    """End to end: the damaged generation is not used; the resume retrains epoch 3 from
    epoch 2's state and ends where the uninterrupted run ended."""
    from zoo.engine.pipeline import run
    from zoo.kit.testing import tiny_job
    from zoo.layering import complete_job

    _, full = three_epochs
    _rot_tensor_bytes(run_dir / "checkpoint" / LAST)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps(dict(summary, status="interrupted")))
    cat = make_catalog()
    job = complete_job(tiny_job(out=str(run_dir.parent), train={
        "epochs": 3, "early_stop_patience": 50}), cat)
    again = run(job, cat, quiet=True, resume=str(run_dir))
    assert again["test"] == full["test"]
    history = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_checkpoint_files_keep_their_names(three_epochs):
    names = sorted(p.name for p in (three_epochs[0] / "checkpoint").iterdir())
    assert names == ["last.safetensors", "prev.safetensors"]


# -- E. weight values: finite, floating point -------------------------------------------------
MODEL = "timm:test_resnet"


def _timm_state() -> dict:
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_resnet").state_dict()


def _poisoned(state: dict, how: str) -> tuple[dict, str]:
    name = next(k for k, v in state.items() if k.endswith("conv1.weight"))
    value = state[name].clone()
    if how == "nan":
        value.view(-1)[3] = float("nan")
    elif how == "inf":
        value.view(-1)[0] = float("-inf")
    elif how == "int":
        value = (value * 100).to(torch.int32)
    elif how == "bool":
        value = value > 0
    return dict(state, **{name: value}), name


@pytest.mark.parametrize("how, problem", [("nan", "contains NaN/Inf: not finite"),
                                          ("inf", "contains NaN/Inf: not finite"),
                                          ("int", "torch.int32 where the model holds"),
                                          ("bool", "torch.bool where the model holds")])
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_bad_weight_values_are_refused_naming_file_tensor_and_problem(tmp_path, capsys,
                                                                      monkeypatch, how,
                                                                      problem, fmt):
    from zoo_cli_helpers import assert_one_line_error, cli

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))
    state, name = _poisoned(_timm_state(), how)
    path = tmp_path / f"w.{fmt}"
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    code, _, err = cli(capsys, "weights", "import", path, "--model", MODEL)
    line = assert_one_line_error(err, code)
    assert str(path) in line and f"'{name}'" in line and problem in line
    assert not (tmp_path / "zoo" / "weights" / "manifest.json").exists()
    if fmt == "pth":
        return
    out = tmp_path / "runs"
    code, _, err = cli(capsys, "run", MODEL, "-s", "finetune", "--epochs", "1", "--out", out,
                       "--weights", path, "--set", "data.params.per_class=4", "-q")
    line = assert_one_line_error(err, code)
    assert f"'{name}'" in line and problem in line and "learning rate" not in line
    assert not out.exists() or not any(out.iterdir())


def test_integer_buffers_stay_accepted(tmp_path, monkeypatch):
    """num_batches_tracked is int64 in the model too: not a dtype problem."""
    from zoo.weights.values import check_weight_values

    state = _timm_state()
    ints = [k for k, v in state.items() if not v.is_floating_point()]
    assert ints  # the check is meaningful: the state has integer buffers
    check_weight_values(state, state, "x")


@pytest.mark.parametrize("header", [b"[1, 2, 3]", b"\"text\"", b"{\"__metadata__\": [1]}"])
def test_safetensors_header_that_is_not_an_object_is_one_line(tmp_path, capsys, monkeypatch,
                                                              header):
    from zoo_cli_helpers import assert_one_line_error, cli

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    code, _, err = cli(capsys, "weights", "import", path, "--model", MODEL)
    assert "not a valid .safetensors file" in assert_one_line_error(err, code)


@pytest.mark.parametrize("name", ["fifo", "fifo.safetensors"])
def test_fifo_as_weights_file_is_named_for_what_it_is(tmp_path, capsys, monkeypatch, name):
    import os

    from zoo_cli_helpers import assert_one_line_error, cli

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))
    fifo = tmp_path / name
    os.mkfifo(fifo)
    code, _, err = cli(capsys, "weights", "import", fifo, "--model", MODEL)
    assert "FIFO" in assert_one_line_error(err, code)
    code, _, err = cli(capsys, "run", MODEL, "-s", "finetune", "--epochs", "1", "--out",
                       tmp_path / "runs", "--weights", fifo, "-q")
    line = assert_one_line_error(err, code)
    assert "FIFO" in line and "does not exist" not in line
