"""Datasets claiming ``--data PATH`` by the folder's layout (``register(...,
claims_paths=test)``).

``test(path) -> bool`` looks at the folder's top two levels only (a metadata file, a
``dataset_dict.json``), never at every image, and must import nothing heavy: it runs while
the command line is read.  Exactly one claimant reads the path; none: the dataset serving
plain paths (``folder``); two or more: an error naming them all, since picking one by
plugin load order would silently change with what is installed.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from zoo.errors import AmbiguousNameError
from zoo.plugins import strict_plugins


def claimants(catalog: Any, path: str) -> list[str]:
    """The dataset components whose ``claims_paths`` test accepts ``path``."""
    folder = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(folder):
        return []
    found = []
    for comp in catalog.declared("datasets", "claims_paths"):
        try:
            claimed = bool(comp.options["claims_paths"](folder))
        except Exception as exc:  # a plugin's bug must not break every --data PATH
            message = (f"dataset '{comp.name}' (plugin '{comp.plugin}'): its claims_paths "
                       f"test raised {type(exc).__name__}: {exc}")
            if strict_plugins():
                raise
            print(f"warning: {message}; ignored", file=sys.stderr)
            continue
        if claimed:
            found.append(comp)
    return found


def claimed_by(catalog: Any, path: str) -> str | None:
    """The one dataset claiming ``path``, None when none does; several: an error."""
    found = claimants(catalog, path)
    if len(found) > 1:
        names = " and ".join(f"'{c.name}' (plugin '{c.plugin}')" for c in found)
        raise AmbiguousNameError(
            f"{path} is claimed by {len(found)} datasets, {names} — choose one: "
            f"--set data.name={found[0].name} --set data.path={path} instead of --data")
    return found[0].name if found else None
