"""``zoo push RUN REPO_ID``: the hf export folder uploaded with huggingface_hub, tested against
a local stand-in of the Hub's upload API (tests/hub_server.py); offline it is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.api import load_job, run
from zoo_cli_helpers import assert_one_line_error, cli
from hub_server import HubServer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tree = {"model": "timm:test_resnet", "weights": "none", "seed": 0,
            "train": {"epochs": 1, "batch_size": 32}, "strategy": {"name": "linear-probe"},
            "data": {"name": "demo", "params": {"per_class": 20}},
            "out": str(tmp_path_factory.mktemp("runs")), "name": "a"}
    return Path(run(load_job(flags=tree), quiet=True)["run_dir"])


@pytest.fixture
def online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "zoo-test-token")


def test_push_uploads_the_export_folder(run_dir, capsys, online):
    with HubServer(token="zoo-test-token") as hub:
        code, out, err = cli(capsys, "push", run_dir, "acme/shapes", "--endpoint", hub.url,
                             "--json")
        assert code == 0, err
        res = json.loads(out)
        folder = run_dir / "export" / "hf"
        assert res["exported"] is True and res["folder"] == str(folder)
        pushed = hub.repos["acme/shapes"]
        assert sorted(pushed) == res["files"]
        assert {"config.json", "model.safetensors", "README.md"} <= set(pushed)
        for name, data in pushed.items():
            assert data == (folder / name).read_bytes(), name
        code, out, err = cli(capsys, "push", run_dir, "acme/shapes", "--endpoint", hub.url, "-q")
        assert code == 0 and out == "" and err == ""


def test_push_refused_by_the_hub_is_one_line(run_dir, capsys, online):
    with HubServer(token="another-token") as hub:
        code, _, err = cli(capsys, "push", run_dir, "acme/shapes", "--endpoint", hub.url)
    line = assert_one_line_error(err, code)
    assert "could not push to acme/shapes" in line and "HF_TOKEN" in line


def test_push_offline_or_bad_repo_is_one_line(run_dir, capsys, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    code, _, err = cli(capsys, "push", run_dir, "acme/shapes")
    line = assert_one_line_error(err, code)
    assert "ZOO_OFFLINE=1 is set" in line and "where there is network" in line
    code, _, err = cli(capsys, "push", run_dir, "not a repo")
    assert "is not a Hub repo id" in assert_one_line_error(err, code)
