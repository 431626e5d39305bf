"""What ``cyclegan-train`` and ``cyclegan-export`` share at the command line, without torch.

- :class:`Command`: a click command whose Ctrl-C, at any moment, is one line and exit 130
  (click's own handling prints "Aborted!" and exits 1, or a traceback during imports).
- :func:`heavy_imports`: the command body imports torch and friends inside this block, so
  ``--help`` and ``--version`` stay fast and work in the runtime-only install; a missing
  optional dependency becomes one line naming the ``pip install`` that fixes it, exit 2.
- :func:`one_line_warnings`: Python warnings as ``warning: ...`` lines for users.

This module must never import torch (nor anything that does): the CLIs import it first.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from training.graceful_stop import Terminated, from_a_signal, install_handlers

# Top-level module -> how a user knows it, for the optional extras (see setup.cfg).
EXTRA_MODULES = {
    "torch": "PyTorch", "torchvision": "torchvision", "PIL": "Pillow", "yaml": "PyYAML",
    "tqdm": "tqdm", "onnx": "onnx", "onnxslim": "onnxslim",
}

INTERRUPTED_EXIT = 130  # 128 + SIGINT, what shells report for Ctrl-C
TERMINATED_EXIT = 143  # 128 + SIGTERM


class _Interrupted(Exception):
    """Ctrl-C (or SIGTERM) inside the command body, carried past click's own
    KeyboardInterrupt handling; its argument is the signal's name."""


