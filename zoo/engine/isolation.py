"""Plugins at the side of a run (observers, loggers) cannot take it down.

:func:`call_isolated` runs one piece of plugin code and turns *anything* it raises —
``Exception``, ``SystemExit`` (``sys.exit()`` in ``on_epoch_end``), a ``KeyboardInterrupt``
the plugin raised itself, ``GeneratorExit`` — into one warning naming the plugin; the run
goes on.  A *real* Ctrl-C or SIGTERM still interrupts the run as documented: zoo's signal
handlers count the signals they turn into exceptions (:func:`zoo.engine.guard.signals_received`),
so an interrupt is passed on when a signal arrived while the plugin ran.

:class:`Warner` is the run's ``warn``: every plugin failure (and every other warning said
while the run goes on) is appended to ``summary.json``'s ``warnings`` and printed — on
stderr when the run is quiet (``-q``, ``--json``): warnings are not progress.
:func:`as_plugin_failure` names the plugin behind a ``SystemExit`` from any other plugin code
(a factory, a metric): the run fails with one line and ``status: failed``.
"""
from __future__ import annotations

import json
import signal
import sys
from typing import Any, Callable

from zoo.engine import guard
from zoo.errors import PluginError, ZooError, one_line
from zoo.io import atomic


def _real_signal(exc: BaseException, seen_before: int) -> bool:
    """``exc`` (KeyboardInterrupt or Terminated) came from a signal, not from plugin code."""
    if guard.signals_received() != seen_before:
        return True
    if isinstance(exc, guard.Terminated) or guard.handlers_installed():
        return False  # zoo's handlers are in place and counted no signal: the plugin's own
    try:  # someone else's SIGINT handler: Python's default one raises it for a real Ctrl-C
        return signal.getsignal(signal.SIGINT) is signal.default_int_handler
    except (ValueError, OSError):
        return True


def call_isolated(fn: Callable[[], Any], who: str, warn: Callable[[str], None]) -> tuple:
    """``(True, fn())``, or ``(False, None)`` after warning ``"{who} raised ...; ignored"``
    when ``fn`` raised anything but a real interrupt (which propagates)."""
    seen = guard.signals_received()
    try:
        return True, fn()
    except (KeyboardInterrupt, guard.Terminated) as exc:
        if _real_signal(exc, seen):
            raise
        warn(f"{who} raised {type(exc).__name__} (the plugin's own, not a signal); ignored")
    except SystemExit as exc:
        warn(f"{who} called sys.exit({exc.code!r}); ignored — a plugin cannot end the run")
    except BaseException as exc:  # noqa: BLE001 - an observer must never stop a run
        warn(f"{who} raised {one_line(exc)}; ignored")
    return False, None


class Warner:
    """The run's ``warn(message)``: recorded in the summary's warnings, printed even when
    quiet (on stderr then, so ``--json`` stdout stays JSON)."""

    def __init__(self, log: Callable, quiet: bool, main: bool):
        self.log, self.quiet, self.main = log, quiet, main
        self.warnings: list = []

    def attach(self, warnings: list) -> None:
        """From now on record into ``warnings`` (the summary's list), with what was said."""
        for message in self.warnings:
            if message not in warnings:
                warnings.append(message)
        self.warnings = warnings

    def __call__(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
        if not self.main:
            return
        line = message if message.lower().startswith("warning") else f"warning: {message}"
        if self.quiet:
            print(line, file=sys.stderr, flush=True)
        else:
            self.log(line, style="yellow")

    #: a Warner stands in for a warnings list (``warnings.append(message)``) where plugin
    #: code's failures are collected: a metric's file writer
    append = __call__


def as_plugin_failure(exc: SystemExit, catalog, job, stage: str, blame) -> PluginError:
    """A ``SystemExit`` raised by plugin code inside the run: one line naming the plugin when
    the traceback shows which (``blame`` is :func:`zoo.engine.blame.plugin_error`)."""
    named = blame(exc, catalog, job, stage)
    if named is not None:
        return named
    where = f" while {stage}" if stage else ""
    return PluginError(f"a plugin called sys.exit({exc.code!r}){where} — a plugin cannot "
                       "end the run; rerun with --debug for the traceback")


def rewrite_summary_if_warned(rec, summary: dict) -> None:
    """``on_run_end`` and the loggers (on their own thread) may warn after
    ``summary.json`` is written: the file must still record every warning (rewritten by the
    run's one writer, :class:`zoo.engine.run_writer.RunWriter`)."""
    writer = getattr(rec, "writer", None)
    if not (rec.main and writer is not None and isinstance(summary, dict)
            and summary.get("warnings") and writer.summary is summary):
        return
    path = writer.dir / "summary.json"
    try:
        written = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        written = {}
    if not isinstance(written, dict) or written.get("status") != summary.get("status"):
        return  # not this summary's file (a refused resume keeps the run's own)
    if len(written.get("warnings") or []) != len(summary["warnings"]):
        try:
            writer.finish(summary["status"])
        except (OSError, ZooError):
            pass  # the run's own result stands; the warning was printed