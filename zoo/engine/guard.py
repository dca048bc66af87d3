"""What a run leaves behind when it stops early: signals, failures and the run-folder lock.

:func:`zoo.engine.pipeline.run` installs :func:`install_signal_handlers` for the whole run —
data preparation, feature caching, training, validation, the test pass, saving the model,
the summary and the plots — so SIGINT, SIGTERM and SIGHUP all unwind as exceptions, and
:class:`RunRecord` turns them into ``status: interrupted`` (or keeps the completed result),
the resume hint and exit 130 (SIGINT) / 143 (SIGTERM, SIGHUP).  A failure anywhere becomes
``status: failed`` with its error.  Writes that must not be torn run inside
:func:`signals_deferred`.  :meth:`RunRecord.lock` holds an ``fcntl.flock`` on
the run folder so two processes never run or resume it at once.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from zoo.errors import CheckpointError, RunInterrupted

_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                 if hasattr(signal, n))


class Terminated(BaseException):
    """SIGTERM or SIGHUP turned into an exception, so the run unwinds like on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


#: signals that really arrived (our handlers count them): a KeyboardInterrupt raised by a
#: plugin's own code is told apart from a real Ctrl-C by this count (zoo.engine.isolation)
_RECEIVED = [0]


def signals_received() -> int:
    """How many SIGINT/SIGTERM/SIGHUP zoo's handlers have turned into exceptions."""
    return _RECEIVED[0]


def handlers_installed() -> bool:
    """zoo's handlers are the current SIGINT handler (a real Ctrl-C is counted)."""
    try:
        return signal.getsignal(signal.SIGINT) is _raise_interrupt
    except (ValueError, OSError):
        return False


#: the main thread's depth of signals_deferred blocks, and a signal that arrived inside one:
#: the signal mask alone does not hold a process-directed signal while other threads (a
#: logger's, a library's pool) leave it unblocked — CPython then runs the handler in the
#: main thread anyway, so zoo's handlers also hold it themselves
_DEFERRING = [0]
_PENDING: list = []


def _raise_interrupt(signum, frame):
    _RECEIVED[0] += 1
    if _DEFERRING[0]:
        _PENDING.append(KeyboardInterrupt())
        return
    raise KeyboardInterrupt


def _raise_terminated(signum, frame):
    _RECEIVED[0] += 1
    if _DEFERRING[0]:
        _PENDING.append(Terminated(signum))
        return
    raise Terminated(signum)


def install_signal_handlers() -> dict:
    """SIGTERM and SIGHUP raise :class:`Terminated`, SIGINT raises KeyboardInterrupt;
    a signal the caller ignores (``nohup``, a background job) stays ignored."""
    previous: dict = {}
    for sig in _SIGNALS:
        try:
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:
                continue
            new = _raise_interrupt if sig == signal.SIGINT else _raise_terminated
            previous[sig] = signal.signal(sig, new)
        except (ValueError, OSError):  # not in the main thread: leave them as they are
            pass
    return previous


