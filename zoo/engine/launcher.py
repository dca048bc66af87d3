"""``zoo run --nproc N``'s torchrun: :mod:`torch.distributed.run` whose failure is one line.

Each rank prints its own one-line zoo error (``error: rank 1 of 2: ...``) and zoo's launcher
says the distributed run failed; torchrun itself would add its ``ChildFailedError``
traceback and a box of per-rank records on top.  Run as ``python -m zoo.engine.launcher
TORCHRUN-ARGS``: the same launcher, its failure turned into the exit status alone, its
agent's log lines (``Sending process ... closing signal``) kept to real errors.  Calling
``torchrun`` directly keeps torchrun's own report (docs/distributed.md).
"""
from __future__ import annotations

import logging
import sys


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import (  # lazy: torch
        ChildFailedError)
    from torch.distributed.run import main as torchrun_main  # lazy: torch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        torchrun_main(argv)
    except ChildFailedError as exc:
        failures = getattr(exc, "failures", {}) or {}
        codes = [getattr(f, "exitcode", 1) for f in failures.values()]
        return next((c for c in codes if isinstance(c, int) and c > 0), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
