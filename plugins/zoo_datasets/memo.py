"""A small module-level memo for the expensive part of building a dataset.

A job asks for the train, val and test splits in three factory calls; generating the demo
images, decoding a folder or loading a torchvision dataset must happen once, not three
times.  Entries are keyed on everything that changes the result and evicted oldest first,
so a long-lived process (a notebook, the test suite) does not pile up decoded images.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

MAX_ENTRIES = 4

_entries: OrderedDict[Hashable, Any] = OrderedDict()
_lock = threading.Lock()


def memo(key: Hashable, build: Callable[[], Any]) -> Any:
    """Return the value stored under ``key``, building (and storing) it on a miss."""
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            return _entries[key]
    value = build()  # outside the lock: builds may take seconds and use threads
    with _lock:
        _entries[key] = value
        _entries.move_to_end(key)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value


def clear() -> None:
    """Forget everything (tests; or after changing files of a folder dataset in place)."""
    with _lock:
        _entries.clear()
