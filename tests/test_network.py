"""zoo.weights.network: offline detection must be fast, cached, and overridable by the environment."""
from __future__ import annotations

import socket
import time

import pytest

from zoo.weights import network


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("ZOO_OFFLINE", "HF_HUB_OFFLINE", "ZOO_ASSUME_ONLINE"):
        monkeypatch.delenv(name, raising=False)
    network.reset_cache()
    yield
    network.reset_cache()


def _forbid_probe(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the network was probed")

    monkeypatch.setattr(socket, "create_connection", boom)


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "ZOO_OFFLINE"])
def test_offline_env_answers_without_probing(monkeypatch, var):
    _forbid_probe(monkeypatch)
    monkeypatch.setenv(var, "1")
    assert network.hub_reachable() is False
    assert network.offline_reason() == f"{var}=1"


def test_zoo_offline_beats_assume_online(monkeypatch):
    _forbid_probe(monkeypatch)
    monkeypatch.setenv("ZOO_ASSUME_ONLINE", "1")
    assert network.hub_reachable() is True
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert network.hub_reachable() is False


def test_failed_connect_means_unreachable_and_is_cached(monkeypatch):
    calls = []

    def refuse(address, timeout=None):
        calls.append(address)
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("ZOO_OFFLINE", "0")  # "not forced offline": the probe still runs
    assert network.hub_reachable("hub.example", 443) is False
    assert network.hub_reachable("hub.example", 443) is False
    assert calls == [("hub.example", 443)]  # probed once per process
    network.reset_cache()
    network.hub_reachable("hub.example", 443)
    assert len(calls) == 2


def test_hanging_resolver_is_cut_off_by_the_timeout(monkeypatch):
    def hang(address, timeout=None):
        time.sleep(5)
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert network.hub_reachable("slow.example", 443, timeout=0.2) is False
    assert time.monotonic() - start < 1.0


def test_local_listener_is_reachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        port = server.getsockname()[1]
        assert network.url_reachable(f"http://127.0.0.1:{port}/x.pth") is True
    finally:
        server.close()


def test_unreachable_message_is_one_actionable_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = network.unreachable_message("timm:resnet18", "huggingface.co")
    assert "\n" not in msg
    assert "HF_HUB_OFFLINE" in msg and "timm:resnet18" in msg
    assert "--weights none" in msg and "zoo weights import" in msg
