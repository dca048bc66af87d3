"""Bad input around weights and runs: each is one line on stderr (``error: ...``), exit code 2,
and nothing is overwritten.

Corrupt/truncated ``.safetensors`` (``--weights FILE`` and ``zoo weights import``), a
checkpoint of another architecture, a changed number of classes on ``--resume``, a
``RUN_DIR`` that is not a (finished) run for eval/predict/export/resume, an undecodable image
in ``zoo predict``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zoo_cli_helpers import TINY_FLAGS, assert_one_line_error, cli, snapshot, zoo

MODEL = "timm:test_resnet"


@pytest.fixture(autouse=True)
def store_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run and an interrupted one (after epoch 1 of 2)."""
    out = tmp_path_factory.mktemp("runs")
    from zoo_cli_helpers import tiny_run

    done = tiny_run(out, "done")
    part = zoo("run", MODEL, "-s", "finetune", "--epochs", "2", "--out", out, "--name", "part",
               *TINY_FLAGS, "-q", env={"ZOO_FAULT": "interrupt_after_epoch:1"})
    assert part.returncode == 130, part.stderr
    return out, Path(done["run_dir"]), out / "part"


def _timm_file(path: Path, arch: str = "test_resnet") -> Path:
    import timm

    torch.manual_seed(0)
    save_file(timm.create_model(arch).state_dict(), path)
    return path


# -- weights files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_safetensors_as_weights_and_import(tmp_path, capsys, damage):
    path = _timm_file(tmp_path / "w.safetensors")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096),
                      "empty": b""}[damage])
    out = tmp_path / "runs"
    code, _, err = cli(capsys, "run", MODEL, "-s", "finetune", "--epochs", "1", "--out", out,
                       "--weights", path, "--set", "data.params.per_class=20", "-q")
    assert ".safetensors" in assert_one_line_error(err, code)
    assert not out.exists() or not any(out.iterdir())          # no run folder was started
    code, _, err = cli(capsys, "weights", "import", path, "--model", MODEL)
    assert str(path) in assert_one_line_error(err, code)
    assert not (tmp_path / "zoo" / "weights" / "manifest.json").exists()


def test_checkpoint_of_another_architecture(tmp_path, capsys, finished):
    other = _timm_file(tmp_path / "resnet10t.safetensors", "resnet10t")
    out = tmp_path / "runs"
    code, _, err = cli(capsys, "run", MODEL, "-s", "finetune", "--epochs", "1", "--out", out,
                       "--weights", other, "--set", "data.params.per_class=20", "-q")
    assert "another architecture" in assert_one_line_error(err, code)
    assert not out.exists() or not any(out.iterdir())
    code, _, err = cli(capsys, "weights", "import", other, "--model", MODEL)
    assert "another architecture" in assert_one_line_error(err, code)
    # a zoo run's model.safetensors offered to a different architecture
    _, done, _ = finished
    code, _, err = cli(capsys, "run", "timm:resnet10t", "-s", "finetune", "--epochs", "1",
                       "--out", out, "--weights", done / "model.safetensors",
                       "--set", "data.params.per_class=20", "--image-size", "32", "-q")
    assert "do not fit" in assert_one_line_error(err, code)
    assert not out.exists() or not any(out.iterdir())


def test_a_pth_that_is_not_a_state_dict(tmp_path, capsys):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    code, _, err = cli(capsys, "weights", "import", path, "--model", MODEL)
    assert "not a state dict" in assert_one_line_error(err, code)


# -- resume ----------------------------------------------------------------------------------------
def test_resume_with_a_changed_number_of_classes(finished, capsys, tmp_path):
    import shutil

    _, _, part = finished
    copy = tmp_path / "part-copy"
    shutil.copytree(part, copy)
    job = copy / "job.yaml"
    job.write_text(job.read_text().replace("per_class: 20", "per_class: 20\n    classes: 4"))
    before = snapshot(copy)
    code, _, err = cli(capsys, "run", "--resume", copy)
    line = assert_one_line_error(err, code)
    assert "8 classes" in line and "4" in line
    assert snapshot(copy) == before


