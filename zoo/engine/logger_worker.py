"""Loggers never block training: their calls run in order on one daemon thread per run.

A logger may talk to a network service (MLflow on a server, a notifier): a closed port, a
slow proxy or a client that retries with backoff can take minutes.  On the training thread
that would stall the epoch — inside the block where signals wait for the epoch's
checkpoint, so even a SIGTERM could not stop it and a SIGKILL would lose the held epoch.
Here :meth:`LoggerWorker.submit` queues the call and returns at once; :meth:`drain` (at
the run's end) waits at most :data:`CLOSE_TIMEOUT_S` for the queue, then says which logger
is still busy and lets the run end: the thread is a daemon, so it never keeps the process
alive.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable

CLOSE_TIMEOUT_S = 30.0  # the longest the end of a run waits for its loggers


class LoggerWorker:
    """One daemon thread running the queued logger calls of one run, in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self.busy_with = ""  # what the thread is doing now (for the timeout message)
        self._thread = threading.Thread(target=self._loop, name="zoo-loggers", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            label, call = self._queue.get()
            self.busy_with = label
            try:
                call()  # the caller wraps it (zoo.engine.isolation.call_isolated)
            except BaseException:  # noqa: BLE001 - never let the worker die
                pass
            finally:
                self.busy_with = ""
                self._queue.task_done()

    def submit(self, label: str, call: Callable[[], None]) -> None:
        self._queue.put((label, call))

    def drain(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until every queued call ran, at most ``timeout`` seconds; True when done."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True
