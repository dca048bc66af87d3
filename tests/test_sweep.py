"""``zoo compare --emit DIR`` / ``--collect DIR``: job files, launchers, the local runner,
and the leaderboard built from finished run folders (missing and failed ones named)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo_cli_helpers import assert_one_line_error, cli

TINY = ["--weights", "none", "--epochs", "1", "--batch-size", "32",
        "--set", "data.params.per_class=12", "--set", "data.num_workers=0"]


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    """Two strategies × one seed emitted, then run by run_local.sh (2 tiny zoo runs)."""
    folder = tmp_path_factory.mktemp("sweep") / "cmp"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "zoo", "compare", "timm:test_resnet", "-S",
                           "linear-probe,finetune", "--emit", str(folder), "--json", *TINY],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    run = subprocess.run([str(folder / "run_local.sh"), "-j", "2"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0 and run.stdout.count("done ") == 2, run.stdout + run.stderr
    return folder, manifest


def test_emit_writes_one_complete_job_per_run_and_the_launchers(emitted):
    folder, manifest = emitted
    assert [j["name"] for j in manifest["jobs"]] == ["linear-probe-seed0", "finetune-seed0"]
    import yaml

    job = yaml.safe_load((folder / "jobs" / "finetune-seed0.yaml").read_text())
    assert job["strategy"]["name"] == "finetune" and job["seed"] == 0
    assert job["out"] == str(folder) and job["name"] == "finetune-seed0"
    assert job["train"]["epochs"] == 1 and job["data"]["params"] == {"per_class": 12}
    lines = (folder / "jobs.txt").read_text().splitlines()
    assert lines == [str(folder / "jobs" / f"{j['name']}.yaml") for j in manifest["jobs"]]
    sbatch = (folder / "slurm.sbatch").read_text()
    assert "#SBATCH --array=0-1" in sbatch and "zoo run --config" in sbatch
    compile(Path(folder / "submit_submitit.py").read_text(), "submit_submitit.py", "exec")
    assert os.access(folder / "run_local.sh", os.X_OK)


def test_collect_builds_the_leaderboard_from_the_run_folders(emitted, capsys):
    folder, _ = emitted
    code, out, err = cli(capsys, "compare", "--collect", folder, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "completed" and not result["missing"] and not result["failed"]
    summaries = {r: json.loads((folder / f"{r}-seed0" / "summary.json").read_text())
                 for r in ("linear-probe", "finetune")}
    for entry in result["leaderboard"]:
        expected = summaries[entry["strategy"]]["test"]["accuracy"]
        assert entry["metrics"]["accuracy"]["mean"] == pytest.approx(expected)
    assert result["splits_identical"] is True  # one seed: the same split for both
    assert {p.name for p in folder.iterdir()} >= {"compare.json", "compare.csv",
                                                  "compare.png"}


def test_collect_names_missing_and_failed_jobs(emitted, capsys, tmp_path):
    folder, _ = emitted
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, symlinks=True)
    shutil.rmtree(copy / "finetune-seed0")
    summary = copy / "linear-probe-seed0" / "summary.json"
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps(dict(data, status="failed", error="boom: out of memory")))
    code, out, err = cli(capsys, "compare", "--collect", copy, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "partial"
    assert result["missing"] == ["finetune-seed0"]
    assert result["failed"] == ["linear-probe-seed0: boom: out of memory"]
    assert "missing: finetune-seed0" in result["verdict"]
    code, out, err = cli(capsys, "compare", "--collect", copy)
    assert code == 0 and "missing: finetune-seed0" in out and "boom" in out


def test_sweep_errors_are_one_line(tmp_path, capsys, emitted):
    folder, _ = emitted
    code, _, err = cli(capsys, "compare", "--collect", tmp_path / "nothing")
    assert "not an emitted comparison" in assert_one_line_error(err, code)
    code, _, err = cli(capsys, "compare", "timm:test_resnet", "-S", "finetune", "--emit",
                       folder, *TINY)
    assert "already holds an emitted comparison" in assert_one_line_error(err, code)
    code, _, err = cli(capsys, "compare", "--emit", tmp_path / "x")
    assert "missing MODEL" in err and code == 2
    code, _, err = cli(capsys, "compare", "timm:test_resnet", "-S", "nope", "--emit",
                       tmp_path / "y", *TINY)
    assert code == 2 and not (tmp_path / "y" / "sweep.json").exists()
