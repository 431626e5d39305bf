"""Which files ``cyclegan-run`` wrote: the record that lets a rerun replace its own outputs and
nothing else.

Each output folder (a folder output's root, or a single output file's folder) holds a hidden
``.cyclegan-run.jsonl``: one JSON line per output written, appended just before the complete
temp file is renamed to the output's name (a rename keeps size and time), with the file's size
and modification time: a run killed between the two leaves a line for a file that never
appeared, never a complete output nobody owns. A file is ours only while it still has the size
and time of one of its lines, so a user's file that took an output's name since, or an output
the user edited, is not ours any more. Appending one short line is atomic on local file
systems, so concurrent runs and a killed run leave a readable record (a torn last line is
ignored, and the next record starts on a line of its own).

The same record keeps outputs from becoming inputs: a folder walk skips the files it lists.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

MANIFEST_NAME = ".cyclegan-run.jsonl"


class OutputManifest:
    """The record of one output folder; :meth:`record` is thread-safe."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MANIFEST_NAME
        self._lock = threading.Lock()
        self._entries = _read_entries(self.path)

    def owns(self, path: Path) -> bool:
        """Is ``path`` (inside :attr:`folder`) an output we wrote and nobody changed since?"""
        return _as_written(path, self._entries.get(self._key(path), set()))

    def record(self, path: Path, kind: str, stat: os.stat_result | None = None) -> None:
        """Note ``path`` (``kind`` "image" / "video" / "animation") as ours, with its own
        ``stat`` or, about to be renamed to it, its temp file's."""
        stat = stat or path.stat()
        key = self._key(path)
        entry: dict[str, object] = {"path": key, "kind": kind, "size": stat.st_size,
                                    "mtime_ns": stat.st_mtime_ns}
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            # One write() of one line with O_APPEND: never interleaved with another writer's.
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                end = os.fstat(fd).st_size
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    line = "\n" + line  # end a torn line (a killed run's) so ours stays whole
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            self._entries.setdefault(key, set()).add((stat.st_size, stat.st_mtime_ns))

    def claimer(self, kind: str) -> Callable[[Path, os.stat_result], None]:
        """A ``claim`` for the atomic writers (:func:`runtime.media.sinks.publish`): records
        the output from its temp file's stat before the rename."""
        return lambda path, stat: self.record(path, kind, stat)

    def _key(self, path: Path) -> str:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(self.folder))).as_posix()


def listed_outputs(folder: Path) -> set[Path]:
    """Absolute paths of the outputs that ``folder``'s record lists and that are still as
    written (empty without a record): a line for a rename a killed run never made, or for
    an output the user replaced since, does not hide the file now at that path."""
    base = Path(os.path.abspath(folder))
    paths = {Path(os.path.normpath(base / key)): signatures
             for key, signatures in _read_entries(folder / MANIFEST_NAME).items()}
    return {path for path, signatures in paths.items() if _as_written(path, signatures)}


def _as_written(path: Path, signatures: set[tuple[int, int]]) -> bool:
    """Does ``path`` exist with the (size, mtime_ns) of one of its record's lines?"""
    if not signatures:
        return False
    try:
        stat = path.stat()
    except OSError:
        return False
    return (stat.st_size, stat.st_mtime_ns) in signatures


def _read_entries(path: Path) -> dict[str, set[tuple[int, int]]]:
    """Each recorded output's (size, mtime_ns) signatures, every line's: a rerun that was
    killed before its rename leaves the earlier output, which its earlier line still names."""
    entries: dict[str, set[tuple[int, int]]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return entries
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            signature = (int(entry["size"]), int(entry["mtime_ns"]))
            entries.setdefault(str(entry["path"]), set()).add(signature)
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a killed run, or not ours
    return entries
