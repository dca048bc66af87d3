"""On-disk cache of providers' model lists and ``info`` answers.

Listing timm's models means importing timm and torch (seconds); the answer only changes when
the library does.  So lists and infos are cached as JSON under ``$ZOO_HOME/cache/models/``
(``ZOO_HOME`` defaults to ``~/.cache/zoo``), keyed by the provider's name and its
``version()``: a warm ``zoo list`` imports neither timm nor torchvision.  A provider without
``version`` is never cached (nothing would tell us when its list went stale).

Layout: ``<provider>-<version>/list-all.json``, ``list-pretrained.json`` and
``info/<arch>.json``.  Files are written atomically (temp file + ``os.replace``); a corrupt or
mismatching file is ignored and rewritten.  Set ``ZOO_NO_MODEL_CACHE=1`` to bypass the cache.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable

from zoo import settings
from zoo.errors import ZooError
from zoo.io.atomic import write_bytes

_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def cache_root() -> Path:
    return settings.zoo_home() / "cache" / "models"


def cached_model_list(catalog, provider_name: str, pretrained: bool) -> list[str]:
    """``provider.list_models(pretrained=...)``, from the cache when it is current."""
    provider = catalog.provider(provider_name)
    name = "list-pretrained.json" if pretrained else "list-all.json"
    value = _cached(provider, provider_name, name,
                    lambda: list(provider.list_models(pretrained=pretrained)),
                    lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
    return list(value)


def cached_model_info(catalog, provider_name: str, arch: str) -> dict:
    """``provider.info(arch)``, from the cache when it is current."""
    provider = catalog.provider(provider_name)
    value = _cached(provider, provider_name, f"info/{_safe_name(arch)}.json",
                    lambda: dict(provider.info(arch)), lambda v: isinstance(v, dict))
    return dict(value)


def _cached(provider, provider_name: str, relname: str, compute: Callable[[], Any],
            valid: Callable[[Any], bool]) -> Any:
    version_fn = getattr(provider, "version", None)
    if not callable(version_fn) or settings.flag("ZOO_NO_MODEL_CACHE"):
        return compute()
    version = str(version_fn())
    path = cache_root() / f"{_safe_name(provider_name)}-{_safe_name(version)}" / relname
    key = {"provider": provider_name, "version": version}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        # The directory name is sanitised, so check the real key too.
        if (isinstance(doc, dict) and doc.get("provider") == provider_name
                and doc.get("version") == version and valid(doc.get("value"))):
            return doc["value"]
    except (OSError, ValueError):
        pass  # missing or corrupt: recompute and rewrite
    value = compute()
    try:
        _write_json_atomic(path, {**key, "value": value})
    except (OSError, TypeError, ValueError, ZooError):
        pass  # a read-only home or an unserialisable info must not break listing
    return value


def _safe_name(text: str) -> str:
    safe = _SAFE.sub("_", text)
    if safe != text or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    return safe


def _write_json_atomic(path: Path, obj: Any) -> None:
    # a cache: no fsync (speed); callers treat a failed write as "not cached"
    write_bytes(path, json.dumps(obj, default=_jsonable).encode("utf-8"), durable=False)


def _jsonable(obj: Any):
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
