"""``cyclegan-export MODEL.pt MODEL.onnx``: parse options, call :func:`export_onnx`, print.

Imports nothing heavy at module level: ``--help`` and ``--version`` work without torch, and an
output that must not be written is refused before torch is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from training import __version__
from training.cli_common import Command, heavy_imports, interrupted, one_line_warnings
from training.graceful_stop import Terminated


def _parse_hw(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise click.BadParameter(f"{value!r}: expected HxW, e.g. 256x256", param_hint="--static")
    return int(parts[0]), int(parts[1])


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime in ns) of ``path``, None when absent: tells whether it was replaced."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _fail(message: str, debug: bool, exc: BaseException) -> NoReturn:
    if debug:
        raise exc
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _output(positional: Path | None, option: Path | None) -> Path:
    """OUTPUT as the second argument or as ``-o/--output``; one of them is required."""
    if positional is not None and option is not None and positional != option:
        raise click.UsageError(f"OUTPUT given twice ({positional}, -o {option}); give one")
    chosen = positional if positional is not None else option
    if chosen is None:
        raise click.UsageError("missing argument OUTPUT (the .onnx file to write)")
    return chosen


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cyclegan-export",
                      message="%(prog)s %(version)s")
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path), required=False)
@click.option("-o", "--output", "output_option", type=click.Path(path_type=Path),
              help="The .onnx file to write (instead of the OUTPUT argument).")
@click.option("--info", "info", is_flag=True,
              help="Print the metadata of SOURCE (an exported .onnx) and exit.")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]),
              help="Which generator of a training checkpoint: G (A->B, the default) or F "
              "(B->A). A distilled student has one, its own. For a generator-only file it only "
              "labels the model.")
@click.option("--generator", "generator_name", help="Override the architecture read from the "
              "file: resnet_9blocks | resnet_6blocks | unet_256 | unet_128.")
@click.option("--ngf", type=int, help="Override the generator width read from the file.")
@click.option("--norm", type=click.Choice(["instance", "batch", "none"]),
              help="Override the normalisation read from the file.")
@click.option("--dropout/--no-dropout", default=None, help="Override dropout (official "
              "--no_dropout). A ResNet's is read from its keys; a U-Net's cannot be read and is "
              "recorded as unknown unless given. Inference is the same either way.")
@click.option("--static", "static", metavar="HxW", help="Fixed height and width.")
@click.option("--batch-size", "batch", type=int, help="Fixed batch size (default: dynamic).")
@click.option("--batch", "old_batch", type=int, hidden=True)  # old spelling of --batch-size
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--io", "io_kind", type=click.Choice(["float", "uint8"]), default="float",
              show_default=True, help="uint8: NHWC uint8 frames in and out, conversion inside "
              "the graph.")
@click.option("--color-order", type=click.Choice(["BGR", "RGB"]), default="BGR",
              show_default=True, help="Channel order of uint8 IO (BGR as OpenCV delivers).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32",
              show_default=True)
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Folder of images for int8 calibration (like the images you will translate).")
@click.option("--simplify", is_flag=True, help="Simplify the graph with onnxslim.")
@click.option("--portable-pad", is_flag=True,
              help="Reflect padding without the reflect Pad operator (TensorRT/CoreML/OpenCV).")
@click.option("--no-verify", is_flag=True, help="Skip the verification against PyTorch.")
@click.option("-q", "--quiet", is_flag=True, help="No report; errors only.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(source: Path, output: Path | None, output_option: Path | None, info: bool,
         static: str | None, quiet: bool, debug: bool, no_verify: bool,
         generator_name: str | None, ngf: int | None, norm: str | None, dropout: bool | None,
         **options: Any) -> None:
    """Export a CycleGAN generator (training checkpoint or official latest_net_G*.pth) to ONNX,
    verified against PyTorch.

    \b
    cyclegan-export runs/h2z/checkpoints/latest.pt h2z.onnx
    cyclegan-export latest_net_G_A.pth horse2zebra.onnx --io uint8 --simplify
    cyclegan-export --info h2z.onnx
    """
    one_line_warnings()
    old_batch = options.pop("old_batch")
    if old_batch is not None:
        if options["batch"] not in (None, old_batch):
            raise click.UsageError("--batch is the old spelling of --batch-size; give one")
        options["batch"] = old_batch
    if info:
        from runtime.metadata import MetadataError, read_metadata

        try:
            click.echo(read_metadata(source).describe())
        except MetadataError as exc:
            _fail(str(exc), debug, exc)
        return
    target = _output(output, output_option)
    static_size = _parse_hw(static)  # a usage error, before any work
    if options.get("calibration") is not None and options.get("precision") != "int8":
        click.echo("warning: --calibration: only int8 exports are calibrated; it changes "
                   "nothing here", err=True)
    if options.get("color_order") != "BGR" and options.get("io_kind") != "uint8":
        click.echo("warning: --color-order: float IO is always RGB; it sets the channel order "
                   "of --io uint8 only", err=True)
    from cyclegan_export.output import OutputError, check_output

    try:
        check_output(source, target)  # before any work: never onto the source or a foreign file
    except OutputError as exc:
        _fail(str(exc), debug, exc)
    with heavy_imports("cyclegan-export", "export", modules=("torch", "onnx")):
        from cyclegan_export.export import ExportError, export_onnx
        from runtime.metadata import MetadataError
        from training.checkpoint import CheckpointError
        from training.networks import GENERATORS

    overrides: dict[str, Any] = {}
    if generator_name is not None:
        if generator_name not in GENERATORS:
            raise click.BadParameter(f"{generator_name!r}: choose from {', '.join(GENERATORS)}",
                                     param_hint="--generator")
        overrides.update(GENERATORS[generator_name])
    for key, value in (("ngf", ngf), ("norm", norm), ("dropout", dropout)):
        if value is not None:
            overrides[key] = value

    before = _identity(target)
    try:
        report = export_onnx(source, target, overrides=overrides, static_size=static_size,
                             verify=not no_verify, **options)
    except (ExportError, CheckpointError, MetadataError) as exc:
        _fail(str(exc), debug, exc)
    except KeyboardInterrupt as exc:
        # the rename is the export's last step: a file now in place is complete and verified
        how, signal_name = (("terminated", "SIGTERM") if isinstance(exc, Terminated)
                            else ("interrupted", "SIGINT"))
        interrupted(f"{how}: nothing was written to {target}" if _identity(target) == before
                    else f"{how} after {target} was written (complete and verified)", signal_name)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback with --debug
        _fail(f"{source}: export failed ({type(exc).__name__}: {exc})".splitlines()[0], debug,
              exc)
    if not quiet:
        click.echo(report.summary())