def test_resume_with_a_checkpoint_of_another_architecture(finished, capsys, tmp_path):
    import shutil

    _, _, part = finished
    copy = tmp_path / "part-arch"
    shutil.copytree(part, copy)
    job = copy / "job.yaml"
    job.write_text(job.read_text().replace("model: timm:test_resnet", "model: timm:resnet10t"))
    before = snapshot(copy)
    code, _, err = cli(capsys, "run", "--resume", copy)
    line = assert_one_line_error(err, code)
    assert "does not fit" in line and "did job.yaml change" in line
    assert snapshot(copy) == before


def test_resume_of_a_finished_run_changes_nothing(finished, capsys):
    _, done, _ = finished
    before = snapshot(done)
    code, out, err = cli(capsys, "run", "--resume", done)
    # complete is success for a requeue script: exit 0, and it says so (issue 24)
    assert code == 0 and "the run is complete" in out and not err.strip()
    code, out, _ = cli(capsys, "run", "--resume", done, "--json")
    assert code == 0 and json.loads(out)["status"] == "completed"
    assert snapshot(done) == before


def test_resume_with_a_corrupt_checkpoint(finished, capsys, tmp_path):
    import shutil

    _, _, part = finished
    copy = tmp_path / "part-bad"
    shutil.copytree(part, copy)
    ckpt = copy / "checkpoint" / "last.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = snapshot(copy)
    code, _, err = cli(capsys, "run", "--resume", copy)
    assert "last.safetensors" in assert_one_line_error(err, code)
    assert snapshot(copy) == before


# -- RUN_DIR that is not a run ---------------------------------------------------------------------
def _not_runs(tmp_path: Path, finished) -> dict[str, Path]:
    empty = tmp_path / "empty"
    empty.mkdir()
    return {"missing": tmp_path / "nope", "empty": empty, "file": Path(__file__),
            "unfinished": finished[2]}


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "unfinished"])
def test_eval_predict_export_on_something_that_is_not_a_finished_run(kind, finished, capsys,
                                                                     tmp_path):
    from PIL import Image

    target = _not_runs(tmp_path, finished)[kind]
    img = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(img)
    before = snapshot(target) if target.is_dir() else None
    for args in (["eval", target], ["predict", target, img],
                 ["export", target, "--format", "safetensors"],
                 ["export", target, "--format", "torch-export"]):
        code, _, err = cli(capsys, *args)
        line = assert_one_line_error(err, code)
        assert ("not a zoo run" in line or "does not exist" in line or
                "did not finish" in line), line
    if before is not None:
        assert snapshot(target) == before


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_resume_of_something_that_is_not_a_run(kind, finished, capsys, tmp_path):
    target = _not_runs(tmp_path, finished)[kind]
    code, _, err = cli(capsys, "run", "--resume", target)
    assert_one_line_error(err, code)


def test_model_safetensors_damaged(finished, capsys, tmp_path):
    import shutil

    _, done, _ = finished
    copy = tmp_path / "done-bad"
    shutil.copytree(done, copy)
    model = copy / "model.safetensors"
    model.write_bytes(model.read_bytes()[:2000])
    before = snapshot(copy)
    for args in (["eval", copy], ["export", copy, "--format", "onnx"]):
        code, _, err = cli(capsys, *args)
        assert "model.safetensors" in assert_one_line_error(err, code)
    assert snapshot(copy) == before


# -- predict ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"definitely not an image", "truncated-png"])
def test_predict_undecodable_image(finished, capsys, tmp_path, content):
    from PIL import Image

    _, done, _ = finished
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40), (0, 128, 255)).save(good)
    bad = tmp_path / "bad.jpg"
    if content == "truncated-png":
        bad = tmp_path / "bad.png"
        bad.write_bytes(good.read_bytes()[:60])
    else:
        bad.write_bytes(content)
    code, out, err = cli(capsys, "predict", done, good, bad, "--json")
    line = assert_one_line_error(err, code)
    assert str(bad) in line and out == ""
    code, _, err = cli(capsys, "predict", done, tmp_path / "missing.png")
    assert "does not exist" in assert_one_line_error(err, code)


def test_bad_input_through_the_real_cli(finished, tmp_path):
    """The same contract from a real process (stderr, exit code), not only in-process."""
    _, done, _ = finished
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    assert_one_line_error(zoo("predict", done, bad))
    assert_one_line_error(zoo("eval", tmp_path / "nope"))
    summary = json.loads((done / "summary.json").read_text())
    assert summary["status"] == "completed"
