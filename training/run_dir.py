"""The run folder: one trainer at a time, one run's files, no leftovers of a killed trainer.

A trainer opens its folder with :meth:`RunFolder.open` before it does any work:

- ``RUN_DIR/.cyclegan-train.lock`` is locked with ``flock`` while a trainer uses the folder,
  and holds its process id (for the refusal message). The kernel drops the lock when the
  process ends in any way, SIGKILL included, so a crash never leaves the folder stuck.
- ``RUN_DIR/.cyclegan-train.json`` marks the folder as a run folder (the data scan never reads
  images from inside one) and names the run: a random ``run_id`` that every checkpoint of the
  run also carries, so a checkpoint is recognised as this run's own even when copied elsewhere,
  and another run's checkpoint is recognised even when copied in.
- Temp files of the atomic writers that a killed trainer left behind (checkpoints are full
  size) are removed: only names that match the writers' own patterns, and only once the lock
  is held, so no other trainer can be writing them.

:meth:`RunFolder.claim` then decides what the folder may be used for (see there). This module
does not import torch.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

from training.loss_log import trim_after

try:
    import fcntl
except ImportError:  # not POSIX: the folder works, unlocked
    fcntl = None  # type: ignore[assignment]

MARKER_NAME = ".cyclegan-train.json"
LOCK_NAME = ".cyclegan-train.lock"
RUN_FORMAT = "cyclegan-toolkit/run"
# What a trainer writes at the top of its folder (see training/trainer.py).
TRAINER_OUTPUTS = ("checkpoints", "samples", "config.yaml", "loss_log.jsonl")


class RunDirError(Exception):
    """The run folder cannot be used as asked; the message names it and the reason."""


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` is (or was) a cyclegan-train run folder: it holds the marker file."""
    return (folder / MARKER_NAME).is_file()


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def read_run_id(folder: Path) -> str | None:
    """The run id in ``folder``'s marker, or None (no marker, or one we cannot read)."""
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def checkpoint_run_folder(path: Path) -> Path | None:
    """The run folder a checkpoint path lies in (``RUN_DIR/checkpoints/X.pt``), if it does."""
    parent = path.resolve().parent
    return parent.parent if parent.name == "checkpoints" else None


