"""Shared test set-up: an isolated ZOO_HOME, offline hubs, one torch thread, fresh catalogs."""
from __future__ import annotations

import functools
import http.server
import os
import threading

import pytest

os.environ.setdefault("ZOO_OFFLINE", "1")       # never ask a hub from the test suite
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "zoo-home"
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.delenv("ZOO_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("ZOO_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("ZOO_FAULT", raising=False)
    import zoo.api

    zoo.catalog._CATALOG = None
    yield
    zoo.catalog._CATALOG = None


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def weights_server(tmp_path):
    """A local stand-in for download.pytorch.org serving ``tmp_path/srv``."""
    root = tmp_path / "srv"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def serve_mobilenet_weights(weights_server, monkeypatch, seed: int):
    """Serve a freshly initialised mobilenet_v3_small state dict as torchvision's
    IMAGENET1K_V1 download (from the local weights_server); return ``(state, served file)``."""
    import hashlib

    import torch
    import torchvision.models as tvm

    root, base = weights_server
    torch.manual_seed(seed)
    state = tvm.mobilenet_v3_small().state_dict()
    tmp = root / "weights.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    name = f"mobilenet_v3_small-{digest[:8]}.pth"  # torch.hub checks this hash prefix
    tmp.rename(root / name)
    entry = tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    monkeypatch.setattr(entry.value, "url", f"{base}/{name}")
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)  # the probe of 127.0.0.1 really runs
    return state, root / name


@pytest.fixture
def fresh_dataset_memo():
    """The datasets plugin's in-process memo emptied before and after a test."""
    from zoo_datasets import memo

    memo.clear()
    yield
    memo.clear()

