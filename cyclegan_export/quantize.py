"""Smaller variants of an exported generator: float16 weights and int8 static QDQ quantization.

Both functions take the float32 model the exporter writes (one input, one output, float32 NCHW
RGB in [-1, 1], dynamic batch/height/width) and return a model with the same interface, so the
runtime serves them unchanged. Quality is PSNR against the float32 model on the same inputs
(:func:`psnr`); the floors below are what the tests and the exporter's verification enforce.

Measured with onnxruntime's CPU provider on generators fitted to colour transforms, natural-looking
held-out images (int8 calibrated on 8 other images); times for one 256x256 image on 2 x86 cores:

=======================  =======  =======  ==================================
generator                float16  int8     256x256, fp32 / fp16 / int8
=======================  =======  =======  ==================================
resnet_6blocks, ngf 8    94.5 dB  63.6 dB  33 / 32 / 24 ms
resnet_9blocks, ngf 32   96.5 dB  53.4 dB  281 / 275 / 193 ms
unet_128, ngf 8          95.4 dB  67.7 dB  6.8 / 7.7 / 6.6 ms
unet_128, ngf 16         92.9 dB  63.1 dB  12 / 13 / 11 ms
=======================  =======  =======  ==================================

The float16 figures on this provider reflect rounded weights only (see :func:`convert_to_fp16`);
running the ngf 8 models entirely in float16 in PyTorch gave about 83 dB.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

from cyclegan_export.output import in_use, lock_temp
from runtime.graph_edit import FP16_KEEP_FLOAT_NAMES
from runtime.graph_edit import convert_to_fp16 as convert_to_fp16  # noqa: F401 - this module's API
from runtime.media.sinks import process_alive
from runtime.metrics import psnr  # noqa: F401 - part of this module's API

# Floors the tests enforce, as PSNR in dB against the float32 model on natural-looking images.
FP16_MIN_PSNR_DB = 45.0
INT8_MIN_PSNR_DB = 30.0

# Ops left in float32 by convert_to_fp16 (the runtime's conversion, shared with the GPU's
# default precision): the converter's own block list and InstanceNormalization (see
# runtime.graph_edit for why).
FP16_KEEP_FLOAT_OPS: tuple[str, ...] = (*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FLOAT_NAMES)

# Op types quantize_to_int8 quantizes: Conv only, which holds nearly all the arithmetic and runs as
# QLinearConv on onnxruntime's CPU provider. The rest stays float32:
# - ConvTranspose has no integer CPU kernel (it runs as Dequantize -> float ConvTranspose ->
#   Quantize), and its uint8 output is what hurts most: the InstanceNormalization after it divides
#   each channel by that channel's own spread, magnifying the rounding error of channels that
#   cover a sliver of the tensor-wide quantization range. Measured (fitted generators,
#   held-out images, first/last convolution float), Conv+ConvTranspose -> Conv only:
#   resnet_6blocks ngf 8: 47.0 -> 62.8 dB, resnet_9blocks ngf 32: 30.9 -> 54.7 dB,
#   unet_128 ngf 8: 64.5 -> 68.0 dB, unet_128 ngf 16: 54.8 -> 63.7 dB; and at 256x256 on
#   2 x86 cores the ngf 32 ResNet ran in 163 ms rather than 167 ms (float32: 226 ms).
# - InstanceNormalization, Add, Concat, Pad and Tanh have no integer CPU kernels either:
#   quantizing them only wraps float ops in Dequantize/Quantize pairs, and cost 0.6-5.6 dB.
INT8_OP_TYPES: tuple[str, ...] = ("Conv",)

_CONV_TYPES = frozenset({"Conv", "ConvTranspose"})


def calibration_batches(
    images: Sequence[np.ndarray], size: int | tuple[int, int], *, batch_size: int = 1,
    full_batches: bool = False,
) -> list[np.ndarray]:
    """Turn images into calibration batches for :func:`quantize_to_int8`.

    Each image is resized so that it covers ``size`` (area filter when shrinking, bicubic
    when enlarging), centre-cropped to it and scaled to [-1, 1].

    Args:
        images: ``(H, W, 3)`` uint8 RGB images of any sizes.
        size: ``S`` (square crops) or ``(H, W)``: a multiple of the generator's size multiple
            (4 for ResNet, 128 or 256 for U-Net) and a size like the one served; a model
            exported with a fixed size takes exactly that.
        batch_size: images per batch; the last batch may be smaller, unless ``full_batches``.
        full_batches: every batch holds ``batch_size`` images (a model exported with a fixed
            batch takes no other), the images repeated from the first as needed.

    Returns:
        float32 arrays of shape ``(B, 3, H, W)``, RGB, in [-1, 1]: ``ceil(len(images) /
        batch_size)`` of them.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if height <= 0 or width <= 0 or batch_size <= 0:
        raise ValueError(f"size and batch_size must be positive, got {size} and {batch_size}")
    crops = []
    for index, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"image {index}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
            )
        scale = max(height / image.shape[0], width / image.shape[1])
        # max(): rounding must not leave either side a pixel short of the crop.
        new_width = max(width, round(image.shape[1] * scale))
        new_height = max(height, round(image.shape[0] * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
        top, left = (new_height - height) // 2, (new_width - width) // 2
        crops.append(resized[top : top + height, left : left + width])
    if not crops:
        return []
    if full_batches:
        crops = [crops[i % len(crops)] for i in range(-(-len(crops) // batch_size) * batch_size)]
    batch = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
    return [batch[start : start + batch_size] for start in range(0, len(batch), batch_size)]


class _BatchReader(CalibrationDataReader):
    """Feeds calibration batches to onnxruntime's calibrator, one session run per batch."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        # As given, not cast: a model with uint8 IO (pre-processing in the graph) takes uint8.
        self._feeds = iter([{input_name: np.ascontiguousarray(b)} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def default_keep_float(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes :func:`quantize_to_int8` keeps in float unless told otherwise.

    The first and the last convolution (Conv or ConvTranspose, in graph order, which ONNX
    requires to be topological): the first sees the raw image, the last writes the values that
    Tanh squashes into the output, so their rounding error lands directly in the picture, and
    with 3 input or 3 output channels they cost little to keep. Quantizing only the last one cost
    the ngf 32 ResNet 16 dB by itself (38.4 dB), more than any other layer. Measured (fitted
    generators, held-out images, every other Conv int8), all convolutions -> first/last float:
    resnet_6blocks ngf 8: 56.0 -> 62.8 dB, resnet_9blocks ngf 32: 38.2 -> 54.7 dB,
    unet_128 ngf 8: 45.7 -> 68.0 dB, unet_128 ngf 16: 52.0 -> 63.7 dB.
    """
    convs = [node.name for node in model.graph.node if node.op_type in _CONV_TYPES]
    return sorted({convs[0], convs[-1]}) if convs else []


WORK_PREFIX = "cyclegan-int8-"  # quantize_to_int8's work folder: PREFIX<pid>-<random>
STALE_WORK_AGE_S = 3600  # another one whose process is gone is removed after this long
_WORK_LOCK = ".lock"  # held (flock) by the export that works in the folder


def remove_stale_work_folders(root: str | Path | None = None) -> list[Path]:
    """Remove the work folders (full model copies) of int8 exports killed outright (SIGKILL,
    power loss), which ``TemporaryDirectory`` could not clean: those untouched for
    :data:`STALE_WORK_AGE_S`, whose process is gone (folders of versions that named no
    process: after a day) and whose lock nobody holds (a live export in another PID
    namespace holds it however old its folder). Returns what it removed."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{WORK_PREFIX}*"):
        rest = folder.name[len(WORK_PREFIX):]
        pid = rest.split("-", 1)[0] if "-" in rest else None  # None: an older version's name
        if (pid is not None and not pid.isdigit()) or pid == str(os.getpid()):
            continue
        try:
            age = time.time() - folder.stat().st_mtime
            if not folder.is_dir() or age < (STALE_WORK_AGE_S if pid else 86400):
                continue
            lock = folder / _WORK_LOCK
            if (pid and process_alive(int(pid))) or (lock.is_file() and in_use(lock)):
                continue
            shutil.rmtree(folder)
        except OSError:
            continue  # another user's, or gone meanwhile: not ours to worry about
        removed.append(folder)
    return removed


@contextmanager
def _holding_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s work lock while the export works in it."""
    with open(folder / _WORK_LOCK, "wb") as handle:
        lock_temp(handle.fileno())
        yield


def quantize_to_int8(
    model: onnx.ModelProto,
    calibration: Sequence[np.ndarray],
    *,
    per_channel: bool = True,
    keep_float: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """Static int8 quantization in QDQ format, calibrated on sample inputs.

    Conv weights become int8 (symmetric, per output channel by default) and Conv input and output
    activations uint8 (asymmetric, ranges from MinMax calibration): the pairing onnxruntime
    recommends for x86, which its CPU provider runs as QLinearConv. Everything else stays float32
    (see :data:`INT8_OP_TYPES`), as do the graph input and output.

    Args:
        model: float32 generator as exported (``input``/``output`` float32 NCHW in [-1, 1]).
        calibration: batches of representative inputs, each float32 ``(N, 3, H, W)`` RGB in
            [-1, 1] (see :func:`calibration_batches`); a few dozen natural images suffice.
        per_channel: one weight scale per output channel rather than one per tensor; never less
            accurate, and the same speed on the CPU provider.
        keep_float: names of nodes to leave in float; ``None`` means :func:`default_keep_float`
            (first and last convolution), an empty sequence quantizes every Conv.

    Returns:
        A new quantized model with the same input/output names, types and dynamic axes.
    """
    if not calibration:
        raise ValueError("calibration needs at least one batch")
    input_name = model.graph.input[0].name
    remove_stale_work_folders()
    with tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-") as folder, \
            _holding_lock(Path(folder)):
        source, prepared, quantized = (Path(folder) / n for n in ("fp32", "prep", "int8"))
        onnx.save(model, source)
        # Shape inference plus onnxruntime's basic optimizations (which constant-fold the shape
        # arithmetic the TorchScript exporter emits for reflection padding), as the quantizer
        # expects. Symbolic shape inference is skipped: it fails on the U-Nets ("Incomplete
        # symbolic shape inference") and plain ONNX shape inference is enough for QDQ.
        quant_pre_process(source, prepared, skip_symbolic_shape=True)
        prepared_model = onnx.load(prepared)
        exclude = default_keep_float(prepared_model) if keep_float is None else list(keep_float)
        missing = sorted(set(exclude) - {node.name for node in prepared_model.graph.node})
        if missing:
            raise ValueError(f"keep_float names not in the model: {', '.join(missing)}")
        quantize_static(
            prepared,
            quantized,
            _BatchReader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(INT8_OP_TYPES),
            nodes_to_exclude=exclude,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # 8-bit weights: reduce_range (7-bit, against int16 saturation in AVX2's u8 x s8
            # multiply-add on CPUs without VNNI) measured within 0.1 dB on such a CPU.
            reduce_range=False,
            # MinMax keeps only each tensor's min and max per batch; the histogram methods
            # (Percentile, Entropy) keep every activation of every batch in memory and measured
            # within 0.3 dB of MinMax.
            calibrate_method=CalibrationMethod.MinMax,
        )
        return onnx.load(quantized)
