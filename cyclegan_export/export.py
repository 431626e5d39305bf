"""Checkpoint -> self-describing, verified ONNX: :func:`export_onnx`.

The model is built in memory, written to a temp file next to the output, verified from that
file the way users will run it, and only then renamed into place: a failed or interrupted
export leaves nothing at the output path. The output is never the source nor a file that is
not an earlier export of ours (see :mod:`cyclegan_export.output`).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from cyclegan_export import quantize
from cyclegan_export.output import (
    OutputError,
    check_output,
    lock_temp,
    remove_stale_temps,
    temp_affixes,
)
from cyclegan_export.source import GeneratorSource, load_generator
from cyclegan_export.verify import (
    Check,
    check_against_pytorch,
    check_onnx_model,
    check_opencv_dnn,
    check_reduced_precision,
    verification_sizes,
)
from cyclegan_export.wrappers import Uint8IO, with_portable_padding
from runtime.metadata import ModelMetadata
from training import __version__
from training.checkpoint import current_umask

DEFAULT_OPSET = 17  # onnxruntime >= 1.14, TensorRT 8.6+, OpenCV DNN 4.8+ all read it
MIN_OPSET = 13
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ExportError(Exception):
    """Export refused or failed verification; the message is one line naming the reason."""


@dataclass
class ExportReport:
    """What was exported and every verification figure."""

    source: Path
    output: Path
    metadata: ModelMetadata
    source_kind: str
    checks: list[Check] = field(default_factory=list)
    size_bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.passed or not c.fatal for c in self.checks)

    def summary(self) -> str:
        meta = self.metadata
        spec = meta.generator
        head = (f"exported {self.source} ({self.source_kind}, {meta.direction}: "
                f"{meta.source_domain} -> {meta.target_domain}) as {meta.architecture} "
                f"ngf {spec['ngf']} to {self.output} ({self.size_bytes / 1e6:.1f} MB, "
                f"{meta.precision}, {meta.io} IO, opset {meta.opset}, {self.seconds:.1f} s)")
        lines = [head] + [f"  {c.line()}" for c in self.checks]
        if not self.checks:
            lines.append("  verification skipped (--no-verify)")
        return "\n".join(lines)


def max_opset() -> int | None:
    """The newest opset this torch's ONNX exporter writes (None: it does not say)."""
    from torch.onnx import _constants  # private, but it is the exporter's own limit

    newest = getattr(_constants, "ONNX_MAX_OPSET", None)
    return newest if isinstance(newest, int) else None


def _to_onnx(net: nn.Module, example: torch.Tensor, opset: int, dynamic_batch: bool,
             dynamic_size: bool, layout: str) -> onnx.ModelProto:
    """Trace ``net`` with the TorchScript exporter into an in-memory ModelProto.

    The TorchScript exporter (``dynamo=False``) is used on purpose: ``torch.export`` (dynamo)
    specialises the U-Net's height and width to the example size (its 1x1 bottleneck adds a
    guard), so dynamic sizes would be lost; checked on torch 2.14.
    """
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_size:
        axes.update({h_axis: "height", w_axis: "width"})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracer notes, not user errors
        torch.onnx.export(
            net, (example,), buffer,  # type: ignore[arg-type]  # file objects work too
            dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": axes, "output": axes} if axes else None,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(model)


def read_calibration_images(folder: Path, limit: int = 64) -> list[np.ndarray]:
    """Up to ``limit`` readable images from ``folder`` as HWC uint8 RGB (unreadable skipped)."""
    import cv2

    if not folder.is_dir():
        raise ExportError(f"{folder}: " + ("is a file; --calibration takes a folder of images"
                                           if folder.exists() else
                                           "calibration folder does not exist"))
    images = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            images.append(np.ascontiguousarray(image[:, :, ::-1]))
        if len(images) >= limit:
            break
    if not images:
        raise ExportError(f"{folder}: no readable calibration images")
    return images


def _check_output_path(source: Path, output: Path) -> None:
    try:
        check_output(source, output)
    except OutputError as exc:
        raise ExportError(str(exc)) from None
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{output.parent}: cannot create output directory "
                          f"({exc.strerror or exc})") from None
    if not os.access(output.parent, os.W_OK):
        raise ExportError(f"{output.parent}: output directory is not writable")


