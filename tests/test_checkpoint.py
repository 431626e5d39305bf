from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from training import checkpoint as ckpt
from training.checkpoint import CheckpointError, atomic_torch_save, load_checkpoint, load_torch_file


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load.*weights_only"):
        load_torch_file(path)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(CheckpointError, match=r"evil\.pkl"):
        load_torch_file(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "no such file"), (b"", "empty file"), (b"hello, not a checkpoint", "not a")],
)
def test_bad_files_get_one_line_naming_file_and_reason(tmp_path: Path, content: bytes | None,
                                                       reason: str) -> None:
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_torch_file(path)
    message = str(info.value)
    assert str(path) in message and reason in message and "\n" not in message


def test_state_dict_is_not_a_training_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a cyclegan-toolkit training checkpoint"):
        load_checkpoint(path)


def test_atomic_save_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latest.pt"
    atomic_torch_save({"step": 1}, path)
    atomic_torch_save({"step": 2}, path)
    assert load_torch_file(path) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_crash_during_save_leaves_previous_checkpoint_intact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latest.pt"
    atomic_torch_save({"step": 1, "w": torch.arange(4.0)}, path)

    def crash_half_way(obj: object, handle: object) -> None:
        handle.write(b"PK\x03\x04 partial zip")  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # e.g. Ctrl-C or the machine going away mid-write

    monkeypatch.setattr(ckpt.torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()

    state = load_torch_file(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temp file left behind
