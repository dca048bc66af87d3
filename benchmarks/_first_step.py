"""Run a script or module and stamp the wall-clock time of its first optimizer step.

    python benchmarks/_first_step.py STAMP_FILE (-m MODULE | SCRIPT) [ARGS...]

Used by whole_process.py for "time to first training step": a global optimizer-step hook
(torch >= 2.0) writes ``time.time()`` to STAMP_FILE once. zoo and the plain scripts both run
under it, so its cost (importing torch a moment earlier than they would) is the same for both.
"""
from __future__ import annotations

import os
import runpy
import sys
import time

from torch.optim.optimizer import register_optimizer_step_pre_hook


def main() -> None:
    stamp, rest = sys.argv[1], sys.argv[2:]
    done = []

    def hook(optimizer, args, kwargs):
        if not done:
            done.append(True)
            with open(stamp, "w") as f:
                f.write(repr(time.time()))

    register_optimizer_step_pre_hook(hook)
    if rest[0] == "-m":
        sys.argv = [rest[1]] + rest[2:]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        sys.path.insert(0, os.path.dirname(os.path.abspath(rest[0])))
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
