"""The output planner: every input's final output path, decided and checked before any work.

Rules (the same for images, animations and videos, for the CLI and the library):

- An output never replaces an input, nor any existing file that is not this tool's own earlier
  output of the same kind (:mod:`runtime.media.manifest` keeps that record). Such a run is
  refused as a whole, up front (:class:`OutputPlanError`), unless ``skip_existing`` leaves the
  existing files alone.
- Names are judged as they will be written: a format OpenCV cannot encode in colour becomes
  ``NAME.EXT.png`` (:func:`runtime.media.sinks.image_output_path`) before collisions are checked,
  so two inputs can never race for one file; the later one is a named failure.
- A single output file takes exactly one input file of the same kind (an image name for an
  image, a video name for a video); a media file name for several inputs is refused rather than
  becoming a folder of that name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runtime.media.manifest import OutputManifest
from runtime.media.sinks import VIDEO_WRITE_EXTENSIONS, image_output_path
from runtime.media.sources import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FileInput,
    InputError,
    animation_frames,
    is_video,
)

KINDS = ("image", "animation", "video")
_SHOWN = 5  # refused paths listed in one message


class OutputPlanError(ValueError):
    """The run cannot start: an output would destroy data or cannot be made (exit 2)."""


@dataclass(frozen=True)
class Job:
    """Translate ``source`` into ``target`` (its final name); ``kind`` as in :data:`KINDS`."""

    source: Path
    target: Path
    kind: str = "image"
    frames: int = 1  # frames in an animation; 1 for a still, the container's count for videos


@dataclass
class OutputPlan:
    jobs: list[Job] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)     # existing outputs left alone
    failed: list[InputError] = field(default_factory=list)
    destination: Path = Path()                            # the output file or folder
    single: bool = False                                  # destination is one output file
    manifests: dict[Path, OutputManifest] = field(default_factory=dict)

    def manifest_for(self, target: Path) -> OutputManifest:
        """The record that ``target``'s write is noted in."""
        return self.manifests[_manifest_folder(self.destination, target, self.single)]

    @property
    def folders(self) -> list[Path]:
        """The folders this plan writes into (where stale temp files are looked for)."""
        return sorted(self.manifests)


def names_a_file(output: Path) -> bool:
    """Does ``-o output`` name one output file (a media extension, not an existing folder)?"""
    return output.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS and not output.is_dir()


def input_kind(path: Path) -> tuple[str, int]:
    """("video" | "animation" | "image", frames) by extension and, for GIF/WebP/PNG, content."""
    if is_video(path):
        return "video", 0
    frames = animation_frames(path)
    return ("animation" if frames > 1 else "image"), frames


def plan_outputs(inputs: list[FileInput], output: Path, *,
                 skip_existing: bool = False) -> OutputPlan:
    """Decide and check every output path; raise :class:`OutputPlanError` to refuse the run.

    ``output``: a file name (one input) or a folder (mirrors the inputs' relative paths).
    """
    single = names_a_file(output)
    plan = OutputPlan(destination=output, single=single)
    if single and len(inputs) != 1:
        raise OutputPlanError(f"{output}: names one output file, but there are {len(inputs)} "
                              "inputs; give a folder for -o")
    if not single and output.is_file():
        raise OutputPlanError(f"{output}: is a file; give a folder for -o (several inputs or "
                              "a folder of them), or a file name with an image or video "
                              "extension for one input")
    folder = (output.parent if single else output).absolute()
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():  # found before any work, not by the first write
                raise OutputPlanError(f"{output}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):  # read-only, or not ours
                raise OutputPlanError(f"{output}: cannot write in {parent} (a read-only file "
                                      "system, or no permission)")
            break
    claimed: dict[str, Path] = {}
    for item in inputs:
        kind, frames = input_kind(item.path)
        target = _target(item, output, kind) if single else output / item.relative
        if kind == "image":
            target = image_output_path(target)
        elif kind == "video" and target.suffix.lower() not in VIDEO_WRITE_EXTENSIONS:
            target = target.with_name(target.name + ".mp4")  # e.g. .webm: not writable yet
        key = os.path.normcase(os.path.abspath(target))
        if key in claimed:
            plan.failed.append(InputError(item.path, f"output {target} already taken by "
                                                     f"{claimed[key]}"))
            continue
        claimed[key] = item.path
        plan.jobs.append(Job(item.path, target, kind, frames))
    _refuse_replacing_inputs(plan.jobs, inputs)
    for job in plan.jobs:
        folder = _manifest_folder(output, job.target, single)
        if folder not in plan.manifests:
            plan.manifests[folder] = OutputManifest(folder)
    _check_existing(plan, skip_existing)
    return plan


def _target(item: FileInput, output: Path, kind: str) -> Path:
    """The single output file for ``item``; its kind must match the input's."""
    suffix = output.suffix.lower()
    if kind == "video":
        if suffix not in VIDEO_EXTENSIONS:
            raise OutputPlanError(f"{output}: an image name, but {item.path} is a video; give a "
                                  f"video name ({', '.join(sorted(VIDEO_WRITE_EXTENSIONS))})")
        if suffix not in VIDEO_WRITE_EXTENSIONS:
            raise OutputPlanError(f"{output}: cannot write {suffix} videos; use one of "
                                  f"{', '.join(sorted(VIDEO_WRITE_EXTENSIONS))}")
        return output
    if suffix in VIDEO_EXTENSIONS:
        raise OutputPlanError(f"{output}: a video name, but {item.path} is an image; give an "
                              "image name (.png, .jpg, ...)")
    if kind == "animation" and suffix not in (".gif", ".webp", ".png"):
        raise OutputPlanError(f"{output}: {item.path} is an animation; give a .gif, .webp or "
                              ".png name to keep its frames")
    if image_output_path(output) != output:
        raise OutputPlanError(f"{output}: cannot write {suffix} colour images here; use .png, "
                              ".jpg, .tif or .webp")
    return output


def _refuse_replacing_inputs(jobs: list[Job], inputs: list[FileInput]) -> None:
    sources = {}
    for item in inputs:
        try:
            stat = item.path.stat()
            sources[(stat.st_dev, stat.st_ino)] = item.path
        except OSError:
            continue
    hits = []
    for job in jobs:
        try:
            stat = job.target.stat()
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) in sources:
            hits.append(job.target)
    if hits:
        raise OutputPlanError(_listing(hits, "would replace the input", "would replace inputs")
                              + "; choose another -o")


def _check_existing(plan: OutputPlan, skip_existing: bool) -> None:
    """Existing targets: ours are replaced (or skipped); anything else refuses the run."""
    foreign: list[Path] = []
    kept: list[Job] = []
    for job in plan.jobs:
        target = job.target
        if not os.path.lexists(target):
            kept.append(job)
            continue
        if skip_existing and target.is_file():
            plan.skipped.append(target)
            continue
        if target.is_dir() or target.is_symlink() or not plan.manifest_for(target).owns(target):
            foreign.append(target)
            continue
        kept.append(job)
    if foreign:
        raise OutputPlanError(_listing(foreign, "exists and was not written by cyclegan-run",
                                       "exist and were not written by cyclegan-run")
                              + "; keep them with --skip-existing or choose another -o")
    plan.jobs = kept


def _manifest_folder(output: Path, target: Path, single: bool) -> Path:
    return target.parent if single else output


def _listing(paths: list[Path], one: str, many: str) -> str:
    if len(paths) == 1:
        return f"{paths[0]}: {one}"
    shown = ", ".join(str(p) for p in paths[:_SHOWN])
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return f"{len(paths)} outputs {many}: {shown}{more}"
