"""End the ``zoo`` process without tearing the interpreter down.

Finalising the modules a run imports (torch, timm, torchmetrics and what they pull in) takes
about a second after the last line is printed (docs/benchmarks.md, "Fixed costs"); nothing
zoo needs happens in it. :func:`exit_now` runs what must still run — the ``atexit``
handlers (logging's flush, multiprocessing's join of worker processes, coverage's save) and
a flush of stdout/stderr — and then ends the process with ``os._exit``.

Every file zoo writes is complete before it is renamed into place (``zoo.io.atomic``), so
skipping finalisers loses nothing. The normal exit is kept where it matters: a non-daemon
thread still running (the interpreter would wait for it), under torchrun (process groups
tear down in finalisers), or when ``ZOO_NORMAL_EXIT=1``.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading


def exit_code(code) -> int:
    """``SystemExit.code`` as a process exit status (a message string: printed, 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _normal_exit_asked() -> bool:
    from zoo.api import setting_flag  # lazy: zoo.api is loaded by then; keeps this module bare

    try:
        return setting_flag("ZOO_NORMAL_EXIT")
    except Exception:  # noqa: BLE001 - at exit a malformed value means "not asked"
        return False


def can_exit_now() -> bool:
    if _normal_exit_asked() or "LOCAL_RANK" in os.environ:
        return False
    main = threading.main_thread()
    return not any(t is not main and t.is_alive() and not t.daemon
                   for t in threading.enumerate())


def exit_now(code) -> None:
    """End the process with ``code`` (a ``SystemExit.code``), skipping module teardown."""
    status = exit_code(code)
    run_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's; absent elsewhere
    if run_handlers is None or not can_exit_now():
        sys.exit(status)
    run_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`zoo list | head`) or stream
            pass
    os._exit(status)
