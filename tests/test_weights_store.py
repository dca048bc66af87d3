"""zoo's weight store and ``zoo weights``: manifest, lock, pull (hubs without network),
import of foreign checkpoints (key mapping, refusal of code-running pickles), verify, rm.

Hubs are local stand-ins: a ``http.server`` on 127.0.0.1 for torchvision's weight URLs, a
monkeypatched ``hf_hub_download`` and a pre-populated Hugging Face cache for timm.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from zoo.weights import network
from zoo.errors import WeightsError
from zoo.weights import WeightStore, resolve_and_load, sha256_file
from zoo_cli_helpers import assert_one_line_error, cli, zoo

MODEL = "timm:test_resnet"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A fresh ZOO_HOME, TORCH_HOME and HF cache per test; offline unless a test says not."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.delenv("ZOO_ASSUME_ONLINE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    network.reset_cache()
    yield tmp_path / "zoo"
    network.reset_cache()


def _timm_state(seed: int = 0, arch: str = "test_resnet") -> dict:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(arch).state_dict()


def _catalog():
    from zoo.api import get_catalog

    return get_catalog()


def _ref(name=MODEL):
    return _catalog().resolve_model(name)


# -- the store itself -------------------------------------------------------------------------
def test_put_get_manifest_round_trip(home):
    store = WeightStore()
    state = {"a.weight": torch.randn(3, 4), "b": torch.arange(5)}
    entry = store.put("timm:x", None, state, "test", metadata={"pretrained_cfg": {"mean": [0.5]}})
    path = home / "weights" / "timm__x" / "weights.safetensors"
    assert entry["file"] == "timm__x/weights.safetensors" and path.is_file()
    manifest = json.loads((home / "weights" / "manifest.json").read_text())
    rec = manifest["weights"]["timm:x"]
    assert set(rec) >= {"model", "tag", "sha256", "size", "source", "created"}
    assert rec["sha256"] == sha256_file(path) and rec["size"] == path.stat().st_size
    assert rec["model"] == "timm:x" and rec["source"] == "test"
    got = store.get("timm:x")
    assert got.source == "store" and got.sha256 == rec["sha256"]
    assert torch.equal(got.state["a.weight"], state["a.weight"])
    assert json.loads(got.info["pretrained_cfg"]) == {"mean": [0.5]}
    store.put("timm:x", "t1", state, "test")
    assert [e["key"] for e in store.entries()] == ["timm:x", "timm:x.t1"]
    store.remove("timm:x")
    assert not path.exists() and [e["key"] for e in store.entries()] == ["timm:x.t1"]
    with pytest.raises(WeightsError, match="not in the weight store"):
        store.remove("timm:x")


def _writer(root: str, worker: int, count: int) -> None:
    store = WeightStore(root)
    for i in range(count):
        store.put(f"timm:m{worker}", f"t{i}", {"w": torch.full((64, 64), float(worker))},
                  f"worker{worker}")


def test_concurrent_writers_keep_every_entry_and_whole_files(home):
    root = home / "weights"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(root), w, 6)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = WeightStore(root)
    keys = {e["key"] for e in store.entries()}
    assert keys == {f"timm:m{w}.t{i}" for w in range(4) for i in range(6)}
    assert all(r["status"] == "ok" for r in store.verify())
    assert not list(root.rglob("*.tmp"))  # no temp file left behind


def test_corrupt_store_file_is_caught_by_get_and_verify(home, capsys):
    store = WeightStore()
    store.put(MODEL, None, _timm_state(), "test")
    path = store.path_for(MODEL)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        store.get(MODEL)
    code, out, err = cli(capsys, "weights", "verify", "--json")
    assert code == 1
    report = json.loads(out)
    assert not report["ok"] and report["files"][0]["status"] == "sha256 mismatch"
    assert err.startswith("error: 1 of 1 stored files failed verification")
    path.unlink()
    code, out, _ = cli(capsys, "weights", "verify", "--json")
    assert code == 1 and json.loads(out)["files"][0]["status"] == "missing"


# -- zoo weights import -----------------------------------------------------------------------
def test_import_safetensors_with_module_prefix_then_runs_use_it(tmp_path, capsys):
    state = _timm_state(1)
    src = tmp_path / "ddp.safetensors"
    save_file({f"module.{k}": v for k, v in state.items()}, src)
    code, out, err = cli(capsys, "weights", "import", src, "--model", MODEL, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["report"]["missing"] == [] and result["report"]["unexpected"] == []
    assert result["report"]["loaded"] == len(state)
    stored = load_file(result["path"])
    assert all(torch.equal(stored[k], v) for k, v in state.items())
    assert result["original"]["sha256"] == sha256_file(src)

    code, out, _ = cli(capsys, "weights", "list", "--json")
    assert [e["model"] for e in json.loads(out)] == [MODEL]
    code, out, _ = cli(capsys, "weights", "list")
    assert "timm:test_resnet" in out and result["sha256"][:12] in out
    code, out, _ = cli(capsys, "weights", "path", "test_resnet")
    assert code == 0 and out.strip() == result["path"]
    # the resolver finds it before plugins and hubs (offline), and it is the imported tensors
    backbone, summary = resolve_and_load(_catalog(), _ref(), "pretrained", [])
    assert summary["source"] == "store" and summary["sha256"] == result["sha256"]
    assert torch.equal(backbone.source_state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    # importing again needs --force
    code, _, err = cli(capsys, "weights", "import", src, "--model", MODEL)
    assert "--force" in assert_one_line_error(err, code)
    code, out, _ = cli(capsys, "weights", "rm", MODEL)
    assert code == 0 and not Path(result["path"]).exists()
    code, _, err = cli(capsys, "weights", "path", MODEL)
    assert "zoo weights pull" in assert_one_line_error(err, code)


def test_import_pth_maps_by_order_and_reports_missing_keys(tmp_path, capsys):
    state = _timm_state(2)
    renamed = {f"layer_{i:03d}": v for i, v in enumerate(state.values())}  # foreign names
    src = tmp_path / "foreign.pth"
    torch.save(renamed, src)
    code, out, err = cli(capsys, "weights", "import", src, "--model", MODEL, "--json")
    assert code == 0, err
    stored = load_file(json.loads(out)["path"])
    assert set(stored) == set(state) and all(torch.equal(stored[k], state[k]) for k in state)

    headless = {k: v for k, v in state.items() if not k.startswith("fc.")}
    src2 = tmp_path / "headless.pt"
    torch.save({"state_dict": headless, "epoch": 3}, src2)  # a training checkpoint
    code, out, err = cli(capsys, "weights", "import", src2, "--model", MODEL, "--tag", "nofc")
    assert code == 0, err
    assert "missing" in out and "fc.weight" in out   # the report names them
    path = WeightStore().path_for(MODEL, "nofc")
    assert not any(k.startswith("fc.") for k in load_file(path))  # random fc is not stored


def test_import_of_another_architecture_is_refused(tmp_path, capsys):
    src = tmp_path / "other.safetensors"
    save_file(_timm_state(0, "resnet10t"), src)
    code, _, err = cli(capsys, "weights", "import", src, "--model", MODEL)
    line = assert_one_line_error(err, code)
    assert "do not fit" in line and "another architecture" in line
    assert not (WeightStore().root / "manifest.json").exists()


def test_code_running_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": Evil()}, src)
    proc = zoo("weights", "import", src, "--model", MODEL)
    line = assert_one_line_error(proc)
    assert "arbitrary code" in line and "refused" in line
    assert not marker.exists()
    assert not (Path(os.environ["ZOO_HOME"]) / "weights" / "manifest.json").exists()


def test_truncated_file_is_refused(tmp_path, capsys):
    src = tmp_path / "cut.safetensors"
    save_file(_timm_state(), src)
    src.write_bytes(src.read_bytes()[:5000])
    code, _, err = cli(capsys, "weights", "import", src, "--model", MODEL)
    assert "not a valid .safetensors" in assert_one_line_error(err, code)
    cut = tmp_path / "cut.pth"
    torch.save(_timm_state(), cut)
    cut.write_bytes(cut.read_bytes()[:3000])
    code, _, err = cli(capsys, "weights", "import", cut, "--model", MODEL)
    assert "could not be read" in assert_one_line_error(err, code)


# -- zoo weights pull ---------------------------------------------------------------------------
def test_pull_offline_is_one_actionable_line(capsys):
    code, _, err = cli(capsys, "weights", "pull", MODEL)
    line = assert_one_line_error(err, code)
    assert "ZOO_OFFLINE" in line and "zoo weights import FILE --model timm:test_resnet" in line




def test_pull_torchvision_through_its_weight_url(monkeypatch, tmp_path, weights_server):
    from conftest import serve_mobilenet_weights
    from zoo.weights.manage import pull

    state, served = serve_mobilenet_weights(weights_server, monkeypatch, seed=5)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # zoo.weights.network honours it for all hubs

    result = pull(_catalog(), "torchvision:mobilenet_v3_small")
    assert result["status"] == "stored" and result["source"] == "hub:torchvision"
    stored = load_file(result["path"])
    assert set(stored) == set(state)
    assert all(torch.equal(stored[k], v) for k, v in state.items())
    again = pull(_catalog(), "torchvision:mobilenet_v3_small")
    assert again["status"] == "present" and again["sha256"] == result["sha256"]

    # offline, with the download gone from the server and torch.hub's cache: the store answers
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    served.unlink()
    for f in (tmp_path / "torch").rglob("*.pth"):
        f.unlink()
    backbone, summary = resolve_and_load(_catalog(), _ref("torchvision:mobilenet_v3_small"),
                                         "pretrained", [])
    assert summary["source"] == "store"
    assert torch.equal(backbone.body.features[0][0].weight, state["features.0.0.weight"])
    assert backbone.pretrained_cfg.input_size == 224


def test_pull_timm_through_a_patched_hf_download(monkeypatch, tmp_path):
    import timm.models._hub as hub

    from zoo.weights.manage import pull

    state = _timm_state(7)
    calls = []

    def fake_download(repo_id, filename, revision=None, cache_dir=None, **kw):
        calls.append((repo_id, filename))
        if not filename.endswith(".safetensors"):
            raise AssertionError("timm asks for the safetensors file first")
        path = tmp_path / "dl" / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, path)
        return str(path)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    monkeypatch.delenv("ZOO_OFFLINE")
    monkeypatch.setenv("ZOO_ASSUME_ONLINE", "1")  # no TCP probe of huggingface.co
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    result = pull(_catalog(), MODEL)
    assert calls and calls[0][0] == "timm/test_resnet.r160_in1k"
    assert result["source"] == "hub:timm"
    stored = load_file(result["path"])
    assert all(torch.equal(stored[k], v) for k, v in state.items())
    meta = json.loads(WeightStore().get(MODEL).info["pretrained_cfg"])
    assert meta["input_size"] == 160  # timm's cfg for test_resnet.r160_in1k travels along


def test_cli_pull_timm_from_a_prepopulated_hf_cache(tmp_path):
    state = _timm_state(8)
    hub_cache = tmp_path / "hfcache"
    revision = hashlib.sha1(b"zoo-store-test").hexdigest()
    repo = hub_cache / "models--timm--test_resnet.r160_in1k"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    save_file(state, repo / "snapshots" / revision / "model.safetensors")
    env = {"HF_HUB_CACHE": str(hub_cache), "ZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = zoo("weights", "pull", MODEL, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["source"] == "hub:timm" and result["model"] == MODEL
    stored = load_file(result["path"])
    assert all(torch.equal(stored[k], v) for k, v in state.items())
    proc = zoo("weights", "verify", env=env)
    assert proc.returncode == 0 and "1/1 ok" in proc.stdout


def test_pull_from_a_resolve_weights_plugin(capsys):
    code, out, err = cli(capsys, "weights", "pull", "efficientnet_lite0", "--from", "plugin",
                         "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["source"] == "plugin:efficientnet-lite" and result["tensors"] == 296
    w = WeightStore().get("timm:efficientnet_lite0")
    assert json.loads(w.info["pretrained_cfg"])["mean"] == [0.5, 0.5, 0.5]
    backbone, summary = resolve_and_load(_catalog(), _ref("efficientnet_lite0"), "auto", [])
    assert summary["source"] == "store"
    assert backbone.pretrained_cfg.mean == (0.5, 0.5, 0.5)  # the plugin's preprocessing kept


def test_a_second_store_writer_is_told_it_waits(tmp_path):
    """Two processes writing the store: the second says it waits, then writes after the first."""
    import subprocess
    import sys
    import time

    from zoo.weights.store import locked

    root = tmp_path / "weights"
    code = ("import sys, time; from pathlib import Path; from zoo.weights.store import locked\n"
            "with locked(Path(sys.argv[1])):\n    print('got it', flush=True)\n")
    with locked(root):
        child = subprocess.Popen([sys.executable, "-c", code, str(root)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)  # the child is blocked on our lock meanwhile
        assert child.poll() is None
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip() == "got it"
    assert "waiting for another zoo process writing the weight store" in err
