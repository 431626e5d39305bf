"""What every ``runtime`` command does the same way: version, one-line warnings, Ctrl-C.

Kept free of numpy, OpenCV and onnxruntime so that ``--help`` and ``--version`` are instant and
an interrupt during the heavy imports (which happen inside the commands) is caught here.
"""

from __future__ import annotations

import sys
from typing import Any

import click

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def package_version() -> str:
    """The installed cyclegan-toolkit version (from the package metadata: no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cyclegan-toolkit")
    except PackageNotFoundError:
        return "unknown (not installed)"


def show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for users: one line, no source location."""
    click.echo(f"warning: {message}", err=True)


class InterruptibleCommand(click.Command):
    """A click command whose Ctrl-C, wherever it lands (the heavy imports inside the command
    included), is one line and exit status 130, instead of a traceback or click's "Aborted!"
    with status 1. Use as ``@click.command(cls=InterruptibleCommand)``."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        run = super().main
        if not standalone_mode:
            return run(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        try:
            return run(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