_SIGNALLED: list[str] = []  # the signals that came during the command, by name


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT as Python handles it (``KeyboardInterrupt``), SIGTERM as :class:`Terminated`,
    both remembered: one that lands inside an extension module's import comes out as another
    error."""
    _SIGNALLED.append(signal.Signals(signum).name)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def interrupted(message: str = "interrupted", signal_name: str = "SIGINT") -> NoReturn:
    """Print one line and exit 130 (143 for SIGTERM: 128 + the signal's number)."""
    click.echo(message, err=True)
    sys.exit(TERMINATED_EXIT if signal_name == "SIGTERM" else INTERRUPTED_EXIT)


def resume_checkpoint(run_dir: Path, resume: str | None) -> tuple[Path | None, str | None]:
    """What ``--resume`` continues from: ``(checkpoint, None)``; ``(None, note)`` for a bare
    ``--resume`` on a run that has written no checkpoint yet (a requeued job whose first try
    stopped before one: a run folder with no checkpoint, no loss record and no sample), which
    then starts at step 0 and says so; ``(None, None)`` without ``--resume``. A missing or
    unmarked folder is not taken for one (a misspelt ``-o`` must not start hours of work
    elsewhere), nor one whose run went further (its checkpoints deleted: the loss log and
    samples would be replaced). Call this before the run folder is opened (and made)."""
    from training.run_dir import is_run_folder

    if resume is None:
        return None, None
    if resume != "latest":
        return Path(resume), None
    checkpoints = run_dir / "checkpoints"
    latest = checkpoints / "latest.pt"
    log, samples = run_dir / "loss_log.jsonl", run_dir / "samples"
    unstarted = (is_run_folder(run_dir) and not (log.is_file() and log.stat().st_size)
                 and not (samples.is_dir() and any(samples.iterdir())))
    if latest.exists() or not unstarted or (checkpoints.is_dir()
                                            and any(checkpoints.glob("*.pt"))):
        return latest, None  # read as usual (a missing or odd file says so)
    return None, (f"--resume: {run_dir} has no checkpoint yet (stopped before its first?); "
                  "starting the run at step 0")


def say_other_data(resume_state: dict[str, Any] | None, dataroot: Path) -> None:
    """On a resume, a note when DATAROOT is not the run's own: a moved data set (the same
    folder by another path) is fine, other images change what "the same run" means."""
    if resume_state is None:
        return
    saved = str(resume_state.get("config", {}).get("dataroot", ""))
    if Path(saved).resolve() != Path(dataroot).resolve():
        click.echo(f"note: resuming on {dataroot}, not the run's {saved}: the data order goes "
                   "on over these images", err=True)


def interrupted_run(latest: Path, exc: KeyboardInterrupt) -> NoReturn:
    """A training run stopped at once (a second Ctrl-C, or SIGTERM: ``exc`` is then a
    ``Terminated``, exit 143): say what remains to resume from."""
    signal_name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
    if latest.is_file():
        interrupted("interrupted: the last complete checkpoint is intact; continue with "
                    "--resume", signal_name)
    interrupted("interrupted before the first checkpoint: nothing to resume; start the run "
                "again", signal_name)


def stopped_early(result: Any, start_step: int) -> NoReturn:
    """A training run that a first Ctrl-C/SIGTERM ended after saving (``result.stopped_by``)."""
    interrupted(f"stopped by {result.stopped_by} at step {result.step} "
                f"({result.step - start_step} in this run); checkpoint saved: "
                f"{result.checkpoint}; continue with --resume", result.stopped_by)


class Command(click.Command):
    """``click.Command`` with Ctrl-C as one line (``interrupted``) and exit code 130, and
    SIGTERM (``docker stop``, systemd) the same way with 143, wherever they land (the heavy
    imports included).

    Used through ``@click.command(cls=Command)``; ``CliRunner`` and console scripts call it as
    any click command. A command body may still catch ``KeyboardInterrupt`` itself to say more
    (e.g. that the last checkpoint is intact) and exit 130 (143 for :class:`Terminated`).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted("SIGTERM" if isinstance(exc, Terminated) else "SIGINT") from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        _SIGNALLED.clear()
        in_main = threading.current_thread() is threading.main_thread()
        previous = install_handlers({signal.SIGINT: _on_signal, signal.SIGTERM: _on_signal}
                                    ) if in_main else {}
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except _Interrupted as exc:
            _stopped_by(str(exc))
        except click.Abort:
            # Ctrl-C (or end of input) while click itself was parsing.
            _stopped_by(_SIGNALLED[-1] if _SIGNALLED else "SIGINT")
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except Exception as exc:
            if not (_SIGNALLED and from_a_signal(exc)):
                raise
            _stopped_by(_SIGNALLED[-1])  # the signal surfaced as another error (an import)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        sys.exit(result if isinstance(result, int) else 0)


def _stopped_by(signal_name: str) -> NoReturn:
    interrupted("terminated" if signal_name == "SIGTERM" else "interrupted", signal_name)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@contextmanager
def heavy_imports(command: str, extra: str, modules: Sequence[str] = ("torch",)) -> Iterator[None]:
    """Wrap the command body's imports of optional dependencies.

    A missing one (``ModuleNotFoundError`` for a module of :data:`EXTRA_MODULES`) exits 2 with
    ``error: COMMAND needs PyTorch: pip install "cyclegan-toolkit[EXTRA]"``, naming every one
    of ``modules`` (the extra's main packages) that is missing too, not only the first the
    imports met; any other missing module is a bug and propagates.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in EXTRA_MODULES:
            raise
        missing = [m for m in modules if m != root and not _installed(m)]
        names = [EXTRA_MODULES[m] for m in sorted({root, *missing}, key=_extra_order)]
        click.echo(f'error: {command} needs {" and ".join(names)}: '
                   f'pip install "cyclegan-toolkit[{extra}]"', err=True)
        sys.exit(2)


def _extra_order(module: str) -> int:
    return list(EXTRA_MODULES).index(module)


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    # One line per warning, without the source location: these are messages for users. A
    # DataLoader worker's (an image that fails to decode mid-run) starts on a line of its own:
    # the main process's progress bar holds the current one, with no newline.
    click.echo(f"{chr(10) if _in_loader_worker() else ''}warning: {message}", err=True)


def _in_loader_worker() -> bool:
    """Whether this process is a torch DataLoader worker (torch not imported: no)."""
    data = sys.modules.get("torch.utils.data")
    return data is not None and data.get_worker_info() is not None


def one_line_warnings() -> None:
    """Show Python warnings as one ``warning: MESSAGE`` line each on stderr. Under
    ``torchrun``, the data scan's warning, which every process would give alike, is left to
    the first process."""
    warnings.showwarning = _show_warning
    if os.environ.get("RANK", "0") != "0":
        # training.data's scan: "FOLDER: skipped N file(s): ..." (decode failures while
        # training are each process's own, and stay)
        warnings.filterwarnings("ignore", message=r".*: skipped \d+ file\(s\)")
