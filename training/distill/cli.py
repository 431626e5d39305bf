"""``cyclegan-distill TEACHER DATAROOT -o RUN_DIR``: parse options, call
:func:`training.distill.trainer.distill`.

Imports nothing heavy at module level: ``--help`` (which lists the students and their cost)
and ``--version`` work without torch.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

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
from training.distill.students import DEFAULT_STUDENT, STUDENTS, students_help

# command-line option -> setting, for the overrides that are plain values.
_OVERRIDES = {
    "student": "student", "ngf": "ngf", "direction": "direction", "target": "target",
    "load_size": "load_size", "crop_size": "crop_size", "batch_size": "batch_size",
    "steps": "steps", "max_steps": "max_steps", "lr": "lr", "lambda_l1": "lambda_l1",
    "lambda_feat": "lambda_feat",
    "lambda_gan": "lambda_gan", "cache_teacher": "cache_teacher", "seed": "seed",
    "workers": "num_workers", "device": "device", "log_every": "log_every",
    "sample_every": "sample_every", "checkpoint_every": "checkpoint_every",
}

_HELP = f"""Distil TEACHER (a training checkpoint or a generator file, official pretrained files
included) into a small, fast student, on images of the teacher's input domain in DATAROOT (a
folder, or a data set with trainA/ and trainB/).

\b
cyclegan-distill runs/h2z/checkpoints/latest.pt datasets/h2z -o runs/h2z-student
cyclegan-distill horse2zebra.pth horses/ -o runs/student --student mobile-8
cyclegan-export runs/h2z-student/checkpoints/latest.pt student.onnx

