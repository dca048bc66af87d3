"""The ``zoo`` command line: a thin layer over :mod:`zoo.api`.

Conventions (docs/cli.md): errors are one line on stderr with exit code 2 (click's usage
errors too); ``--debug`` anywhere on the line shows the traceback; ``--json`` prints only
JSON on stdout.  Importing this module imports no torch, so ``zoo --help`` stays fast.
"""
from __future__ import annotations

import contextlib
import os
import sys

import click

from zoo.api import check_environment, get_catalog, setting_flag
from zoo.cli import output, quick_exit
from zoo.cli.output import fail
from zoo.errors import ZooError, one_line


class ZooGroup(click.Group):
    """Lists commands in the order they were added; plugins add theirs at startup."""

    def list_commands(self, ctx):
        return list(self.commands)


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"],
                                             "max_content_width": 100})
@click.version_option(package_name="zoo", prog_name="zoo")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """zoo — pick a pretrained backbone, point it at your images, transfer it with a strategy.

    \b
    Quick start:
      zoo list 'resnet*' --pretrained      models from every installed provider
      zoo info resnet18                    provider(s), params, input size, tags
      zoo run resnet18 --strategy finetune a full transfer job on the built-in demo data
      zoo plugins                          what is installed, which hooks, what failed

    Docs: docs/ in the repository (cli.md, jobs.md, runs.md, plugins.md, hooks.md).
    """


def _register_builtin_commands() -> None:
    # lazy: command modules load when the CLI runs, after `cli` exists
    from zoo.cli import catalog_cmds, run_cmd

    for module in (catalog_cmds, run_cmd):
        module.register(cli)
    for name in ("weights_cmds", "runs_cmds", "compare_cmd", "rank_cmds", "shift_cmd",
                 "lr_find_cmd", "soup_cmd", "adapt_cmd", "plugin_cmds", "data_cmds"):
        try:
            module = __import__(f"zoo.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name == f"zoo.cli.{name}":
                continue
            raise
        module.register(cli)


def _register_plugin_commands() -> None:
    pm = get_catalog().pm
    for impl in pm.impls("register_commands"):
        try:
            pm.call_impl(impl, cli=cli)
        except Exception as exc:
            pm.fail_plugin(impl.plugin_name, f"register_commands raised {exc}")


def entry() -> None:
    """The console script (``zoo``, ``python -m zoo``): :func:`main`, then the process ends
    without the second of interpreter teardown (:mod:`zoo.cli.quick_exit`). Python callers
    and tests call :func:`main`, which returns or raises ``SystemExit`` as usual."""
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    quick_exit.exit_now(code)


def _check_working_directory() -> None:
    """A deleted working directory: one line now, before torch is imported (its MKL loader
    dies with "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so" there)."""
    try:
        os.getcwd()
    except (FileNotFoundError, OSError):
        fail("the current working directory no longer exists (deleted or unmounted) — cd to "
             "an existing folder and run zoo again")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:  # a malformed variable (ZOO_FAULT included) is a one-line error, exit 2
        check_environment()
        debug_env = setting_flag("ZOO_DEBUG")
    except ZooError as exc:
        fail(str(exc))
    output.DEBUG = DEBUG = "--debug" in args or debug_env
    if "--debug" in args:  # accepted before or after the subcommand
        args = [a for a in args if a != "--debug"]
    _check_working_directory()
    try:
        _register_builtin_commands()
        _register_plugin_commands()
        # --json: stdout is the JSON alone; what anything else prints goes to stderr
        with output.json_stdout() if "--json" in args else contextlib.nullcontext():
            cli.main(args=args, prog_name="zoo", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        fail(f"{exc.format_message()}{hint}")
    except click.ClickException as exc:
        fail(exc.format_message())
    except ZooError as exc:
        if DEBUG:
            raise
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
             getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        if DEBUG:
            raise
        fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug in zoo or a plugin
        # Bad input is a ZooError (exit 2); reaching here means zoo failed to validate
        # something or has a bug: say so in one line (exit 1), never a bare traceback.
        if DEBUG:
            raise
        fail(f"zoo bug: {one_line(exc)} — please report it; rerun with --debug for the "
             "traceback", 1)
