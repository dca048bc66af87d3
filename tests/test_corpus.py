"""The bad-input corpus, in-process (docs/reliability.md, "Validation corpus and fuzz").

Every file under ``tests/corpus/`` is one case; a case is refused with exactly one
``error: `` line naming what is wrong, exit code 2, no traceback, never the "zoo bug" path,
and nothing is trained or written:

- ``values/*.yaml``: job files with bad values (``--config F --plan``), first line
  ``# expect: TEXT`` — TEXT must appear in the error;
- ``registries/*.yaml``: registry files with wrong shapes (``--registry F --plan``);
- ``runfolders/*.yaml``: damage to one file of a finished run (``model.safetensors``
  metadata, ``splits.json``, ``summary.json``, ``job.yaml``), then ``eval``/``predict``/
  ``export``/``runs`` on the copy;

plus non-regular files given as YAML (FIFO, ``/dev/zero``, a folder), CLI options
(``--device``, ``--out``) and the weight store's containment (``--tag ../x``, a
hand-edited manifest making ``zoo weights rm`` delete a file outside the store).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from cli_inprocess import assert_clean, invoke

CORPUS = Path(__file__).parent / "corpus"
TINY = ["--weights", "none", "--set", "data.params.per_class=4"]
MODEL = "timm:test_resnet"


def _expect(path: Path) -> str:
    first = path.read_text(errors="replace").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: ...'"
    return first[len("# expect: "):].strip()


def _refused(code, out, err, expect: str | None = None) -> str:
    assert_clean(code, out, err, allowed=(2,))
    if expect:
        assert expect in err, (expect, err)
    return err


@pytest.mark.parametrize("name", sorted(p.name for p in (CORPUS / "values").iterdir()))
def test_bad_values(tmp_path, name):
    path = CORPUS / "values" / name
    code, out, err = invoke("run", MODEL, "--config", path, "--plan", "--out", tmp_path, *TINY)
    _refused(code, out, err, _expect(path))
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("name", sorted(p.name for p in (CORPUS / "registries").iterdir()))
def test_bad_registries(tmp_path, name):
    path = CORPUS / "registries" / name
    code, out, err = invoke("run", MODEL, "--registry", path, "--plan", *TINY)
    _refused(code, out, err, _expect(path))
    assert not Path("/tmp/zoo-pwned").exists()


# -- files that are not regular files ----------------------------------------------------------
@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "job.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "folder"])
def test_non_regular_files_refused(tmp_path, fifo, kind):
    """A FIFO used to hang, /dev/zero to read for ever."""
    target = {"fifo": fifo, "dev_zero": Path("/dev/zero"), "folder": tmp_path}[kind]
    for option in ("--config", "--registry"):
        code, out, err = invoke("run", MODEL, option, target, "--plan", *TINY)
        line = _refused(code, out, err, str(target))
        assert "regular file" in line


# -- run folders: every file read is untrusted ------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run (1 epoch, 8 classes × 4 images) and an image to predict."""
    from PIL import Image

    from zoo.api import load_job, run

    out = tmp_path_factory.mktemp("corpus-runs")
    job = load_job(MODEL, weights="none", out=str(out), sets=[
        "train.epochs=1", "data.params.per_class=4", "name=done"])
    summary = run(job)
    image = out / "img.png"
    Image.new("RGB", (32, 32), (200, 20, 20)).save(image)
    return Path(summary["run_dir"]), image


def _damage(run_dir: Path, case: dict) -> None:
    import safetensors
    from safetensors.torch import load_file, save_file

    if case["file"] == "model-meta":
        path = run_dir / "model.safetensors"
        with safetensors.safe_open(str(path), "pt") as fh:
            meta = dict(fh.metadata() or {})
        tensors = load_file(str(path))
        zoo_meta = json.loads(meta["zoo"])
        zoo_meta.update(case.get("set", {}))
        for key in case.get("drop", []):
            zoo_meta.pop(key, None)
        meta["zoo"] = case["raw"] if "raw" in case else json.dumps(zoo_meta)
        save_file(tensors, str(path), metadata=meta)
        return
    path = run_dir / case["file"]
    if case.get("delete") or case.get("fifo"):
        path.unlink()
    if case.get("fifo"):
        os.mkfifo(path)
    elif "text" in case:
        path.write_text(case["text"])


@pytest.mark.parametrize("name", sorted(p.name for p in (CORPUS / "runfolders").iterdir()))
def test_damaged_run_folders(tmp_path, finished, name):
    done, image = finished
    case = yaml.safe_load((CORPUS / "runfolders" / name).read_text())
    copy = tmp_path / "run"
    shutil.copytree(done, copy)
    _damage(copy, case)
    code_wanted = case.get("code", 2)
    commands = {"eval": ["eval", copy], "predict": ["predict", copy, image],
                "export": ["export", copy, "--out", tmp_path / "exported.safetensors"],
                "runs": ["runs", tmp_path]}
    for command in case.get("commands", ["eval", "predict", "export"]):
        code, out, err = invoke(*commands[command])
        assert_clean(code, out, err, allowed=(code_wanted,))
        if code_wanted == 2:
            target = "model.safetensors" if case["file"] == "model-meta" else case["file"]
            assert target in err and case["expect"] in err, (command, err)
    assert not (tmp_path / "exported.safetensors").exists() or code_wanted == 0


