"""Every error zoo raises on purpose, in one place.

The CLI turns any :class:`ZooError` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.  Each subclass names a kind of problem so that
callers of the Python API can catch precisely what they expect.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(Exception):
    """Base class: a problem the user can fix.  ``str(err)`` is the one-line message."""

    exit_code = 2

    def __init__(self, *args):
        # A DataLoader worker re-raises our error as ``type(msg)`` with msg "Caught DataError
        # in DataLoader worker process 0.\nOriginal Traceback ...": keep the original line
        # (it names the file) rather than torch's header.
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith("Caught ") \
                and "\nOriginal Traceback" in args[0]:
            args = (_worker_message(args[0]),)
        super().__init__(*args)


class ConfigError(ZooError):
    """A job spec, registry file or ``--set`` value is malformed or names an unknown key."""


class UnknownComponentError(ZooError):
    """A model, strategy, head, metric or dataset name that no installed plugin provides."""


class AmbiguousNameError(ZooError):
    """A name that several providers offer where the registry gives no order to pick one."""


class PluginError(ZooError):
    """A plugin failed to load or broke the plugin contract."""


class DuplicateComponentError(PluginError):
    """Two plugins registered the same component name."""


class DataError(ZooError):
    """A dataset is missing, empty, unreadable or unusable for the job (e.g. one class)."""


class WeightsError(ZooError):
    """Weights could not be found, downloaded, verified or loaded."""


class CheckpointError(ZooError):
    """A run directory or checkpoint is missing, corrupt or does not fit the model."""


class TrainingError(ZooError):
    """Training cannot go on (e.g. the loss became NaN)."""


class RunInterrupted(ZooError):
    """Training was interrupted by a signal; the last complete epoch is saved."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class MissingDependencyError(ZooError):
    """An optional dependency (an extra) is needed for what was asked."""


class MethodNotApplicable(ZooError):
    """An attribution method that does not apply to this model (e.g. Grad-CAM on a model
    whose features are tokens, not spatial feature maps)."""


def _worker_message(text: str) -> str:
    """The original one-line message at the end of a DataLoader worker's traceback text."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    head, sep, rest = last.partition(": ")
    if sep and "." in head and " " not in head:  # "zoo.errors.DataError: cannot decode ..."
        last = rest
    return f"{last} (in a DataLoader worker)"


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" — did you mean a, b?"`` for the closest ``choices``, or ``""``."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.6)
    if not close:
        lowered = name.lower()
        close = [c for c in choices if lowered and lowered in c.lower()][:n]
    return f" — did you mean {', '.join(close)}?" if close else ""


def one_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"`` — for wrapping foreign exceptions."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def state_dict_error(exc: BaseException) -> str:
    """The informative line of ``load_state_dict``'s error (its first line is a header)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines[1:]), lines[0] if lines else type(exc).__name__)
    return detail[:200]