class RunFolder:
    """A locked run folder; use :meth:`open`, then :meth:`claim`, and :meth:`close` at the end.

    Under ``torchrun`` only rank 0 opens one (it is the only writer).
    """

    def __init__(self, path: Path, lock_fd: int | None, created: bool,
                 lock_existed: bool) -> None:
        self.path = path
        self.run_id = read_run_id(path)
        self.removed_temp_files: list[Path] = []
        self._lock_fd = lock_fd
        self._created = created
        self._lock_existed = lock_existed

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """Create the folder if needed, lock it, and remove its stale temp files.

        Raises :class:`RunDirError` when another trainer holds the folder (naming its pid),
        when ``path`` is a file, or when the folder cannot be created.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{path}: exists and is not a folder; choose another -o")
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"{path}: cannot create the run folder ({exc.strerror or exc})") \
                from None
        lock_existed = (path / LOCK_NAME).exists()
        folder = cls(path, _lock(path), created, lock_existed)
        try:
            folder.removed_temp_files = remove_stale_temp_files(path)
        except BaseException:
            folder.close()
            raise
        return folder

    # ---- what the folder may be used for ------------------------------------------------------
    def holds_checkpoints(self) -> bool:
        folder = self.path / "checkpoints"
        return folder.is_dir() and any(folder.glob("*.pt"))

    def is_empty(self) -> bool:
        """Nothing in the folder but our own lock and marker files."""
        return all(p.name in (LOCK_NAME, MARKER_NAME) for p in self.path.iterdir())

    def owns(self, state: dict[str, Any], path: Path | None) -> bool:
        """Whether checkpoint ``state`` (read from ``path``) belongs to this folder's run.

        Both carry a run id: they must match, wherever the file lies. Otherwise (a checkpoint
        or folder from before run ids) the checkpoint is this run's when it lies in this
        folder's ``checkpoints/``.
        """
        ckpt_id = state.get("run_id")
        if isinstance(ckpt_id, str) and ckpt_id and self.run_id is not None:
            return ckpt_id == self.run_id
        return path is not None and _inside(path, self.path / "checkpoints")

    def claim(self, resume_state: dict[str, Any] | None = None,
              resume_path: Path | None = None) -> str | None:
        """Decide what this folder is used for and record the run id; returns a note or None.

        - No checkpoint to resume: a new run, unless the folder already holds one (continue
          it with ``--resume``) or holds files it would replace that no run of ours wrote.
        - The folder's own checkpoint: the run continues (a folder from before run ids takes
          the checkpoint's id, or a new one).
        - Another run's checkpoint: refused, unless the folder is new or empty; then a new run
          starts from that checkpoint's state, and the returned note says so.
        """
        if resume_state is None:
            if self.holds_checkpoints():
                raise RunDirError(f"{self.path}: already holds a run; continue it with --resume "
                                  "or choose another -o")
            if self.run_id is None:
                foreign = [name for name in TRAINER_OUTPUTS if (self.path / name).exists()]
                if foreign:
                    raise RunDirError(
                        f"{self.path}: is not a cyclegan-train run folder but holds "
                        f"{', '.join(foreign)}, which training would replace; choose another -o")
            self._write_marker(new_run_id())
            return None
        if self.owns(resume_state, resume_path):
            if self.run_id is None:  # a folder from before run ids: it takes the checkpoint's
                ckpt_id = resume_state.get("run_id")
                self._write_marker(ckpt_id if isinstance(ckpt_id, str) and ckpt_id
                                   else new_run_id())
            return None
        source = resume_path or "the checkpoint"
        if not self.is_empty():
            home = checkpoint_run_folder(resume_path) if resume_path is not None else None
            where = f" ({home})" if home is not None and home.resolve() != self.path.resolve() \
                else ""
            raise RunDirError(
                f"{source}: is a checkpoint of another run{where}, not of {self.path}; resume it "
                "with -o set to its own run folder, or give a new, empty -o to start a new run "
                "from it")
        self._write_marker(new_run_id())
        return (f"new run in {self.path}, starting from {source} "
                f"(step {resume_state.get('step', '?')})")

    def _write_marker(self, run_id: str) -> None:
        record = {"format": RUN_FORMAT, "run_id": run_id}
        path = self.path / MARKER_NAME
        tmp = path.with_name(f"{path.name}.tmp")  # hidden already; atomic: temp then rename
        tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
        tmp.replace(path)
        self.run_id = run_id

    # ---- the end ------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the lock. A folder that did not become a run is left as it was found."""
        if self._lock_fd is None:
            return
        try:
            # Unlink while still holding the lock: a trainer that opened the old file meanwhile
            # sees it replaced and locks a new one (see _lock).
            if self.is_empty():
                (self.path / MARKER_NAME).unlink(missing_ok=True)
                (self.path / LOCK_NAME).unlink(missing_ok=True)
                if self._created:
                    self.path.rmdir()
            elif not self._lock_existed and not is_run_folder(self.path):
                (self.path / LOCK_NAME).unlink(missing_ok=True)
        except OSError:
            pass  # best effort: leaving the folder as it is harms nothing
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(folder: Path) -> int | None:
    """Open and ``flock`` ``folder/LOCK_NAME``, write our pid; return the descriptor."""
    path = folder / LOCK_NAME
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"{folder}: cannot write in the run folder "
                              f"({exc.strerror or exc})") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise RunDirError(f"{folder}: in use by another trainer (pid {holder}); wait for "
                                  "it to finish or choose another -o") from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:  # not unlinked by a trainer that released it meanwhile
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)
    raise RunDirError(f"{folder}: cannot lock the run folder (its lock file keeps changing)")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Remove what the run's atomic writers leave behind when killed mid-write.

    Call with the folder's lock held. Only names of our own writers are touched: checkpoint
    temps in ``checkpoints/``, sample grid temps in ``samples/``, and the config and log temps.
    """
    from training.checkpoint import temp_file_pattern

    patterns = {
        folder / "checkpoints": temp_file_pattern(r"latest\.pt|step_\d+\.pt"),
        folder / "samples": temp_file_pattern(r"step_\d+\.png"),
    }
    fixed = [folder / ".config.yaml.tmp", folder / ".loss_log.jsonl.tmp",
             folder / f"{MARKER_NAME}.tmp"]
    candidates = [path for path in fixed if path.is_file()]
    for sub, pattern in patterns.items():
        if sub.is_dir():
            candidates += [p for p in sub.iterdir()
                           if pattern.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    removed = []
    for path in sorted(candidates):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


def set_aside_after(folder: Path, step: int, latest_step: int | None = None) -> list[Path]:
    """A run resumed from an earlier checkpoint than its latest: move what the abandoned steps
    N > ``step`` left, the history checkpoints (``checkpoints/step_N.pt``), the sample grids
    (``samples/step_N.png``) and ``checkpoints/latest.pt`` when ``latest_step`` > ``step``, into
    a new ``after_step_<step>/`` (``-2``, ``-3``... when one is there already) beside them.
    Left in place they would read as this run's: ``--resume`` would continue the abandoned
    steps, and pruning (newest step numbers kept) would delete the new checkpoints instead.
    Returns the files' new paths."""
    later: dict[Path, list[Path]] = {}
    for kind, pattern in (("checkpoints", "step_*.pt"), ("samples", "step_*.png")):
        source = folder / kind
        later[source] = [path for path in sorted(source.glob(pattern))
                         if path.stem[5:].isdigit() and int(path.stem[5:]) > step]
    if latest_step is not None and latest_step > step:
        later[folder / "checkpoints"].append(folder / "checkpoints" / "latest.pt")
    moved = []
    for source, paths in later.items():
        if not paths:
            continue
        aside = source / f"after_step_{step:07d}"
        count = 1
        while aside.exists():  # an earlier rewind to the same step keeps its own files
            count += 1
            aside = source / f"after_step_{step:07d}-{count}"
        aside.mkdir()
        moved += [path.replace(aside / path.name) for path in paths]
    return moved


def rewind_to(folder: Path, step: int, latest_step: int | None = None) -> None:
    """A run (re)starting at ``step``: drop the loss records of later steps and set their
    checkpoints and sample grids aside (:func:`set_aside_after`, with a warning saying so)."""
    trim_after(folder, step)
    moved = set_aside_after(folder, step, latest_step)
    if moved:
        warnings.warn(f"resumed from step {step}: {len(moved)} file(s) of the abandoned later "
                      f"steps (checkpoints, sample grids) moved to {_asides(moved, folder)}",
                      stacklevel=2)


def _asides(moved: list[Path], folder: Path) -> str:
    return ", ".join(sorted({str(path.parent.relative_to(folder)) + "/" for path in moved}))