\b
Students (--student, default {DEFAULT_STUDENT}; --ngf changes the width):
{students_help()}
"""


@click.command(cls=Command, help=_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cyclegan-distill",
                      message="%(prog)s %(version)s")
@click.argument("teacher", type=click.Path(path_type=Path))
@click.argument("dataroot", type=click.Path(path_type=Path))
@click.option("-o", "--output", "run_dir", type=click.Path(path_type=Path),
              help="Run folder: checkpoints/, samples/, config.yaml, loss_log.jsonl.")
@click.option("--out", "run_dir_alias", type=click.Path(path_type=Path), hidden=True)
@click.option("--student", type=click.Choice(list(STUDENTS)), help="Student (see above).")
@click.option("--ngf", type=int, help="Student width (overrides the student's own).")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]),
              help="Which generator of a training checkpoint teaches (AtoB).")
@click.option("--target", help="Target-domain images for --lambda-gan (default: the other "
              "domain of DATAROOT).")
@click.option("--load-size", type=int, help="Resize to this before cropping (143).")
@click.option("--crop-size", type=int, help="Training crop (128).")
@click.option("--batch-size", type=int, help="Crops per step per process (4).")
@click.option("--steps", type=int, help="Optimisation steps in total (3000): the schedule.")
@click.option("--max-steps", type=int, help="Stop after this many steps (resume later; 0: all "
              "--steps).")
@click.option("--lr", type=float, help="Adam learning rate (2e-4).")
@click.option("--lambda-l1", type=float, help="Weight of L1 to the teacher's output (10).")
@click.option("--lambda-feat", type=float, help="Weight of feature distillation (1).")
@click.option("--lambda-gan", type=float, help="Weight of the LSGAN term (0: off).")
@click.option("--cache-teacher", type=int,
              help="Cache the teacher's outputs for this many fixed crops (0: off).")
@click.option("--seed", type=int, help="Seed for init, data order and augmentation (0).")
@click.option("--workers", type=int, help="DataLoader worker processes (2; at most the usable "
              "cores).")
@click.option("--device", help="auto | cpu | cuda | cuda:N")
@click.option("--bf16/--no-bf16", default=None, help="bfloat16 autocast for forward passes.")
@click.option("--log-every", type=int, help="Steps between loss records (50).")
@click.option("--sample-every", type=int, help="Steps between sample grids (500).")
@click.option("--checkpoint-every", type=int, help="Steps between history checkpoints (1000).")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[CKPT]",
              help="Continue a run: from RUN_DIR/checkpoints/latest.pt, or from CKPT.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar nor teacher line (logs "
              "still written); notes, errors and the final line stay.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(teacher: Path, dataroot: Path, run_dir: Path | None, run_dir_alias: Path | None,
         resume: str | None, quiet: bool, debug: bool, bf16: bool | None,
         **options: Any) -> None:
    one_line_warnings()
    run_dir = run_dir or run_dir_alias
    if run_dir is None:
        raise click.UsageError("give the run folder with -o/--output")
    overrides = {_OVERRIDES[k]: v for k, v in options.items() if v is not None}
    if bf16 is not None:
        overrides["bf16"] = bf16
    with heavy_imports("cyclegan-distill", "train", ("torch", "torchvision", "yaml", "tqdm")):
        from training.checkpoint import CheckpointError, load_checkpoint
        from training.data import DataError
        from training.distill.config import RESUMABLE, DistillConfigError, from_dict
        from training.distill.teacher import load_teacher
        from training.distill.trainer import CHECKPOINT_KIND, distill
        from training.run_dir import RunDirError
    try:
        resume_state = None
        resume_path, fresh = resume_checkpoint(run_dir, resume)
        if fresh:  # a decision taken for the user: shown even with --quiet
            click.echo(f"note: {fresh}", err=True)
        if resume_path is not None:
            resume_state = load_checkpoint(resume_path)
            if resume_state.get("kind") != CHECKPOINT_KIND:
                raise CheckpointError(f"{resume_path}: is not a distillation checkpoint "
                                      "(continue a CycleGAN run with cyclegan-train --resume)")
            # max_steps belongs to one invocation (stop early, resume later), never to the run
            saved = {k: v for k, v in resume_state["config"].items()
                     if k not in ("domain_a", "domain_b", "max_steps")}
            fixed = sorted(k for k, v in overrides.items()
                           if k not in RESUMABLE and saved.get(k) != v)
            if fixed:
                raise DistillConfigError(f"cannot change {', '.join(fixed)} when resuming (the "
                                         "student and its data are fixed)")
            config = from_dict({**saved, **overrides, "teacher": str(teacher),
                                "dataroot": str(dataroot)})
            say_other_data(resume_state, dataroot)
        else:
            config = from_dict({**overrides, "teacher": str(teacher), "dataroot": str(dataroot)})
        data = Path(dataroot)
        if not data.is_dir():  # before the teacher loads (seconds) and says so
            raise DataError(f"{data}: {'is a file' if data.exists() else 'no such folder'}; "
                            "give a folder of the teacher's input images, or one holding "
                            "trainA/ and trainB/")
        if "target" in overrides and config.lambda_gan == 0:  # a resumed run's: as it was
            raise DistillConfigError("--target gives the adversarial term its images: add "
                                     "--lambda-gan (e.g. 1), or leave --target out")
        if config.target and not Path(config.target).is_dir():
            raise DataError(f"{config.target}: no such folder (--target: a folder of the "
                            "target domain's images)")
        # The direction given (or the resumed run's); a distilled student teaches its own.
        given = overrides.get("direction") or (resume_state["config"].get("direction")
                                               if resume_state is not None else None)
        try:
            loaded = load_teacher(teacher, given)
        except CheckpointError:
            if "direction" in overrides or resume_state is None:
                raise
            # Not the user's --direction but the resumed run's own: an older run distilled
            # from a student teacher in a direction the student does not translate.
            own = load_teacher(teacher).direction  # raises again if the file itself is bad
            raise DistillConfigError(f"{resume_path}: this run distils in direction {given}, "
                                     f"but its teacher, a distilled student, translates {own} "
                                     "only; start a new run") from None
        config = config.replace(direction=loaded.direction)  # the data's domain follows it
        if resume_state is not None and resume_state["teacher"]["sha256"] != loaded.sha256:
            recorded = resume_state["teacher"]
            if Path(str(recorded["path"])).resolve() == Path(teacher).resolve():
                raise DistillConfigError(
                    f"{teacher}: changed since this run started (sha256 "
                    f"{str(recorded['sha256'])[:12]}... then, {loaded.sha256[:12]}... now); "
                    "resume with the teacher as it was, or start a new run")
            raise DistillConfigError(f"{teacher}: is not the teacher this run was distilled "
                                     f"from ({recorded['path']})")
        if not quiet:
            click.echo(f"teacher: {loaded.description}", err=True)
        result = distill(config, run_dir, loaded, resume_state, resume_path,
                         progress=not quiet)
    except (DistillConfigError, DataError, CheckpointError, RunDirError, ValueError,
            OSError, RuntimeError) as exc:
        if debug:
            raise
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        message = lines[-1] if lines else type(exc).__name__
        if isinstance(exc, DistillConfigError):
            message = _as_flags(message)
        click.echo(f"error: {message}", err=True)
        sys.exit(2)
    except KeyboardInterrupt as exc:
        interrupted_run(run_dir / "checkpoints" / "latest.pt", exc)
    for note in result.notes:  # decisions taken for the user: shown even with --quiet
        click.echo(f"note: {note}", err=True)
    if result.stopped_by:  # a first Ctrl-C/SIGTERM: the step finished, then saved
        stopped_early(result, int(resume_state["step"]) if resume_state is not None else 0)
    start = int(resume_state["step"]) if resume_state is not None else 0
    ends = config.steps
    if result.checkpoint is not None and start and result.step == start:
        where = ("where this run ends" if start >= ends
                 else f"where --max-steps stops it (the run goes on to {ends})")
        click.echo(f"already at step {start}, {where}: nothing to distil, nothing rewritten; "
                   f"checkpoint: {result.checkpoint}")
    elif result.checkpoint is not None:
        resumed = f" ({result.step - start} in this run)" if start else ""
        unfinished = (f"; the run goes on to step {ends}: continue with --resume"
                      if result.step < ends else "")
        click.echo(f"distilled to step {result.step}{resumed}; checkpoint: "
                   f"{result.checkpoint}{unfinished}")


def _as_flags(message: str) -> str:
    """A setting's name in ``message`` (``batch_size must be >= 1``) as the flag that sets it
    (``--batch-size``): the command's own vocabulary. Only names with an underscore: one-word
    names (steps, student, lr) read as the words they are."""
    for option, setting in _OVERRIDES.items():
        if "_" not in setting:
            continue
        message = re.sub(rf"(?<![\w-]){setting}(?![\w-])", f"--{option.replace('_', '-')}",
                         message)
    return message
