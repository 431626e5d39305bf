"""``cyclegan-train DATAROOT -o RUN_DIR``: parse options, call :func:`training.trainer.train`.

Imports nothing heavy at module level: ``--help`` and ``--version`` work without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from training import __version__
from training.cli_common import (
    Command,
    heavy_imports,
    interrupted_run,
    one_line_warnings,
    resume_checkpoint,
    say_other_data,
    stopped_early,
)
from training.run_dir import RunDirError, RunFolder

if TYPE_CHECKING:
    from training.config import TrainConfig

# command-line option -> config field, for the overrides that are plain values.
_OVERRIDES = {
    "generator": "generator", "ngf": "ngf", "ndf": "ndf", "discriminator": "discriminator",
    "load_size": "load_size", "crop_size": "crop_size", "preprocess": "preprocess",
    "batch_size": "batch_size", "epochs": "n_epochs", "epochs_decay": "n_epochs_decay",
    "max_steps": "max_steps", "lr": "lr", "gan_mode": "gan_mode", "device": "device",
    "seed": "seed", "workers": "num_workers", "sample_every": "sample_every",
    "checkpoint_every": "checkpoint_every", "log_every": "log_every",
    "max_dataset_size": "max_dataset_size",
}


def build_config(dataroot: Path, config_file: Path | None, overrides: dict[str, Any],
                 resume_state: dict[str, Any] | None) -> TrainConfig:
    """Defaults < checkpoint (when resuming) or config file < command-line overrides."""
    from training.config import RESUMABLE_OPTIONS, ConfigError, from_dict, load_config_file

    from_file = load_config_file(config_file) if config_file else {}
    from_file.pop("dataroot", None)  # the command line's DATAROOT is the data
    given = {**from_file, **overrides}
    try:
        if resume_state is not None:
            # The same command again with --resume (a requeued job): the file's and the
            # flags' values may repeat the checkpoint's; only resumable ones may differ.
            base = from_dict(resume_state["config"])
            changed = {k: v for k, v in given.items() if getattr(base, k) != v}
            fixed = sorted(set(changed) - RESUMABLE_OPTIONS)
            if fixed:
                raise ConfigError(f"cannot change {', '.join(fixed)} when resuming (the "
                                  "checkpoint fixes the run's networks, losses, optimiser and "
                                  "data; resumable: epochs, max_steps, device, workers, logging, "
                                  "checkpoints, bf16, channels_last, compile)")
            return base.replace(dataroot=str(dataroot), **changed)
        return from_dict({**given, "dataroot": str(dataroot)})
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        if key in from_file and key not in overrides:  # the file's value: name the file
            raise ConfigError(f"{config_file}: {exc}") from None
        raise


def _run_dir(output: Path | None, out_alias: Path | None) -> Path:
    """``-o/--output``, or its hidden older spelling ``--out``; one of them is required."""
    if output is not None and out_alias is not None and output != out_alias:
        raise click.UsageError(f"-o/--output and --out name different folders ({output}, "
                               f"{out_alias}); give one")
    chosen = output if output is not None else out_alias
    if chosen is None:
        raise click.UsageError("Missing option '-o' / '--output' (the run folder).")
    return chosen


def _check_not_a_data_folder(run_dir: Path, dataroot: Path) -> None:
    # A run folder inside trainA/ is fine (the data scan skips it); one that IS trainA/ would
    # put its samples among the images.
    for domain in ("trainA", "trainB"):
        if (dataroot / domain).exists() and run_dir.resolve() == (dataroot / domain).resolve():
            raise RunDirError(f"{run_dir}: is the data folder {domain}/; choose another -o")


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cyclegan-train",
                      message="%(prog)s %(version)s")
@click.argument("dataroot", type=click.Path(path_type=Path))
@click.option("-o", "--output", "run_dir", type=click.Path(path_type=Path),
              help="Run folder (required): checkpoints/, samples/, config.yaml, loss_log.jsonl.")
@click.option("--out", "run_dir_alias", type=click.Path(path_type=Path), hidden=True)
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML or JSON file of options (see training/config.py); flags override it.")
@click.option("--generator", help="resnet_9blocks | resnet_6blocks | unet_256 | unet_128")
@click.option("--ngf", type=int, help="Generator width (64 in the paper).")
@click.option("--ndf", type=int, help="Discriminator width (64 in the paper).")
@click.option("--discriminator", help="basic (70x70 PatchGAN) | n_layers | pixel")
@click.option("--load-size", type=int, help="Resize to this before cropping (286).")
@click.option("--crop-size", type=int, help="Training crop (256).")
@click.option("--preprocess",
              help="resize_and_crop | crop | scale_width | scale_width_and_crop | none")
@click.option("--batch-size", type=int, help="Images per step per process (1).")
@click.option("--epochs", type=int, help="Epochs at the initial learning rate (100).")
@click.option("--epochs-decay", type=int, help="Epochs of linear learning-rate decay (100).")
@click.option("--max-steps", type=int, help="Stop after this many steps in total (0: no cap, "
              "the epochs decide).")
@click.option("--lr", type=float, help="Adam learning rate (2e-4).")
@click.option("--gan-mode", help="lsgan | vanilla")
@click.option("--device", help="auto | cpu | cuda | cuda:N")
@click.option("--seed", type=int, help="Seed for init, data order and augmentation (0).")
@click.option("--max-dataset-size", type=int, help="Use at most N images per domain (0: all).")
@click.option("--workers", type=int, help="DataLoader worker processes (4; at most the "
              "usable cores).")
@click.option("--bf16/--no-bf16", default=None, help="bfloat16 autocast for forward passes.")
@click.option("--channels-last/--no-channels-last", default=None,
              help="NHWC memory format for networks and batches (CUDA only).")
@click.option("--compile/--no-compile", "compile_nets", default=None,
              help="torch.compile the networks: slow first steps, faster after (GPU runs).")
@click.option("--log-every", type=int, help="Steps between loss records (100).")
@click.option("--sample-every", type=int, help="Steps between sample grids (500).")
@click.option("--checkpoint-every", type=int, help="Steps between history checkpoints (1000).")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[CKPT]",
              help="Continue a run: from RUN_DIR/checkpoints/latest.pt, or from CKPT.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bar and no notes; warnings, errors and the final line stay.")
@click.option("--no-progress", is_flag=True, hidden=True)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(dataroot: Path, run_dir: Path | None, run_dir_alias: Path | None,
         config_file: Path | None, resume: str | None, quiet: bool, no_progress: bool,
         debug: bool, bf16: bool | None, channels_last: bool | None,
         compile_nets: bool | None, **options: Any) -> None:
    """Train CycleGAN on DATAROOT/trainA and DATAROOT/trainB (unpaired image folders)."""
    one_line_warnings()
    output = _run_dir(run_dir, run_dir_alias)
    quiet = quiet or no_progress
    overrides = {_OVERRIDES[k]: v for k, v in options.items() if v is not None}
    for name, flag in (("bf16", bf16), ("channels_last", channels_last),
                       ("compile", compile_nets)):
        if flag is not None:
            overrides[name] = flag
    with heavy_imports("cyclegan-train", "train"):
        from training.checkpoint import CheckpointError, load_checkpoint
        from training.config import ConfigError
        from training.data import DataError
        from training.distributed import is_main_launch
        from training.trainer import train

    folder: RunFolder | None = None
    try:
        _check_not_a_data_folder(output, dataroot)
        resume_path, fresh = resume_checkpoint(output, resume)  # the folder as it was found
        if is_main_launch():  # under torchrun, rank 0 alone locks and writes the folder
            folder = RunFolder.open(output)  # refuses a folder another trainer holds
            if folder.removed_temp_files and not quiet:
                click.echo(f"removed {len(folder.removed_temp_files)} temp file(s) left by an "
                           f"interrupted run in {output}", err=True)
        resume_state = None
        if fresh:  # a decision taken for the user: shown even with --quiet
            click.echo(f"note: {fresh}", err=True)
        if resume_path is not None:
            resume_state = load_checkpoint(resume_path)
            if resume_state.get("kind") == "distill":
                raise CheckpointError(f"{resume_path}: is a distilled student's checkpoint; "
                                      "continue it with cyclegan-distill --resume")
        if folder is not None:
            note = folder.claim(resume_state, resume_path)
            if note:  # a decision taken for the user: shown even with --quiet
                click.echo(note, err=True)
        config = build_config(dataroot, config_file, overrides, resume_state)
        say_other_data(resume_state, dataroot)
        try:
            result = train(config, folder or output, resume_state, progress=not quiet)
        except KeyboardInterrupt as exc:
            interrupted_run(output / "checkpoints" / "latest.pt", exc)
    except (RunDirError, ConfigError, DataError, CheckpointError, ValueError, OSError,
            RuntimeError) as exc:
        if debug:
            raise
        # DataLoader workers re-raise with the worker's whole traceback in the message.
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        click.echo(f"error: {lines[-1] if lines else type(exc).__name__}", err=True)
        sys.exit(2)
    finally:
        if folder is not None:
            folder.close()
    start = int(resume_state["step"]) if resume_state is not None else 0
    if result.stopped_by:  # a first Ctrl-C/SIGTERM: the step finished, then saved
        stopped_early(result, start)
    if result.checkpoint is not None and start and result.step == start:
        click.echo(f"already at step {start} ({result.epoch} full epoch(s)), where this run "
                   f"ends: nothing to train, nothing rewritten; checkpoint: {result.checkpoint}")
    elif result.checkpoint is not None:  # where the result went: shown even with --quiet
        resumed = f", {result.step - start} in this run" if start else ""
        click.echo(f"trained to step {result.step}{resumed} ({result.epoch} full epoch(s)); "
                   f"checkpoint: {result.checkpoint}")
