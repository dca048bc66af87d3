"""zoo.engine.allocator: glibc's mmap threshold is fixed once per run (issue 27 §3)."""
import ctypes
import json
import sys
from pathlib import Path

import pytest

from zoo.engine import allocator
from zoo_cli_helpers import TINY_FLAGS, assert_one_line_error, tiny_run, zoo


def test_wanted_threshold_default_and_opt_outs():
    assert allocator.wanted_threshold(None, {}, "linux") is None  # opt-in
    assert allocator.wanted_threshold(True, {}, "linux") == allocator.DEFAULT_THRESHOLD
    assert allocator.wanted_threshold(4194304, {}, "linux") == 4194304
    assert allocator.wanted_threshold(False, {}, "linux") is None
    # the user's own glibc setting, another allocator or another OS: left alone
    assert allocator.wanted_threshold(None, {"MALLOC_MMAP_THRESHOLD_": "65536"}, "linux") is None
    assert allocator.wanted_threshold(None, {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"},
                                      "linux") is None
    assert allocator.wanted_threshold(None, {}, "darwin") is None


def test_the_setting_is_read_by_zoo_settings():
    from zoo import settings

    assert settings.malloc_threshold("") is None
    assert settings.malloc_threshold("off") is False
    assert settings.malloc_threshold("on") is True
    assert settings.malloc_threshold("4194304") == 4194304


@pytest.mark.parametrize("value", ["lots", "12.5", "100", str(64 << 20)])
def test_a_malformed_threshold_is_a_settings_error(value):
    from zoo import settings

    with pytest.raises(settings.SettingsError, match="ZOO_MALLOC_THRESHOLD"):
        settings.malloc_threshold(value)


@pytest.mark.skipif(sys.platform != "linux" or allocator._glibc() is None,
                    reason="glibc only")
def test_fix_sets_mallopt_once(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_done", [])
    monkeypatch.setattr(allocator, "_glibc", lambda: FakeLibc())
    assert allocator.fix_mmap_threshold(True, {}) == allocator.DEFAULT_THRESHOLD
    assert allocator.fix_mmap_threshold(True, {}) == allocator.DEFAULT_THRESHOLD
    assert calls == [(allocator.M_MMAP_THRESHOLD, allocator.DEFAULT_THRESHOLD)]


def test_fix_does_nothing_when_opted_out(monkeypatch):
    monkeypatch.setattr(allocator, "_done", [])
    monkeypatch.setattr(allocator, "_glibc", lambda: pytest.fail("libc must not be touched"))
    assert allocator.fix_mmap_threshold(False, {}) is None
    assert allocator._done == []


@pytest.mark.skipif(sys.platform != "linux" or allocator._glibc() is None,
                    reason="glibc only")
def test_real_glibc_accepts_the_threshold():
    # mallopt returns 1 on success: the parameter number and value are ones glibc takes
    libc = ctypes.CDLL("libc.so.6")
    assert libc.mallopt(allocator.M_MMAP_THRESHOLD, allocator.DEFAULT_THRESHOLD) == 1


def _history(run: Path) -> list[tuple]:
    """Each epoch's numbers that do not depend on timing: train loss, val metrics, LRs."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["train"]["loss"], r["val"], r["lr"]) for r in rows]


@pytest.mark.skipif(sys.platform != "linux" or allocator._glibc() is None,
                    reason="glibc only")
def test_a_run_with_the_fixed_threshold_has_the_same_results(tmp_path):
    """Where blocks are placed changes no number: the same tiny run with the threshold
    fixed (``ZOO_MALLOC_THRESHOLD=on``) and left to glibc (``off``, the default)."""
    out = tmp_path / "runs"
    fixed = tiny_run(out, "fixed", "--epochs", "2", "--set", "data.num_workers=0",
                     env={"ZOO_MALLOC_THRESHOLD": "on"})
    glibc = tiny_run(out, "glibc", "--epochs", "2", "--set", "data.num_workers=0",
                     env={"ZOO_MALLOC_THRESHOLD": "off"})
    assert fixed["test"] == glibc["test"]
    assert _history(out / "fixed") == _history(out / "glibc")
    assert (out / "fixed" / "model.safetensors").read_bytes() == (
        out / "glibc" / "model.safetensors").read_bytes()


def test_a_malformed_threshold_stops_a_run_with_one_line(tmp_path):
    proc = zoo("run", "timm:test_resnet", "--epochs", "1", "--out", tmp_path / "runs",
               *TINY_FLAGS, env={"ZOO_MALLOC_THRESHOLD": "lots"})
    assert "ZOO_MALLOC_THRESHOLD" in assert_one_line_error(proc.stderr, proc.returncode)
    assert not (tmp_path / "runs").exists()