def restore_signal_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        try:
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        except (ValueError, OSError):
            pass


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block is done (a checkpoint, the summary); a
    signal held meanwhile is raised when the outermost block ends."""
    main = threading.current_thread() is threading.main_thread()
    if main:
        _DEFERRING[0] += 1
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    except (AttributeError, ValueError, OSError):  # no sigmask here
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)  # a held signal is delivered now
        if main:
            _DEFERRING[0] -= 1
            if not _DEFERRING[0] and _PENDING:
                held = _PENDING[0]
                _PENDING.clear()
                raise held


@dataclass
class RunRecord:
    """How far a run got: its folder, its summary so far, what it was doing."""

    main: bool = True
    resume: str | None = None
    writer: Any = None  # the run folder's RunWriter, once there is a folder
    ctx: Any = None
    stage: str = ""
    started: float = field(default_factory=time.perf_counter)
    warn: Callable[[str], None] = lambda msg: None
    flush: Callable[[], None] = lambda: None  # write a checkpoint held back by pacing
    restore_threads: int | None = None  # torch's thread count before the run set its own
    _lock_fd: int | None = None

    @property
    def run_dir(self) -> Path | None:
        return self.writer.dir if self.writer is not None else None

    @property
    def completed(self) -> bool:
        """The final summary is written: an interrupt now keeps the completed result."""
        return self.writer is not None and self.writer.completed

    def open_folder(self, writer) -> None:
        """The run's folder from now on: locked (rank 0), written by ``writer`` (its one
        :class:`zoo.engine.run_writer.RunWriter`)."""
        if self.main:
            self.lock(writer.dir)  # one process per run folder
        self.writer = writer

    # -- the lock ----------------------------------------------------------------------------
    def lock(self, run_dir: Path) -> None:
        """Hold an ``fcntl.flock`` on the run folder itself for the rest of the run (no lock
        file: the folder is left as it was); refuse when another process holds it."""
        import fcntl  # lazy: POSIX only; absent on Windows, where no lock is taken

        try:
            fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return  # not a folder we can open: the reads and writes say why
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise CheckpointError(f"{run_dir} is in use by another zoo process — two "
                                  "processes cannot run or resume one run folder at once; "
                                  "wait for it to finish, or stop it") from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # -- leaving early -----------------------------------------------------------------------
    def _write(self, status: str, run_end: Callable[[dict], None], **extra) -> None:
        """``status`` in summary.json (through the run's one writer), then ``on_run_end``; a
        refused or interrupted resume keeps the run's own summary."""
        if not self.main or self.writer is None or self.completed:
            return
        seconds = round(time.perf_counter() - self.started, 3)
        try:
            summary = self.writer.finish(status, seconds=seconds, **extra)
        except Exception as exc:  # noqa: BLE001 - the original error matters more
            self.warn(f"could not write summary.json: {exc}")
            summary = self.writer.summary
        if summary is None:
            return
        try:
            run_end(summary)
        except Exception as exc:  # noqa: BLE001
            self.warn(f"on_run_end failed: {exc}")

    def interrupted(self, exc: BaseException, run_end: Callable[[dict], None]
                    ) -> RunInterrupted:
        """Record the interrupt; the :class:`RunInterrupted` to raise (exit 130/143)."""
        code = 143 if isinstance(exc, Terminated) else 130
        self._flush_held()
        self._write("interrupted", run_end, interrupted_while=self.stage or None)
        if self.run_dir is None:
            return RunInterrupted("interrupted before a run folder was made; nothing saved",
                                  exit_code=code)
        if self.completed:
            return RunInterrupted(f"interrupted after the run completed; its results are in "
                                  f"{self.run_dir}", exit_code=code)
        folder = Path(self.run_dir) / "checkpoint"
        has_ckpt = any((folder / n).is_file() for n in ("last.safetensors", "prev.safetensors"))
        if not has_ckpt:
            return RunInterrupted(f"interrupted{self._while()} before the first epoch ended; "
                                  f"nothing to resume in {self.run_dir} — start the run "
                                  "again", exit_code=code)
        return RunInterrupted(f"interrupted{self._while()}; the last complete epoch is saved "
                              f"— resume with `zoo run --resume {self.run_dir}`",
                              exit_code=code)

    def failed(self, error: str, run_end: Callable[[dict], None]) -> None:
        self._flush_held()
        self._write("failed", run_end, error=error.splitlines()[0] if error else error)

    def _flush_held(self) -> None:
        """Write the epoch checkpoint pacing held back, so that epoch is resumable."""
        if self.main and not self.completed:
            with signals_deferred():
                try:
                    self.flush()
                except Exception as err:  # noqa: BLE001 - the saved epochs still stand
                    self.warn(f"could not write the last epoch's checkpoint: {err}")

    def _while(self) -> str:
        return f" while {self.stage}" if self.stage else ""
