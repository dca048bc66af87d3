"""The lazy-import rule: `zoo --help`, `zoo plugins` and component listings import no torch
(nor the hf extra: huggingface_hub, transformers, datasets)
(checked with ``python -X importtime``), and registry.yaml validation."""
from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "timm", "huggingface_hub", "transformers", "datasets")


def imported_modules(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["strategies"], ["heads"],
                                  ["metrics"], ["datasets"], ["run", "--help"]])
def test_no_torch_imported(args):
    mods = imported_modules(*args)
    assert "zoo.cli" in mods  # the probe works
    assert not [m for m in mods if m.split(".")[0] in HEAVY], args


def test_registry_unknown_key_names_key_and_line(tmp_path):
    from zoo.errors import ConfigError
    from zoo.registry import load_registry

    reg = tmp_path / "reg.yaml"
    reg.write_text("providers: [timm]\n\nprovders: [torchvision]\n")
    with pytest.raises(ConfigError, match=r"line 3: unknown registry key 'provders'.*did you "
                                          r"mean providers"):
        load_registry(reg)
    reg.write_text("aliases: [a, b]\n")
    with pytest.raises(ConfigError, match="'aliases' must be a mapping"):
        load_registry(reg)
