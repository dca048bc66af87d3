"""Is the weights hub reachable?  Answered fast, once per host per process.

Why this exists: offline, timm's Hugging Face client retries for ~46 s before it fails, and
torch.hub hangs on DNS the same way.  Providers ask :func:`hub_reachable` *before* they start
a download and, when it says no, fail at once with an actionable :class:`zoo.errors.WeightsError`
(weights already in the local HF / torch hub cache are still used: providers check that first).

Environment (read on every call; only the network probe is cached):

- ``ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: offline, no probe.
- ``ZOO_ASSUME_ONLINE=1``: online, no probe (tests; networks where TCP probes are blocked but
  downloads work through a proxy).  ``ZOO_OFFLINE`` still wins over it.
- ``ZOO_OFFLINE=0``: only means "not forced offline": the probe still runs.
"""
from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

from zoo import settings

_probe_cache: dict[tuple[str, int], bool] = {}
_lock = threading.Lock()


def _flag(name: str) -> bool:
    return settings.flag(name)


def offline_reason() -> str | None:
    """The environment variable that forces offline mode, or ``None``."""
    for name in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
        if _flag(name):
            return f"{name}={os.environ[name]}"
    return None


def hub_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 1.5) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout`` seconds.

    The probe (DNS + connect) runs in a daemon thread joined with ``timeout``, so a hanging
    resolver cannot block the caller; its result is cached per ``(host, port)``.
    """
    if offline_reason():
        return False
    if _flag("ZOO_ASSUME_ONLINE"):
        return True
    key = (host, int(port))
    with _lock:
        if key in _probe_cache:
            return _probe_cache[key]
    result = _probe(host, int(port), timeout)
    with _lock:
        _probe_cache[key] = result
    return result


def _probe(host: str, port: int, timeout: float) -> bool:
    outcome: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=connect, name=f"zoo-probe-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(outcome and outcome[0])


def url_reachable(url: str, timeout: float = 1.5) -> bool:
    """:func:`hub_reachable` for the host and port of ``url``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return True
    port = parts.port or (80 if parts.scheme == "http" else 443)
    return hub_reachable(parts.hostname or "", port, timeout)


def unreachable_message(model: str, where: str) -> str:
    """The one-line message providers raise when weights would need an unreachable hub."""
    reason = offline_reason()
    why = f"{reason} is set" if reason else f"{where} is unreachable"
    return (f"cannot download pretrained weights for {model}: {why} and they are not in the "
            f"local cache — use `--weights none`, `zoo weights import FILE --model {model}`, "
            "or install a weights plugin")


def reset_cache() -> None:
    """Forget cached probe results (tests)."""
    with _lock:
        _probe_cache.clear()
