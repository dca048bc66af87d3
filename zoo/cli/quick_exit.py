"""End the ``zoo`` process without tearing the interpreter down.

Finalising the modules a run imports (torch, timm, torchmetrics and what they pull in) takes
about a second after the last line is printed (docs/benchmarks.md, "Fixed costs"); nothing
zoo needs happens in it. :func:`exit_now` runs what must still run — the ``atexit``
handlers (logging's flush, multiprocessing's join of worker processes, coverage's save) and
a flush of stdout/stderr — and then ends the process with ``os._exit``.

Every file zoo writes is complete before it is renamed into place (``zoo.io.atomic``), so
skipping finalisers loses nothing. The normal exit is kept where it matters: under
torchrun while a process group is still initialised (it tears down in finalisers), or when
``ZOO_NORMAL_EXIT=1``. A rank that succeeded and whose process group zoo has already
destroyed (``zoo.engine.distributed.session``) exits quickly too: left to the interpreter's
teardown, gloo's C++ threads could meet the static destructors and abort the rank ("terminate
called without an active exception", SIGABRT) after its work was done. A failing rank keeps
the normal exit: torchrun names the first rank it sees fail as the root cause, and a rank
that fails because another one crashed must not end first.

A non-daemon thread still running (a plugin's hook may start one) gets
:data:`THREAD_GRACE_S` seconds to finish; one still alive after that would keep the process
alive forever after the work is done (the interpreter waits for it), so zoo says which
threads it leaves behind and ends the process anyway.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
import time

THREAD_GRACE_S = 5.0  # for non-daemon threads still running when the command is done


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


def _process_group_alive() -> bool:
    dist = sys.modules.get("torch.distributed")  # never imported here: only if a run did
    try:
        return bool(dist is not None and dist.is_available() and dist.is_initialized())
    except Exception:  # noqa: BLE001 - a half-imported torch at exit: keep the normal exit
        return True


def can_exit_now(status: int = 0) -> bool:
    if _normal_exit_asked():
        return False
    if "LOCAL_RANK" not in os.environ:
        return True
    # under torchrun only a rank that succeeded and whose process group is gone ends at once:
    # torchrun names the first rank it sees fail as the root cause, and a rank failing
    # because another crashed must not end before the one that crashed
    return status == 0 and not _process_group_alive()


def _lingering() -> list:
    main = threading.main_thread()
    return [t for t in threading.enumerate()
            if t is not main and t.is_alive() and not t.daemon]


def wait_for_threads(grace: float = THREAD_GRACE_S) -> list:
    """Join the running non-daemon threads for up to ``grace`` seconds in all; the names
    of those still alive afterwards (said on stderr)."""
    deadline = time.monotonic() + grace
    for thread in _lingering():
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in _lingering()]
    if left:
        print(f"warning: {len(left)} thread(s) started by a plugin still running after "
              f"the command finished ({', '.join(left[:3])}); not waiting for them",
              file=sys.stderr, flush=True)
    return left


def exit_now(code) -> None:
    """End the process with ``code`` (a ``SystemExit.code``), skipping module teardown."""
    status = exit_code(code)
    run_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's; absent elsewhere
    left = wait_for_threads()
    if run_handlers is None or (not can_exit_now(status) and not left):
        sys.exit(status)  # the interpreter's own exit: nothing left that would hang it
    run_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`zoo list | head`) or stream
            pass
    os._exit(status)
