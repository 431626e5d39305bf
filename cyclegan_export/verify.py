"""Prove an exported model right: ONNX checker, onnxruntime against PyTorch, OpenCV DNN.

Each check returns a :class:`Check` with the measured figure, so the export report can print
what was compared and by how much it agreed, not just "ok".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from cyclegan_export.quantize import psnr
from runtime.metadata import ModelMetadata
from runtime.synthetic import natural_images
from runtime.transforms import from_model_output, to_model_input

FP32_MAX_ABS_ERROR = 1e-4  # onnxruntime vs PyTorch eager, float IO, fp32


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    fatal: bool = True  # a failed non-fatal check is reported but does not fail the export

    def line(self) -> str:
        status = "ok" if self.passed else ("FAILED" if self.fatal else "warning")
        return f"{self.name}: {self.detail}: {status}"


def verification_sizes(meta: ModelMetadata) -> list[tuple[int, int]]:
    """Two (H, W) sizes that obey the model's size rule (one non-square), or its static size."""
    if meta.static_size is not None:
        return [(meta.static_size[0], meta.static_size[1])]
    m = meta.size_multiple
    if m <= 8:
        return [(64, 64), (48, 80)]
    return [(m, m), (m, 2 * m)]


def check_onnx_model(path: Path) -> Check:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return Check("onnx.checker (full)", False, str(exc).splitlines()[0])
    return Check("onnx.checker (full)", True, "valid")


def _session(model: str | bytes) -> Any:
    import onnxruntime as ort  # imported late: the CLI's --help should not pay for it

    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _feed(meta: ModelMetadata, images_rgb: np.ndarray) -> np.ndarray:
    """Model input for ``images_rgb`` (N, H, W, 3) uint8 RGB, in the model's IO convention."""
    if meta.io == "uint8":
        return np.ascontiguousarray(images_rgb[..., ::-1] if meta.color_order == "BGR"
                                    else images_rgb)
    return to_model_input(images_rgb, color_order="RGB")


def _torch_reference(net: nn.Module, meta: ModelMetadata, images_rgb: np.ndarray) -> np.ndarray:
    """PyTorch eager output in the model's IO convention (Python pre/post for uint8 IO)."""
    with torch.no_grad():
        out = net(torch.from_numpy(to_model_input(images_rgb, color_order="RGB"))).numpy()
    return from_model_output(out, color_order=meta.color_order) if meta.io == "uint8" else out


def check_against_pytorch(model: str | bytes, net: nn.Module, meta: ModelMetadata,
                          sizes: Sequence[tuple[int, int]], batch: int, label: str) -> list[Check]:
    """fp32 parity: max abs error <= 1e-4 (float IO) or <= 1 level (uint8 IO), per size."""
    session = _session(model)
    checks = []
    for index, (height, width) in enumerate(sizes):
        images = natural_images(batch, height, width, seed=100 + index)
        got = session.run(None, {meta.input_name: _feed(meta, images)})[0]
        want = _torch_reference(net, meta, images)
        shape = "x".join(str(d) for d in got.shape)
        name = f"onnxruntime vs PyTorch, {label}, {shape}"
        if got.shape != want.shape:
            checks.append(Check(name, False, f"shape {got.shape} != PyTorch {want.shape}"))
            continue
        error = np.abs(got.astype(np.float64) - want.astype(np.float64))
        if meta.io == "uint8":
            off = float((error > 0).mean())
            checks.append(Check(name, float(error.max()) <= 1,
                                f"max diff {error.max():.0f} level(s), {off:.4%} of values off "
                                "by one (limit 1 level)"))
        else:
            limit = FP32_MAX_ABS_ERROR
            checks.append(Check(name, float(error.max()) <= limit,
                                f"max abs error {error.max():.2e} (limit {limit:.0e})"))
    return checks


def check_reduced_precision(model: bytes, reference: bytes, meta: ModelMetadata,
                            sizes: Sequence[tuple[int, int]], batch: int,
                            floor_db: float, extra_images: np.ndarray | None = None) -> list[Check]:
    """PSNR of the fp16/int8 model against the fp32 model on natural-looking images."""
    session, ref_session = _session(model), _session(reference)
    data_range = 255.0 if meta.io == "uint8" else 2.0
    checks = []
    cases = [(f"{h}x{w}", natural_images(batch, h, w, seed=200 + i))
             for i, (h, w) in enumerate(sizes)]
    if extra_images is not None and len(extra_images):
        cases.append((f"{len(extra_images)} calibration image(s)", extra_images))
    for label, images in cases:
        feed = {meta.input_name: _feed(meta, images)}
        value = psnr(ref_session.run(None, feed)[0].astype(np.float64),
                     session.run(None, feed)[0].astype(np.float64), data_range)
        checks.append(Check(f"{meta.precision} vs fp32, {label}", value >= floor_db,
                            f"PSNR {value:.1f} dB (floor {floor_db:.0f} dB)"))
    return checks


def check_opencv_dnn(path: Path, meta: ModelMetadata, size: tuple[int, int]) -> Check:
    """Does OpenCV DNN load the file and agree with onnxruntime? Informational (non-fatal)."""
    import cv2

    name = f"OpenCV DNN {cv2.__version__} vs onnxruntime"
    images = natural_images(meta.batch or 1, *size, seed=300)  # a fixed batch takes only its own
    feed = _feed(meta, images)
    try:
        net = cv2.dnn.readNetFromONNX(str(path))
        net.setInput(feed)
        got = net.forward()
    except cv2.error as exc:
        reason = str(exc).strip().splitlines()[-1][:160]
        hint = "" if meta.portable_pad else "; --portable-pad may help"
        return Check(name, False, f"cannot run it ({reason}){hint}", fatal=False)
    want = _session(str(path)).run(None, {meta.input_name: feed})[0]
    error = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    limit = 1.0 if meta.io == "uint8" else 1e-3
    return Check(name, error <= limit, f"max abs error {error:.2e} (limit {limit:.0e})",
                 fatal=False)
