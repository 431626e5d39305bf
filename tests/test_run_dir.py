"""The run folder: one trainer at a time, one run's checkpoints, no leftovers, no feedback loop."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from training.checkpoint import atomic_torch_save, load_checkpoint, load_torch_file
from training.cli import main as train_cli
from training.data import UnpairedDataset
from training.run_dir import LOCK_NAME, MARKER_NAME, RunDirError, RunFolder, read_run_id

TINY = ["--generator", "resnet_6blocks", "--ngf", "8", "--ndf", "8", "--load-size", "36",
        "--crop-size", "32", "--workers", "0", "--sample-every", "0", "--checkpoint-every", "0",
        "--log-every", "1", "-q"]


def train_cli_run(dataroot: Path, run: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(train_cli, [str(dataroot), "-o", str(run), *TINY, *args])
    return result.exit_code, result.output


def resume_cli_run(dataroot: Path, run: Path, *args: str) -> tuple[int, str]:
    """No architecture flags: the checkpoint's configuration is the run's (as users resume)."""
    result = CliRunner().invoke(train_cli, [str(dataroot), "-o", str(run), "-q", *args])
    return result.exit_code, result.output


@pytest.fixture
def two_runs(dataroot: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Run ``a`` (resnet_6blocks, 1 step) and run ``b`` (resnet_9blocks, 1 step)."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert train_cli_run(dataroot, a, "--max-steps", "1")[0] == 0
    code, output = train_cli_run(dataroot, b, "--max-steps", "1", "--generator", "resnet_9blocks")
    assert code == 0, output
    return a, b


# ---- one trainer per folder ---------------------------------------------------------------

def test_second_trainer_on_a_folder_is_refused_naming_the_pid_and_a_killed_one_leaves_no_lock(
        dataroot: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom training.run_dir import RunFolder\n"
         "folder = RunFolder.open(sys.argv[1])\nprint('locked', flush=True)\ntime.sleep(120)",
         str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, output = train_cli_run(dataroot, run, "--max-steps", "1")
        assert code == 2
        assert output == f"error: {run}: in use by another trainer (pid {holder.pid}); wait " \
                         "for it to finish or choose another -o\n"
        assert not (run / "checkpoints").exists()
    finally:
        holder.kill()  # SIGKILL: no cleanup of its own runs
        holder.wait()
    code, output = train_cli_run(dataroot, run, "--max-steps", "1")
    assert code == 0, output
    assert (run / "checkpoints" / "latest.pt").exists()


def test_the_lock_is_held_for_the_whole_run_and_released_after(dataroot: Path,
                                                               tmp_path: Path) -> None:
    from test_training import tiny_config

    from training.trainer import train

    run = tmp_path / "run"
    seen = []

    def try_second(trainer: object) -> None:
        with pytest.raises(RunDirError, match="in use by another trainer"):
            RunFolder.open(run)
        seen.append(True)

    train(tiny_config(dataroot, max_steps=1), run, progress=False, on_start=try_second)
    assert seen == [True]
    with RunFolder.open(run):  # released
        pass


# ---- whose checkpoint ---------------------------------------------------------------------

def test_resuming_another_runs_checkpoint_into_a_run_folder_is_refused(
        dataroot: Path, two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    before = {p.name: p.read_bytes() for p in (a / "checkpoints").iterdir()}
    log_before = (a / "loss_log.jsonl").read_text()
    code, output = resume_cli_run(dataroot, a, "--resume", str(b / "checkpoints" / "latest.pt"),
                                  "--max-steps", "2")
    assert code == 2, output
    assert output == (f"error: {b / 'checkpoints' / 'latest.pt'}: is a checkpoint of another "
                      f"run ({b.resolve()}), not of {a}; resume it with -o set to its own run "
                      "folder, or give a new, empty -o to start a new run from it\n")
    assert {p.name: p.read_bytes() for p in (a / "checkpoints").iterdir()} == before
    assert (a / "loss_log.jsonl").read_text() == log_before


def test_another_runs_checkpoint_starts_a_new_run_in_a_new_folder(
        dataroot: Path, tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    _, b = two_runs
    c = tmp_path / "c"
    result = CliRunner().invoke(train_cli, [str(dataroot), "-o", str(c), "--resume",
                                            str(b / "checkpoints" / "latest.pt"),
                                            "--max-steps", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"new run in {c}, starting from {b / 'checkpoints' / 'latest.pt'} (step 1)" \
        in result.output
    forked, parent = (load_checkpoint(d / "checkpoints" / "latest.pt") for d in (c, b))
    assert forked["step"] == 2 and forked["config"]["generator"] == "resnet_9blocks"
    assert forked["run_id"] == read_run_id(c) != parent["run_id"] == read_run_id(b)


def test_a_copied_checkpoint_is_recognised_by_its_run_id(
        dataroot: Path, tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    backup = tmp_path / "backup.pt"  # this run's own checkpoint, kept elsewhere
    shutil.copy(a / "checkpoints" / "latest.pt", backup)
    code, output = resume_cli_run(dataroot, a, "--resume", str(backup), "--max-steps", "2")
    assert code == 0, output
    assert load_checkpoint(a / "checkpoints" / "latest.pt")["step"] == 2

    imported = a / "checkpoints" / "imported.pt"  # another run's, copied into this one
    shutil.copy(b / "checkpoints" / "latest.pt", imported)
    code, output = resume_cli_run(dataroot, a, "--resume", str(imported), "--max-steps", "3")
    assert code == 2 and "is a checkpoint of another run" in output
    assert load_checkpoint(a / "checkpoints" / "latest.pt")["step"] == 2


def test_checkpoints_from_before_run_ids_are_judged_by_their_path(
        dataroot: Path, tmp_path: Path, two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    for run in (a, b):  # as written before this change: no marker, no run_id
        (run / MARKER_NAME).unlink()
        state = load_torch_file(run / "checkpoints" / "latest.pt")
        del state["run_id"]
        atomic_torch_save(state, run / "checkpoints" / "latest.pt")
    code, output = resume_cli_run(dataroot, a, "--resume", "--max-steps", "2")
    assert code == 0, output  # its own: RUN_DIR/checkpoints/latest.pt
    assert read_run_id(a) is not None  # the old folder now has an identity
    code, output = resume_cli_run(dataroot, a, "--resume", str(b / "checkpoints" / "latest.pt"),
                                  "--max-steps", "2")
    assert code == 2 and "is a checkpoint of another run" in output


@pytest.mark.parametrize(("resume", "message"), [
    ("folder", "is a directory, expected a checkpoint file"),
    ("model.onnx", "is an ONNX model, not a PyTorch checkpoint"),
])
def test_resume_from_something_else_names_the_real_reason(dataroot: Path, tmp_path: Path,
                                                          resume: str, message: str) -> None:
    path = tmp_path / resume
    if resume == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x032.4")  # an ONNX file's first fields
    code, output = train_cli_run(dataroot, tmp_path / "run", "--resume", str(path))
    assert code == 2 and output.startswith(f"error: {path}: {message}")
    assert "code" not in output and output.count("\n") == 1


# ---- leftovers ----------------------------------------------------------------------------

def test_stale_temp_files_of_a_killed_trainer_are_removed_at_the_next_start(
        dataroot: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train_cli_run(dataroot, run, "--max-steps", "1")[0] == 0
    ours = [run / "checkpoints" / ".latest.pt.k3j9_x0a.tmp",
            run / "checkpoints" / ".step_0000002.pt.abcdefgh.tmp",
            run / "samples" / ".step_0000002.png.0a1b2c3d.tmp"]
    others = [run / "checkpoints" / ".notes.pt.abcdefgh.tmp",  # not a name the writer uses
              run / "checkpoints" / "latest.pt.abcdefgh.tmp",  # not hidden: not ours
              run / "checkpoints" / ".latest.pt.tmp",
              run / "mine.tmp"]
    for path in ours + others:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"\0" * 1000)
    result = CliRunner().invoke(train_cli, [str(dataroot), "-o", str(run), "--resume",
                                            "--max-steps", "2"])  # not quiet: notes shown
    assert result.exit_code == 0, result.output
    assert f"removed 3 temp file(s) left by an interrupted run in {run}" in result.output
    assert [p.exists() for p in ours] == [False] * 3
    assert all(p.exists() for p in others)


def test_a_refused_start_leaves_no_folder_behind(dataroot: Path, tmp_path: Path) -> None:
    run = tmp_path / "new"
    code, output = train_cli_run(dataroot, run, "--generator", "resnet_12")
    assert code == 2 and "is not one of" in output
    assert not run.exists()


def test_a_folder_holding_files_of_something_else_is_not_overwritten(dataroot: Path,
                                                                     tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.yaml").write_text("mine: 1\n")
    code, output = train_cli_run(dataroot, folder, "--max-steps", "1")
    assert code == 2 and "is not a cyclegan-train run folder but holds config.yaml" in output
    assert (folder / "config.yaml").read_text() == "mine: 1\n"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"]


# ---- a run folder inside the data ---------------------------------------------------------

def test_a_run_folder_inside_the_data_never_feeds_its_own_files_back(dataroot: Path) -> None:
    run = dataroot / "trainA" / "run"
    originals = sorted((dataroot / "trainA").glob("*.png"))
    code, output = train_cli_run(dataroot, run, "--max-steps", "2", "--sample-every", "1")
    assert code == 0, output
    assert len(list((run / "samples").glob("*.png"))) >= 2  # PNGs inside trainA/ now
    from training.data import Preprocess

    dataset = UnpairedDataset(dataroot, Preprocess(load_size=36, crop_size=32))
    assert dataset.files_a == originals
    code, output = train_cli_run(dataroot, run, "--resume", "--max-steps", "3")
    assert code == 0 and "skipped" not in output, output


def test_the_data_folder_itself_is_not_a_run_folder(dataroot: Path) -> None:
    code, output = train_cli_run(dataroot, dataroot / "trainA", "--max-steps", "1")
    assert code == 2 and "is the data folder trainA/" in output
    assert not (dataroot / "trainA" / MARKER_NAME).exists()


def test_marker_names_the_run_and_checkpoints_carry_it(dataroot: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train_cli_run(dataroot, run, "--max-steps", "1")[0] == 0
    marker = json.loads((run / MARKER_NAME).read_text())
    assert marker["format"] == "cyclegan-toolkit/run" and len(marker["run_id"]) == 16
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["run_id"] == marker["run_id"]
    assert (run / LOCK_NAME).exists()  # kept: an unlocked file is no obstacle