def _parse_static(static_size: tuple[int, int] | None, multiple: int, minimum: int) -> None:
    if static_size is None:
        return
    height, width = static_size
    if min(height, width) < minimum or height % multiple or width % multiple:
        raise ExportError(f"--static {height}x{width}: height and width must be multiples of "
                          f"{multiple} and at least {minimum} for this generator")


def export_onnx(
    source: str | Path,
    output: str | Path,
    *,
    direction: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    static_size: tuple[int, int] | None = None,
    batch: int | None = None,
    io_kind: str = "float",
    color_order: str = "BGR",
    precision: str = "fp32",
    calibration: str | Path | None = None,
    simplify: bool = False,
    portable_pad: bool = False,
    verify: bool = True,
    opencv_check: bool = True,
) -> ExportReport:
    """Export one generator of ``source`` to ``output`` (.onnx) and verify it.

    ``io_kind="float"``: float32 NCHW RGB [-1, 1] in and out. ``io_kind="uint8"``: uint8 NHWC
    in ``color_order`` (BGR: as OpenCV delivers frames) in and out, conversion in the graph.
    ``precision``: ``fp32``, ``fp16`` (IO stays float32/uint8) or ``int8`` (static QDQ,
    calibrated on the images in ``calibration``). Raises :class:`ExportError` (one line) when
    the input is unusable or a verification fails; nothing is left at ``output`` then.
    """
    started, started_wall = time.perf_counter(), time.time()
    source, output = Path(source), Path(output)
    if io_kind not in ("float", "uint8"):
        raise ExportError(f"io must be float or uint8, got {io_kind!r}")
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise ExportError("--precision int8 needs --calibration DIR (images like the inputs)")
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    newest = max_opset()
    if newest is not None and opset > newest:  # else torch prints its whole graph, then fails
        raise ExportError(f"opset {opset} is newer than this torch {torch.__version__} exports; "
                          f"use {MIN_OPSET} to {newest}")
    if batch is not None and batch < 1:
        raise ExportError(f"--batch-size must be >= 1, got {batch}")
    _check_output_path(source, output)
    remove_stale_temps(output, started_wall)
    calibration_images = (read_calibration_images(Path(calibration))
                          if calibration is not None else None)

    src = load_generator(source, direction, overrides)  # CheckpointError on bad input
    spec = src.spec
    _parse_static(static_size, spec.size_multiple, spec.min_size)
    meta = ModelMetadata(
        architecture=spec.name, generator=src.spec_record(), direction=src.direction,
        source_domain=src.source_domain, target_domain=src.target_domain, io=io_kind,
        layout="NHWC" if io_kind == "uint8" else "NCHW",
        value_range=(0.0, 255.0) if io_kind == "uint8" else (-1.0, 1.0),
        color_order=color_order if io_kind == "uint8" else "RGB",
        size_multiple=spec.size_multiple, min_size=spec.min_size, static_size=static_size,
        batch=batch, crop_size=src.crop_size, precision=precision, opset=opset,
        portable_pad=portable_pad,
        source_file=source.name, source_sha256=src.sha256, package_version=__version__,
        extra=dict(src.extra),
    )
    sizes = verification_sizes(meta)
    fp32_model = _build_fp32(src, meta, sizes[0], simplify)
    model = fp32_model
    if precision == "fp16":
        model = quantize.convert_to_fp16(fp32_model)
    elif precision == "int8":
        assert calibration_images is not None
        crop = src.crop_size or max(sizes[0])
        crop = max(spec.size_multiple, crop // spec.size_multiple * spec.size_multiple)
        # a fixed shape takes only itself: its size, and whole batches of its batch
        batches = quantize.calibration_batches(
            calibration_images, meta.static_size or crop, batch_size=meta.batch or 1,
            full_batches=meta.batch is not None)
        if io_kind == "uint8":
            batches = [_float_to_uint8_feed(b, color_order) for b in batches]
        model = quantize.quantize_to_int8(fp32_model, batches)
    _set_metadata(model, meta)

    report = ExportReport(source, output, meta, src.kind)
    prefix, suffix = temp_affixes(output)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=output.parent)
    except OSError as exc:
        raise ExportError(f"{output.parent}: cannot write there ({exc.strerror or exc})") \
            from None
    tmp = Path(tmp_name)
    try:
        lock_temp(fd)  # in use until closed: a concurrent export's cleanup leaves it alone
        try:
            onnx.save_model(model, str(tmp), save_as_external_data=False)
            with open(tmp, "rb") as handle:  # durable before the rename makes it visible
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs are shared
        except OSError as exc:
            raise ExportError(f"{output}: cannot write ({exc.strerror or exc})") from None
        if verify:
            report.checks = _verify(tmp, src, meta, sizes, fp32_model, calibration_images,
                                    opencv_check)
            if not report.ok:
                failed = next(c for c in report.checks if not c.passed and c.fatal)
                raise ExportError(f"{output}: verification failed: {failed.line()}")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)
    report.size_bytes = output.stat().st_size
    report.seconds = time.perf_counter() - started
    return report


