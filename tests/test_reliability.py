"""Reliability: interrupts with real signals, kills mid-write, NaN losses, full disks, the
bad-input corpus.  Faults are placed deterministically with the test-only ``ZOO_FAULT``
switch (docs/reliability.md), never by sleeping and hoping."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus"
BASE = ["timm:test_resnet", "--strategy", "finetune", "--weights", "none",
        "--batch-size", "32", "--set", "data.params.per_class=30", "--quiet"]


def zoo(*args, env=None, timeout=240):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") \
        and "Traceback" not in proc.stderr


def run_args(tmp_path, name, epochs=3):
    return ["run", *BASE, "--epochs", str(epochs), "--out", str(tmp_path), "--name", name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run to compare resumed runs with."""
    out = tmp_path_factory.mktemp("ref")
    proc = zoo(*run_args(out, "ref"), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("sig, code", [("INT", 130), ("TERM", 143)])
def test_signal_mid_epoch_then_resume_matches(tmp_path, reference, sig, code):
    proc = zoo(*run_args(tmp_path, "r"), env={"ZOO_FAULT": f"signal_at:2:2:{sig}"})
    assert proc.returncode == code, proc.stderr
    assert "resume" in proc.stderr and "Traceback" not in proc.stderr
    run_dir = tmp_path / "r"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    from zoo.engine.checkpoint import read_info

    assert read_info(run_dir)["epoch"] == 1  # epoch 2's partial work was dropped
    proc = zoo("run", "--resume", str(run_dir), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads(proc.stdout)
    assert resumed["status"] == "completed"
    assert resumed["test"] == reference["test"]


def test_sigkill_while_writing_checkpoint_keeps_previous(tmp_path, reference):
    # the 2nd write of last.safetensors (end of epoch 2) is killed half-way; with early
    # stopping armed every epoch is written (pacing would hold epoch 2 of so tiny a run)
    proc = zoo(*run_args(tmp_path, "k"), "--set", "train.early_stop_patience=50",
               env={"ZOO_FAULT": "kill_during_write:last.safetensors:2"})
    assert proc.returncode == -9
    run_dir = tmp_path / "k"
    from zoo.engine.checkpoint import read_info

    assert read_info(run_dir)["epoch"] == 1
    from zoo.engine.checkpoint import load_checkpoint

    model_state, state, _ = load_checkpoint(run_dir)  # valid, loadable
    assert state.epoch == 1 and model_state
    proc = zoo("run", "--resume", str(run_dir), "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["test"] == reference["test"]


def test_nan_loss_stops_with_clear_message(tmp_path):
    proc = zoo(*run_args(tmp_path, "n"), env={"ZOO_FAULT": "nan_at:2:1"})
    assert one_line_error(proc), proc.stderr
    assert "epoch 2, step 1" in proc.stderr and "--lr" in proc.stderr
    from zoo.engine.checkpoint import read_info

    assert read_info(tmp_path / "n")["epoch"] == 1
    assert json.loads((tmp_path / "n" / "summary.json").read_text())["status"] == "failed"


def test_nan_loss_skip(tmp_path):
    proc = zoo(*run_args(tmp_path, "s", epochs=2), "--set", "train.on_nan=skip", "--json",
               env={"ZOO_FAULT": "nan_at:1:2"})
    assert proc.returncode == 0, proc.stderr
    first = json.loads((tmp_path / "s" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train"]["skipped_steps"] == 1


def test_disk_full_keeps_previous_file(tmp_path, monkeypatch):
    from zoo.io import atomic
    from zoo.errors import ZooError

    target = tmp_path / "summary.json"
    atomic.write_json(target, {"version": 1})

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ZooError, match="No space left"):
        atomic.write_json(target, {"version": 2})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp files left


def test_feature_cache_budget_respected(tmp_path):
    from zoo.api import load_job, run

    def probe(budget):
        job = load_job("timm:test_resnet", weights="none", out=str(tmp_path), sets=[
            "strategy.name=linear-probe", "train.epochs=1", "data.params.per_class=10",
            f"train.cache_budget_mb={budget}"])
        s = run(job)
        rec = json.loads(Path(s["run_dir"], "metrics.jsonl").read_text().splitlines()[0])
        return rec["cached_features"]

    assert probe(2048) is True
    assert probe(0) is False


@pytest.mark.parametrize("name", sorted(p.name for p in (CORPUS / "jobs").iterdir()))
def test_bad_job_files(tmp_path, name):
    proc = zoo("run", "--config", str(CORPUS / "jobs" / name), "--out", str(tmp_path))
    assert one_line_error(proc), proc.stderr
    assert not Path("/tmp/zoo-pwned").exists()


def test_huge_job_file_refused(tmp_path):
    huge = tmp_path / "huge.yaml"
    huge.write_text("model: resnet18\n# " + "x" * (10 * 1024 * 1024) + "\n")
    proc = zoo("run", "--config", str(huge))
    assert one_line_error(proc) and "refused" in proc.stderr


@pytest.mark.parametrize("args", [
    ["run", "resnt18", "-s", "finetune"],
    ["run", "resnet18", "-s", "finetun"],
    ["run", "resnet18", "--head", "linaer"],
    ["run", "resnet18", "--epochs", "-1"],
    ["run", "resnet18", "--epochs", "many"],
    ["run", "resnet18", "--lr", "0"],
    ["run", "resnet18", "--set", "train.lrr=1"],
    ["run", "resnet18", "--set", "nonsense"],
    ["run", "resnet18", "--data", "./does-not-exist"],
    ["run", "resnet18", "--metrics", "acurracy"],
    ["run", "resnet18", "--preset", "nope"],
    ["run", "resnet18", "--bogus-flag"],
    ["run"],
    ["info", "resnt18"],
    ["list", "--provider", "nope"],
    ["nosuchcommand"],
])
def test_bad_cli_values_one_line(tmp_path, args):
    proc = zoo(*args, "--out", str(tmp_path)) if args[0] == "run" and len(args) > 1 else zoo(*args)
    assert one_line_error(proc), (args, proc.stderr)


def test_debug_shows_traceback():
    proc = zoo("info", "resnt18", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_empty_and_one_class_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = zoo("run", "timm:test_resnet", "--data", str(empty), "--weights", "none")
    assert one_line_error(proc), proc.stderr
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(one / f"{i}.png")
    proc = zoo("run", "timm:test_resnet", "--data", str(tmp_path / "one"), "--weights", "none")
    assert one_line_error(proc) and "2 classes" in proc.stderr


def test_messy_folder_runs_with_counted_warning(tmp_path):
    """Corrupt, zero-byte, truncated, CMYK, 16-bit, RGBA, palette images and unicode class
    names: the run succeeds and the skipped files are counted in summary.json."""
    from PIL import Image

    root = tmp_path / "messy"
    for cls, colour in (("ünïcödé-猫", (200, 30, 30)), ("plain", (30, 30, 200))):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (20, 20), colour).save(d / f"ok{i}.png")
        Image.new("CMYK", (20, 20), (0, 50, 50, 0)).save(d / "cmyk.jpg")
        Image.new("I;16", (20, 20), 30000).save(d / "deep.png")
        Image.new("RGBA", (20, 20), colour + (128,)).save(d / "alpha.png")
        Image.new("P", (20, 20), 3).save(d / "palette.png")
        (d / "zero.png").write_bytes(b"")
        (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        good = (d / "ok0.png").read_bytes()
        (d / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "plain" / "loop").symlink_to(root / "plain")
    proc = zoo("run", "timm:test_resnet", "--data", str(root), "--weights", "none",
               "--epochs", "1", "--image-size", "16", "--out", str(tmp_path), "--json",
               "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert any("skipped 6" in w for w in summary["warnings"]), summary["warnings"]
    assert set(summary["classes"]) == {"ünïcödé-猫", "plain"}


def _lying_safetensors(path: Path, how: str) -> Path:
    """A safetensors file whose header lies about sizes/offsets."""
    import struct

    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(4, 4)}, str(path))
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    if how == "offsets":
        header["w"]["data_offsets"] = [0, 10**9]
    elif how == "shape":
        header["w"]["shape"] = [4000, 4000]
    elif how == "header_length":
        return path.write_bytes(struct.pack("<Q", 10**12) + data[8:]) and path
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data[8 + n:])
    return path


@pytest.mark.parametrize("how", ["offsets", "shape", "header_length"])
def test_safetensors_with_lying_header_rejected(tmp_path, how):
    from zoo.errors import CheckpointError
    from zoo.weights import read_safetensors

    path = _lying_safetensors(tmp_path / f"{how}.safetensors", how)
    with pytest.raises(CheckpointError, match="not a valid .safetensors"):
        read_safetensors(path)
    proc = zoo("weights", "import", str(path), "--model", "timm:test_resnet")
    assert one_line_error(proc), proc.stderr


def test_unreadable_image_files_are_counted(tmp_path, monkeypatch):
    """Tests run as root, so "permission denied" is simulated by a mock, not chmod."""
    import builtins

    from PIL import Image

    from zoo.api import get_catalog
    from zoo.engine.data import load_splits
    from zoo.jobspec import DataSpec

    root = tmp_path / "perm"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 12), (60 * i, 0, 0)).save(root / cls / f"{i}.png")
    locked = str(root / "a" / "3.png")
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if str(file) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    spec = DataSpec(name="folder", path=str(root), val_split=0.0, test_split=0.0,
                    cache_images=True)
    bundle = load_splits(get_catalog(), spec, 0, {})
    assert len(bundle.train) == 7
    assert any(w.startswith("skipped 1 unreadable") for w in bundle.warnings), bundle.warnings


def test_resume_refuses_job_flags(tmp_path):
    proc = zoo("run", "--resume", str(tmp_path), "--epochs", "9")
    assert one_line_error(proc) and "--epochs" in proc.stderr
