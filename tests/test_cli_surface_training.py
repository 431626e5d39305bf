"""What a new user meets first in ``cyclegan-train`` and ``cyclegan-export``: help, version,
the runtime-only install (no torch), Ctrl-C, and the shared option names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import signal_inside_import

from training import __version__
from training.checkpoint import load_checkpoint
from training.cli import main as train_cli

COMMANDS = {"cyclegan-train": "training.cli", "cyclegan-export": "cyclegan_export.cli"}
HEAVY = ("torch", "torchvision", "onnx", "cv2", "onnxruntime", "yaml", "PIL")


def run_command(command: str, args: list[str], block: tuple[str, ...] = (),
                interrupt: tuple[str, ...] = ()) -> tuple[int, str, str, dict]:
    """Run a command's ``main`` in a fresh interpreter in which importing a module of ``block``
    fails as if it were not installed, and importing one of ``interrupt`` is hit by Ctrl-C.

    Returns (exit code, stdout, stderr, {"seconds": ..., "heavy": [heavy modules imported]}).
    """
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys, time
        BLOCK, INTERRUPT = {list(block)!r}, {list(interrupt)!r}

        class Gate(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                root = name.split(".")[0]
                if root in INTERRUPT:
                    raise KeyboardInterrupt
                if root in BLOCK:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Gate())
        started = time.perf_counter()
        code = 0
        try:
            from {COMMANDS[command]} import main
            main({args!r}, prog_name={command!r})
        except SystemExit as exc:
            code = exc.code
        seconds = time.perf_counter() - started
        heavy = [m for m in {list(HEAVY)!r} if m in sys.modules]
        print("@@" + json.dumps({{"seconds": seconds, "heavy": heavy}}))
        sys.exit(code)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    out, _, trailer = done.stdout.rpartition("@@")
    return done.returncode, out, done.stderr, json.loads(trailer) if trailer else {}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_and_version_import_nothing_heavy(command: str) -> None:
    code, out, err, info = run_command(command, ["--help"])
    assert code == 0 and f"Usage: {command}" in out, err
    assert info["heavy"] == []
    print(f"{command} --help: {info['seconds'] * 1000:.0f} ms in-process")  # -s shows it
    code, out, err, info = run_command(command, ["--version"])
    assert (code, out, info["heavy"]) == (0, f"{command} {__version__}\n", [])


@pytest.mark.parametrize(("command", "blocked", "needs", "extra"), [
    ("cyclegan-train", ("torch",), "PyTorch", "train"),
    ("cyclegan-export", ("torch",), "PyTorch", "export"),
    ("cyclegan-export", ("onnx",), "onnx", "export"),
    ("cyclegan-export", ("torch", "onnx"), "PyTorch and onnx", "export"),  # runtime-only
])
def test_missing_extra_is_one_line_with_the_install_command(tmp_path: Path, command: str,
                                                            blocked: tuple[str, ...], needs: str,
                                                            extra: str) -> None:
    args = ([str(tmp_path / "data"), "-o", str(tmp_path / "run")] if command == "cyclegan-train"
            else [str(tmp_path / "c.pt"), str(tmp_path / "m.onnx")])
    code, out, err, _ = run_command(command, args, block=blocked)
    assert code == 2
    assert err == f'error: {command} needs {needs}: pip install "cyclegan-toolkit[{extra}]"\n'
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_ctrl_c_during_the_heavy_imports_is_one_line_and_exit_130(tmp_path: Path,
                                                                  command: str) -> None:
    args = ([str(tmp_path / "data"), "-o", str(tmp_path / "run")] if command == "cyclegan-train"
            else [str(tmp_path / "c.pt"), str(tmp_path / "m.onnx")])
    code, out, err, _ = run_command(command, args, interrupt=("torch",))
    assert (code, err.strip()) == (130, "interrupted")
    assert "Traceback" not in err and "Aborted" not in err


@pytest.mark.parametrize(("signal_name", "code", "said"), [("SIGINT", 130, "interrupted"),
                                                           ("SIGTERM", 143, "terminated")])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_signal_that_surfaces_as_an_import_error_is_still_one_line(
        tmp_path: Path, command: str, signal_name: str, code: int, said: str) -> None:
    """A signal inside an extension module's import can come out as another error (as
    onnxruntime's does: "ImportError: initialization failed"); SIGTERM (docker stop) is
    handled as Ctrl-C is, with 143."""
    args = ([str(tmp_path / "data"), "-o", str(tmp_path / "run")] if command == "cyclegan-train"
            else [str(tmp_path / "c.pt"), str(tmp_path / "m.onnx")])
    script = signal_inside_import("torch", signal_name, COMMANDS[command],
                                  f"main({args!r}, prog_name={command!r})")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stderr.strip()) == (code, said), done.stderr


def test_export_refuses_to_overwrite_its_source_before_importing_torch(tmp_path: Path) -> None:
    source = tmp_path / "c.pt"
    torch.save({"step": 1}, source)
    before = source.read_bytes()
    code, out, err, info = run_command("cyclegan-export", [str(source), str(source)],
                                       block=("torch",))
    assert code == 2 and err == (f"error: {source}: is the file being exported ({source}); "
                                 "writing the ONNX model there would destroy it: choose another "
                                 "output name\n")
    assert source.read_bytes() == before and "torch" not in info["heavy"]


def test_ctrl_c_during_training_says_what_there_is_to_resume(
        dataroot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # an immediate stop (the second Ctrl-C): the message depends on a checkpoint being there
    import training.trainer

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(training.trainer, "train", interrupted)
    result = CliRunner().invoke(train_cli, [str(dataroot), "-o", str(tmp_path / "run")])
    assert result.exit_code == 130
    assert result.output == ("interrupted before the first checkpoint: nothing to resume; "
                             "start the run again\n")
    from training.cli_common import interrupted_run

    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    latest.parent.mkdir(parents=True)
    latest.write_bytes(b"a checkpoint")
    with pytest.raises(SystemExit) as info:
        interrupted_run(latest, KeyboardInterrupt())
    assert info.value.code == 130
    assert capsys.readouterr().err == ("interrupted: the last complete checkpoint is intact; "
                                       "continue with --resume\n")


def test_python_m_cyclegan_export_is_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "cyclegan_export", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"cyclegan-export {__version__}\n")


# ---- one vocabulary across the commands ---------------------------------------------------

def test_train_speaks_output_and_quiet_and_keeps_the_old_spellings_hidden(
        dataroot: Path, tmp_path: Path) -> None:
    help_text = CliRunner().invoke(train_cli, ["--help"]).output
    for shown in ("-o, --output", "-q, --quiet", "--batch-size", "--version", "--debug"):
        assert shown in help_text
    assert "--out " not in help_text and "--no-progress" not in help_text
    tiny = ["--generator", "resnet_6blocks", "--ngf", "8", "--ndf", "8", "--load-size", "36",
            "--crop-size", "32", "--workers", "0", "--sample-every", "0", "--max-steps", "1"]
    for spelling in (["-o", str(tmp_path / "new"), "-q"],
                     ["--out", str(tmp_path / "old"), "--no-progress"]):
        result = CliRunner().invoke(train_cli, [str(dataroot), *spelling, *tiny])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("trained to step 1 ")  # no progress bar: quiet
    assert load_checkpoint(tmp_path / "new" / "checkpoints" / "latest.pt")["step"] == 1
    assert load_checkpoint(tmp_path / "old" / "checkpoints" / "latest.pt")["step"] == 1
    both = CliRunner().invoke(train_cli, [str(dataroot), "-o", "a", "--out", "b"])
    assert both.exit_code == 2 and "name different folders" in both.output
    neither = CliRunner().invoke(train_cli, [str(dataroot)])
    assert neither.exit_code == 2 and "Missing option '-o' / '--output'" in neither.output


def test_export_speaks_output_quiet_and_batch_size(tmp_path: Path) -> None:
    from test_export import official_file

    from cyclegan_export.cli import main as export_cli
    from runtime.metadata import read_metadata

    help_text = CliRunner().invoke(export_cli, ["--help"]).output
    for shown in ("-o, --output", "-q, --quiet", "--batch-size", "--version", "--debug"):
        assert shown in help_text
    path, _ = official_file(tmp_path, "resnet_6blocks")
    out = tmp_path / "g.onnx"
    result = CliRunner().invoke(export_cli, [str(path), "-o", str(out), "-q", "--no-verify",
                                             "--batch-size", "2"])
    assert (result.exit_code, result.output) == (0, "")
    assert read_metadata(out).batch == 2
    loud = CliRunner().invoke(export_cli, [str(path), str(out), "--no-verify"])
    assert loud.exit_code == 0 and loud.output.startswith(f"exported {path}")
    clash = CliRunner().invoke(export_cli, [str(path), str(out), "-o", str(tmp_path / "x")])
    assert clash.exit_code == 2 and "OUTPUT given twice" in clash.output


def test_the_license_and_the_typed_markers_ship() -> None:
    import configparser

    root = Path(__file__).resolve().parents[1]
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    assert setup["metadata"]["license"] == "BSD-3-Clause"
    license_text = (root / "LICENSE").read_text()
    assert license_text.startswith("BSD 3-Clause License") and "cyclegan-toolkit authors" in \
        license_text
    for package in ("training", "cyclegan_export", "runtime"):
        assert (root / package / "py.typed").is_file()
        assert "py.typed" in setup["options.package_data"][package].split()


@pytest.mark.parametrize(("rank", "shown"), [("0", 2), ("1", 1)])
def test_under_torchrun_the_scan_warning_is_the_first_processs(rank: str, shown: int) -> None:
    script = textwrap.dedent("""
        import warnings
        from training.cli_common import one_line_warnings
        one_line_warnings()
        warnings.warn("data/trainA: skipped 3 file(s): a.txt, b.txt, c.txt", UserWarning)
        warnings.warn("data/trainA/x.png: skipped, cannot decode (truncated)", UserWarning)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RANK": rank})
    lines = done.stderr.strip().splitlines()
    assert len(lines) == shown and lines[-1].endswith("cannot decode (truncated)")


def test_a_loader_workers_warning_starts_a_line_of_its_own() -> None:
    """A DataLoader worker's warning (an image that fails to decode mid-run) would otherwise
    land at the end of the main process's progress-bar line."""
    script = textwrap.dedent("""
        import warnings
        import torch
        from torch.utils.data import DataLoader, Dataset
        from training.cli_common import one_line_warnings

        class Data(Dataset):
            def __len__(self):
                return 1

            def __getitem__(self, index):
                warnings.warn("x.png: skipped, cannot decode (truncated)", UserWarning)
                return torch.zeros(1)

        if __name__ == "__main__":
            one_line_warnings()
            warnings.warn("in the main process", UserWarning)
            list(DataLoader(Data(), num_workers=1))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("warning: in the main process\n"), done.stderr
    assert "\n\nwarning: x.png: skipped, cannot decode (truncated)" in done.stderr, done.stderr