def _float_to_uint8_feed(batch: np.ndarray, color_order: str) -> np.ndarray:
    """float NCHW RGB [-1, 1] calibration batch -> the uint8 graph's NHWC input."""
    from runtime.transforms import from_model_output

    return from_model_output(batch, color_order=color_order)


def _build_fp32(src: GeneratorSource, meta: ModelMetadata, size: tuple[int, int],
                simplify: bool) -> onnx.ModelProto:
    net: nn.Module = with_portable_padding(src.net) if meta.portable_pad else src.net
    if meta.io == "uint8":
        net = Uint8IO(net, meta.color_order).eval()
        example = torch.zeros(meta.batch or 1, *size, 3, dtype=torch.uint8)
    else:
        example = torch.zeros(meta.batch or 1, 3, *size)
    model = _to_onnx(net, example, meta.opset, dynamic_batch=meta.batch is None,
                     dynamic_size=meta.static_size is None, layout=meta.layout)
    if simplify:
        model = _simplify(model)
    model.producer_name = "cyclegan-toolkit"
    model.producer_version = __version__
    model.doc_string = (f"CycleGAN generator {meta.architecture} ({meta.direction}: "
                        f"{meta.source_domain} -> {meta.target_domain})")
    return model


def _set_metadata(model: onnx.ModelProto, meta: ModelMetadata) -> None:
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _verify(path: Path, src: GeneratorSource, meta: ModelMetadata,
            sizes: Sequence[tuple[int, int]], fp32_model: onnx.ModelProto,
            calibration_images: list[np.ndarray] | None, opencv_check: bool) -> list[Check]:
    checks = [check_onnx_model(path)]
    if not checks[0].passed:
        return checks
    batch = meta.batch or 2
    fp32_bytes = fp32_model.SerializeToString()
    fp32_meta = replace(meta, precision="fp32")
    checks += check_against_pytorch(fp32_bytes if meta.precision != "fp32" else str(path),
                                    src.net, fp32_meta, sizes, batch, "fp32")
    if meta.precision != "fp32":
        floor = (quantize.FP16_MIN_PSNR_DB if meta.precision == "fp16"
                 else quantize.INT8_MIN_PSNR_DB)
        extra = None
        if (calibration_images is not None and meta.static_size is None
                and meta.batch is None):
            crop = sizes[0][0]
            extra = np.stack([_center_crop(img, crop) for img in calibration_images[:8]])
        checks += check_reduced_precision(path.read_bytes(), fp32_bytes, meta, sizes, batch,
                                          floor, extra)
    elif opencv_check:
        checks.append(check_opencv_dnn(path, meta, sizes[0]))
    return checks


def _center_crop(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    scale = size / min(height, width)
    resized = cv2.resize(image, (max(size, round(width * scale)), max(size, round(height * scale))),
                         interpolation=cv2.INTER_AREA)
    top = (resized.shape[0] - size) // 2
    left = (resized.shape[1] - size) // 2
    return resized[top:top + size, left:left + size]
