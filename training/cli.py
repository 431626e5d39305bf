"""``cyclegan-train DATAROOT --out RUN_DIR``: parse options, call :func:`training.trainer.train`."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click

from training.checkpoint import CheckpointError, load_checkpoint
from training.config import (
    RESUMABLE_OPTIONS,
    ConfigError,
    TrainConfig,
    from_dict,
    load_config_file,
)
from training.data import DataError

# command-line option -> config field, for the overrides that are plain values.
_OVERRIDES = {
    "generator": "generator", "ngf": "ngf", "ndf": "ndf", "discriminator": "discriminator",
    "load_size": "load_size", "crop_size": "crop_size", "preprocess": "preprocess",
    "batch_size": "batch_size", "epochs": "n_epochs", "epochs_decay": "n_epochs_decay",
    "max_steps": "max_steps", "lr": "lr", "gan_mode": "gan_mode", "device": "device",
    "seed": "seed", "workers": "num_workers", "sample_every": "sample_every",
    "checkpoint_every": "checkpoint_every", "log_every": "log_every",
}


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    # One line per warning, without the source location: these are messages for users.
    click.echo(f"warning: {message}", err=True)


def build_config(dataroot: Path, config_file: Path | None, overrides: dict[str, Any],
                 resume_state: dict[str, Any] | None) -> TrainConfig:
    """Defaults < checkpoint (when resuming) or config file < command-line overrides."""
    if resume_state is not None:
        base = from_dict(resume_state["config"])
        changed = {k: v for k, v in overrides.items() if getattr(base, k) != v}
        fixed = sorted(set(changed) - RESUMABLE_OPTIONS)
        if fixed:
            raise ConfigError(f"cannot change {', '.join(fixed)} when resuming "
                              "(the checkpoint's networks and data pipeline are fixed)")
        return base.replace(dataroot=str(dataroot), **changed)
    values = load_config_file(config_file) if config_file else {}
    values.update(overrides)
    values["dataroot"] = str(dataroot)
    return from_dict(values)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dataroot", type=click.Path(path_type=Path))
@click.option("--out", "run_dir", required=True, type=click.Path(path_type=Path),
              help="Run folder: checkpoints/, samples/, config.yaml, loss_log.jsonl.")
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
@click.option("--max-steps", type=int, help="Stop after this many steps in total.")
@click.option("--lr", type=float, help="Adam learning rate (2e-4).")
@click.option("--gan-mode", help="lsgan | vanilla")
@click.option("--device", help="auto | cpu | cuda | cuda:N")
@click.option("--seed", type=int, help="Seed for init, data order and augmentation (0).")
@click.option("--workers", type=int, help="DataLoader worker processes (4).")
@click.option("--bf16/--no-bf16", default=None, help="bfloat16 autocast for forward passes.")
@click.option("--log-every", type=int, help="Steps between loss records (100).")
@click.option("--sample-every", type=int, help="Steps between sample grids (500).")
@click.option("--checkpoint-every", type=int, help="Steps between history checkpoints (1000).")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[CKPT]",
              help="Continue a run: from RUN_DIR/checkpoints/latest.pt, or from CKPT.")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still written).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(dataroot: Path, run_dir: Path, config_file: Path | None, resume: str | None,
         no_progress: bool, debug: bool, bf16: bool | None, **options: Any) -> None:
    """Train CycleGAN on DATAROOT/trainA and DATAROOT/trainB (unpaired image folders)."""
    warnings.showwarning = _show_warning
    overrides = {_OVERRIDES[k]: v for k, v in options.items() if v is not None}
    if bf16 is not None:
        overrides["bf16"] = bf16
    try:
        from training.trainer import train  # heavy import after the cheap argument checks

        resume_state = None
        if resume is None and (run_dir / "checkpoints" / "latest.pt").exists():
            raise ConfigError(f"{run_dir}: already holds a run; continue it with --resume or "
                              "choose another --out")
        if resume is not None and config_file is not None:
            raise ConfigError("--config cannot be combined with --resume (the checkpoint "
                              "carries its configuration; override options with flags)")
        if resume is not None:
            path = run_dir / "checkpoints" / "latest.pt" if resume == "latest" else Path(resume)
            resume_state = load_checkpoint(path)
        config = build_config(dataroot, config_file, overrides, resume_state)
        result = train(config, run_dir, resume_state, progress=not no_progress)
    except (ConfigError, DataError, CheckpointError, ValueError, OSError, RuntimeError) as exc:
        if debug:
            raise
        # DataLoader workers re-raise with the worker's whole traceback in the message.
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        click.echo(f"error: {lines[-1] if lines else type(exc).__name__}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted: the last complete checkpoint is intact; continue with --resume",
                   err=True)
        sys.exit(130)
    if result.checkpoint is not None:
        click.echo(f"trained {result.step} steps ({result.epoch} full epoch(s)); "
                   f"checkpoint: {result.checkpoint}")
