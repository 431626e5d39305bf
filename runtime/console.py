"""What every ``runtime`` command does the same way: version, one-line warnings, Ctrl-C.

Kept free of numpy, OpenCV and onnxruntime so that ``--help`` and ``--version`` are instant and
an interrupt during the heavy imports (which happen inside the commands) is caught here.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (``docker stop``, systemd, ``kill``), raised where Ctrl-C would be, so that it
    ends a run as Ctrl-C does: finished outputs kept, the unfinished one's temp file removed."""


_TERMINATED = threading.Event()  # a SIGTERM arrived (a run may catch the exception itself)
_INTERRUPTED = threading.Event()  # a SIGINT arrived


def _terminate(signum: int, frame: Any) -> None:
    _TERMINATED.set()
    raise Terminated()


def _interrupt(signum: int, frame: Any) -> None:
    """Python's own SIGINT handling (``KeyboardInterrupt``), remembering that it came: a
    signal that lands inside an extension module's import comes out as another error (e.g.
    onnxruntime's "ImportError: initialization failed")."""
    _INTERRUPTED.set()
    raise KeyboardInterrupt()


def install_handlers(handlers: dict[int, Any]) -> dict[int, Any]:
    """Install ``handlers`` (signal number -> handler) and return the previous ones, except
    for a signal the process was started ignoring (``cmd &`` in a non-interactive shell
    ignores SIGINT; ``nohup`` SIGHUP): that choice stays."""
    previous = {}
    for signum, handler in handlers.items():
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    return previous


def from_a_signal(exc: BaseException) -> bool:
    """Whether ``exc`` is how a signal's ``KeyboardInterrupt`` came out of code that could not
    pass it on: an ``ImportError`` (an extension module's initialisation, such as
    onnxruntime's "initialization failed"), or any error raised while handling one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, ImportError)


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
    with status 1; SIGTERM is handled the same way, with status 143. Use as
    ``@click.command(cls=InterruptibleCommand)``."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        run = super().main
        if not standalone_mode:
            return run(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        in_main = threading.current_thread() is threading.main_thread()
        _TERMINATED.clear()  # an earlier command in this process (tests) does not count
        _INTERRUPTED.clear()
        previous = install_handlers({signal.SIGTERM: _terminate, signal.SIGINT: _interrupt}
                                    ) if in_main else {}
        stopped = False
        try:
            return run(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            stopped = True
        except SystemExit as exc:
            # A run that caught the signal itself (to finish its summary) exits 130: say 143
            # when it was SIGTERM, as the shell would.
            if exc.code == EXIT_INTERRUPTED and _TERMINATED.is_set():
                sys.exit(EXIT_TERMINATED)
            raise
        except Exception as exc:
            if not ((_TERMINATED.is_set() or _INTERRUPTED.is_set()) and from_a_signal(exc)):
                raise
            stopped = True  # the signal surfaced as another error (inside an import)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if stopped:
            terminated = _TERMINATED.is_set()
            click.echo("terminated" if terminated else "interrupted", err=True)
            sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
        return None

