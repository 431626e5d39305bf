from __future__ import annotations

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from training import checkpoint as ckpt
from training.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    atomic_torch_save,
    load_checkpoint,
    load_torch_file,
)


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


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_file_is_refused(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(RunsCode(marker), protocol=protocol))
    with pytest.raises(CheckpointError, match=r"evil\.pkl: (refused to load|is a plain Python "
                       r"pickle)"):
        load_torch_file(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"w": [0.0]}, protocol=protocol))  # harmless, still not ours
    with pytest.raises(CheckpointError, match=r"evil\.pkl: is a plain Python pickle \(as "
                       r"pickle\.dump writes\), not a file torch\.save wrote"):
        load_torch_file(path)


def test_damaged_legacy_torch_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"w": torch.zeros(4)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"old\.pt: is damaged or not a PyTorch file "
                       r"\(torch\.save's legacy pickle format"):
        load_torch_file(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "no such file"), (b"", "empty file"),
     (b"hello, not a checkpoint", "is not a PyTorch file")],
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


def test_a_full_disk_names_the_checkpoint_and_the_disk(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "latest.pt"
    atomic_torch_save({"step": 1}, path)

    def short_write(obj: object, handle: object) -> None:  # what torch.save says on ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3048128 "
                           "vs 3048016")

    monkeypatch.setattr(ckpt.torch, "save", short_write)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda folder: SimpleNamespace(free=4096))
    with pytest.raises(CheckpointWriteError) as info:
        atomic_torch_save({"step": 2}, path)
    assert str(info.value) == f"{path}: cannot write (No space left on device)"
    monkeypatch.undo()
    assert load_torch_file(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notes
@pytest.mark.parametrize("name", ["model.onnx", "renamed.pt"])
def test_onnx_file_is_named_as_onnx_not_as_code(tmp_path: Path, name: str) -> None:
    import io

    buffer = io.BytesIO()
    torch.onnx.export(torch.nn.Conv2d(3, 3, 1), (torch.zeros(1, 3, 4, 4),), buffer,
                      dynamo=False)
    path = tmp_path / name
    path.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError) as info:
        load_torch_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: is an ONNX model, not a PyTorch checkpoint")
    assert "code" not in message and "\n" not in message


def test_directory_is_named_as_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"{tmp_path}: is a directory"):
        load_torch_file(tmp_path)


def test_temp_file_pattern_matches_the_writers_names_and_nothing_else(tmp_path: Path) -> None:
    import tempfile

    pattern = ckpt.temp_file_pattern(r"latest\.pt|step_\d+\.pt")
    for name in ("latest.pt", "step_0000020.pt"):
        for _ in range(20):  # mkstemp's own random names
            prefix, suffix = ckpt.temp_affixes(name)
            fd, made = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=tmp_path)
            os.close(fd)
            assert pattern.fullmatch(Path(made).name), made
    for name in (".latest.pt.tmp", "latest.pt.abcdefgh.tmp", ".other.pt.abcdefgh.tmp",
                 ".latest.pt.abcdefgh.tmp.bak", ".latest.pt.ABCDEFGH.tmp", "latest.pt"):
        assert not pattern.fullmatch(name), name


def _member_data_offset(path: Path, suffix: str) -> tuple[int, int]:
    """(offset, size) of the stored bytes of the zip member whose name ends with ``suffix``."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(handle.read(2), "little") for _ in "ne")
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


def test_changed_weight_bytes_are_caught_by_the_zip_checksums(tmp_path: Path) -> None:
    """torch.load does not check CRCs: flipped bytes would load as (absurd) weights."""
    path = tmp_path / "g.pth"
    torch.save({"w": torch.zeros(256)}, path)
    offset, size = _member_data_offset(path, "/data/0")
    data = bytearray(path.read_bytes())
    data[offset + size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"g\.pth: is damaged: the checksum of "
                       r"\S+/data/0 does not match its bytes"):
        load_torch_file(path)


def test_truncated_zip_checkpoint_says_so(tmp_path: Path) -> None:
    path = tmp_path / "g.pth"
    torch.save({"w": torch.zeros(256)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"g\.pth: is truncated or damaged"):
        load_torch_file(path)


def test_other_model_formats_are_named(tmp_path: Path) -> None:
    import zipfile

    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 1)), scripted)
    keras = tmp_path / "generator.keras"
    with zipfile.ZipFile(keras, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    h5 = tmp_path / "generator.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    saved_model = tmp_path / "saved_model"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"\x08\x01")
    other_zip = tmp_path / "photos.pth"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("a.txt", "not weights")
    for path, reason in [(scripted, "is a TorchScript archive \\(torch.jit.save\\), not weights"),
                         (keras, "is a Keras model; this toolkit reads PyTorch weights"),
                         (h5, "is an HDF5 file \\(Keras weights\\?\\)"),
                         (saved_model, "is a TensorFlow SavedModel"),
                         (other_zip, "is a zip archive but not a PyTorch file \\(no data.pkl")]:
        with pytest.raises(CheckpointError, match=f"{path.name}: {reason}") as info:
            load_torch_file(path)
        assert "weights_only set to False" not in str(info.value)


def test_a_file_saved_without_checksums_loads(tmp_path: Path) -> None:
    config = pytest.importorskip("torch.utils.serialization.config")
    path = tmp_path / "g.pth"
    # torch's own switch (its config module, patched its own way: setattr breaks it)
    with config.patch({"save.compute_crc32": False}):  # all CRCs zero: nothing to check
        torch.save({"w": torch.ones(3)}, path)
    assert torch.equal(load_torch_file(path)["w"], torch.ones(3))


def test_legacy_format_at_pickle_protocol_4_says_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "old.pth"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False,
               pickle_protocol=4)
    with pytest.raises(CheckpointError, match=r"old\.pth: is in torch\.save's legacy format "
                       r"with pickle protocol 4, which weights-only loading cannot read"):
        load_torch_file(path)
