"""Ctrl-C and SIGTERM during training: finish the step, save a checkpoint, then stop.

A training loop that stopped wherever the signal landed could only fall back to the last
periodic checkpoint (up to ``checkpoint_every`` steps behind, or none at all early in a run),
and the step in flight may have updated some networks and not others. Inside
:class:`GracefulStop` the first SIGINT or SIGTERM only sets :attr:`GracefulStop.requested`; the
loop checks it after each step, saves and returns. A second signal raises ``KeyboardInterrupt``
at once, as before (the last complete checkpoint is then what remains).

Only a single process in the main thread defers: signal handlers can only be set there, and
under ``torchrun`` every process would have to agree on the step to stop at (a collective per
step), so there the signal interrupts as it always did.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """A second SIGTERM: stop at once, as a second Ctrl-C does (exit status 143, not 130)."""


class GracefulStop:
    """Context manager: defer the first SIGINT/SIGTERM to the end of the current step.

    ``enabled`` False (several processes, or not the main thread) leaves the signals alone and
    :attr:`requested` stays False. ``progress_bar``: one is on screen (the first signal's line
    then starts on a line of its own). The first signal prints one line to stderr; a second raises
    ``KeyboardInterrupt`` (:class:`Terminated` for SIGTERM).
    """

    def __init__(self, enabled: bool = True, progress_bar: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self._line_start = "\n" if progress_bar else ""  # end a progress bar's line first
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # the second one: stop now
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        again = "Ctrl-C" if signum == signal.SIGINT else self.signal_name
        print(f"{self._line_start}stopping after this step to save a checkpoint ({again} again "
              "to stop at once)", file=sys.stderr, flush=True)

    def start(self) -> GracefulStop:
        """Install the handlers (when enabled); :meth:`restore` puts the previous ones back."""
        if self.enabled:
            self._previous = install_handlers(dict.fromkeys(_SIGNALS, self._handle))
        return self

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def __enter__(self) -> GracefulStop:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.restore()


def install_handlers(handlers: dict[int, Any]) -> dict[int, Any]:
    """Install ``handlers`` (signal number -> handler) and return the previous ones, except
    for a signal the process was started ignoring (``cmd &`` in a non-interactive shell
    ignores SIGINT; ``nohup`` SIGHUP): that choice stays. (``runtime.console`` has its twin:
    the runtime imports nothing of training.)"""
    previous = {}
    for signum, handler in handlers.items():
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    return previous


def from_a_signal(exc: BaseException) -> bool:
    """Whether ``exc`` is how a signal's ``KeyboardInterrupt`` came out of code that could not
    pass it on: an ``ImportError`` (an extension module's initialisation), or any error raised
    while handling one. (Twin of ``runtime.console.from_a_signal``.)"""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, ImportError)


def ignore_interrupts_in_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: a data worker ignores SIGINT and SIGTERM (a
    terminal's Ctrl-C goes to the whole process group, and systemd, Slurm's scancel or
    ``kill -TERM -PGID`` send SIGTERM to every process of the job), so that the main process
    decides when the run stops and the step being finished still gets its batches. The workers
    still end with the loader, or when the main process is gone (PyTorch watches for that)."""
    for signum in _SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
