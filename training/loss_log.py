"""The run folder's ``loss_log.jsonl``: one JSON record per line, appended as training goes.

On resume the records written after the checkpoint being resumed from are dropped, so the log
reads like one uninterrupted run. A line cut short by a crash is dropped too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LOG_NAME = "loss_log.jsonl"


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / LOG_NAME, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def trim_after(run_dir: Path, step: int) -> None:
    """Keep the records of steps <= ``step`` (atomically: temp file, then rename)."""
    path = run_dir / LOG_NAME
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)
