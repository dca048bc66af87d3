"""``zoo ARGS`` in this process through click's ``CliRunner`` isolation (stdin, stdout and
stderr captured; the real entry point :func:`zoo.cli.main`, so its error handling is what is
tested), plus the checks every corpus and fuzz case shares."""
from __future__ import annotations

from click.testing import CliRunner

BUG = "zoo bug"


def invoke(*args) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``zoo ARGS``."""
    from zoo.cli import main

    runner = CliRunner()
    with runner.isolation() as streams:
        out, err = streams[0], streams[1]
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return code, out.getvalue().decode(errors="replace"), err.getvalue().decode(
            errors="replace")


def assert_clean(code: int, out: str, err: str, allowed=(0, 2)) -> None:
    """Exit code in ``allowed``, no traceback anywhere, never the "zoo bug" path, and an
    error (exit 2) is exactly one ``error: `` line."""
    assert BUG not in err, err
    assert "Traceback" not in out + err, err
    assert code in allowed, (code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