def test_checkpoint_info_checked():
    """``checkpoint/last.json`` fields: the helper the resume path calls."""
    from zoo.errors import CheckpointError
    from zoo.io.runfolder import check_checkpoint_info

    good = {"epoch": 2, "best_value": 0.5, "best_epoch": 1, "bad_epochs": 0, "history": [{}],
            "optimizer": None, "best_from_model": []}
    assert check_checkpoint_info(dict(good), "last.json")["epoch"] == 2
    for bad in ({"epoch": "2"}, {"epoch": 1e9}, {"epoch": True}, {"history": 5},
                {"best_value": "high"}, {"optimizer": [1]}, {"best_epoch": -1}):
        with pytest.raises(CheckpointError, match="last.json"):
            check_checkpoint_info({**good, **bad}, "last.json")
    with pytest.raises(CheckpointError, match="mapping"):
        check_checkpoint_info([1], "last.json")


# -- options checked before any work ----------------------------------------------------------
@pytest.mark.parametrize("device", ["nonsense", "cuda:x", "gpu", "cuda:99999"])
def test_device_on_eval_and_predict(finished, device):
    done, image = finished
    for args in (["eval", done, "--device", device],
                 ["predict", done, image, "--device", device]):
        code, out, err = invoke(*args)
        _refused(code, out, err, "--device")


def test_out_that_is_a_file_or_read_only(tmp_path, finished):
    done, _ = finished
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file, a_file / "below", Path("/proc/zoo-runs")):
        code, o, err = invoke("run", MODEL, "--epochs", "1", "--out", out, *TINY)
        _refused(code, o, err, "--out")
        code, o, err = invoke("export", done, "--out", Path(out) / "m.safetensors")
        _refused(code, o, err)
    assert a_file.read_text() == "x"


def test_compare_checks_every_strategy_first(tmp_path):
    code, out, err = invoke("compare", MODEL, "--strategies", "linear-probe,finetun",
                            "--out", tmp_path, *TINY)
    _refused(code, out, err, "finetun")
    assert not any(tmp_path.iterdir())  # nothing trained, no comparison folder


# -- the weight store: sealed -----------------------------------------------------------------
@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))
    return tmp_path / "zoo"


def _weights_file(path: Path) -> Path:
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet").state_dict(), str(path))
    return path


@pytest.mark.parametrize("tag", ["../../escaped", "a/b", "..", ".hidden", "x\x00y", "/abs"])
def test_tag_cannot_write_outside_the_store(tmp_path, home, tag):
    src = _weights_file(tmp_path / "w.safetensors")

    def files():  # the model-list cache under $ZOO_HOME/cache is zoo's own, and allowed
        return sorted(p for p in tmp_path.rglob("*")
                      if p.is_file() and not p.is_relative_to(home / "cache"))

    before = files()
    code, out, err = invoke("weights", "import", src, "--model", MODEL, "--tag", tag)
    _refused(code, out, err, "tag")
    assert files() == before
    code, out, err = invoke("weights", "rm", MODEL, "--tag", tag)
    _refused(code, out, err)


def test_hand_edited_manifest_cannot_make_rm_delete_outside(tmp_path, home):
    src = _weights_file(tmp_path / "w.safetensors")
    code, out, err = invoke("weights", "import", src, "--model", MODEL, "--tag", "mine")
    assert code == 0, err
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    manifest_path = home / "weights" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    key = f"{MODEL}.mine"
    for evil in (str(victim), os.path.relpath(victim, home / "weights"),
                 "timm__other/weights.safetensors"):
        manifest["weights"][key]["file"] = evil
        manifest_path.write_text(json.dumps(manifest))
        code, out, err = invoke("weights", "rm", MODEL, "--tag", "mine")
        _refused(code, out, err, "manifest")
        assert victim.read_text() == "keep me"
        code, out, err = invoke("weights", "verify", "--json")
        assert_clean(code, out, err, allowed=(0, 1, 2))
    # a symlink planted in the store is not followed out of it either
    manifest["weights"][key]["file"] = "timm__test_resnet.mine/weights.safetensors"
    manifest_path.write_text(json.dumps(manifest))
    stored = home / "weights" / "timm__test_resnet.mine" / "weights.safetensors"
    stored.unlink()
    stored.symlink_to(victim)
    code, out, err = invoke("weights", "rm", MODEL, "--tag", "mine")
    _refused(code, out, err, "outside")
    assert victim.read_text() == "keep me"


def test_class_weights_of_the_wrong_length():
    """One weight per class: never padded or cut (``jobspec.check_against_data``)."""
    from zoo.errors import ConfigError
    from zoo.jobspec import check_against_data, job_from_tree

    job = job_from_tree({"train": {"class_weights": [1, 2, 3]}})
    check_against_data(job, 3)
    for classes in (2, 8):
        with pytest.raises(ConfigError, match=f"3 values but the data has {classes} classes"):
            check_against_data(job, classes)
