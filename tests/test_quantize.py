"""cyclegan_export.quantize: fp16 and int8 models keep the interface and stay close to fp32.

Quality is only meaningful on a generator that computes something: each family is fitted for a
few seconds to a smooth colour transform (channel swap, contrast, shift), so its weights and
activations resemble a trained model's, then exported like the exporter does. Quality is judged
on natural-looking (smooth, low-frequency) held-out images, never on the calibration images.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import smooth_image
from onnx import TensorProto
from torch import nn

from cyclegan_export.quantize import (
    FP16_MIN_PSNR_DB,
    INT8_MIN_PSNR_DB,
    calibration_batches,
    convert_to_fp16,
    default_keep_float,
    psnr,
    quantize_to_int8,
)
from training.networks import GeneratorSpec, build_generator, generator_spec, init_weights

# family -> (spec, training/calibration crop, two held-out (H, W) sizes that differ from it).
# ngf 8; the U-Net has 5 levels (inputs in multiples of 32) instead of unet_128's 7 so that it
# trains on 64 px crops; its graph has the same op types.
FAMILIES: dict[str, tuple[GeneratorSpec, int, list[tuple[int, int]]]] = {
    "resnet": (generator_spec("resnet_6blocks", ngf=8), 32, [(48, 64), (64, 40)]),
    "unet": (generator_spec("unet_128", ngf=8, num_downs=5), 64, [(64, 96), (96, 64)]),
}


@dataclass(frozen=True)
class Fitted:
    family: str
    model: onnx.ModelProto  # float32, as the exporter writes it
    crop: int
    held_out: list[np.ndarray]  # batch-2 float32 NCHW inputs at the two held-out sizes


def _images(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """``(count, 3, H, W)`` float32 RGB in [-1, 1], natural-looking."""
    batch = np.stack([smooth_image(rng, height, width) for _ in range(count)])
    return batch.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0


def _target(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(0.8 * x[:, [2, 1, 0]] + 0.1, -1.0, 1.0)


def _fit(spec: GeneratorSpec, crop: int, steps: int = 150) -> nn.Module:
    torch.manual_seed(0)
    net = build_generator(spec)
    init_weights(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    pool = torch.from_numpy(_images(np.random.default_rng(0), 32, crop, crop))
    order = torch.randperm(steps * 4) % len(pool)
    # Training drives some weights and gradients into float32 denormals, which the CPU handles
    # in microcode: without flushing them to zero these few steps took ~50x longer.
    torch.set_flush_denormal(True)
    try:
        for step in range(steps):
            x = pool[order[4 * step : 4 * step + 4]]
            loss = nn.functional.l1_loss(net(x), _target(x))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_flush_denormal(False)
    return net.eval()


def _export(net: nn.Module, crop: int) -> onnx.ModelProto:
    """The exporter's settings: opset 17, TorchScript, dynamic batch/height/width."""
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notes
        torch.onnx.export(
            net, (torch.zeros(1, 3, crop, crop),),
            buffer,  # type: ignore[arg-type]  # file objects work too
            dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": axes, "output": axes},
        )
    return onnx.load_from_string(buffer.getvalue())


def _run(model: onnx.ModelProto, batches: list[np.ndarray]) -> Iterator[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in batches:
        yield session.run(None, {"input": batch})[0]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fitted(request: pytest.FixtureRequest) -> Fitted:
    spec, crop, sizes = FAMILIES[request.param]
    rng = np.random.default_rng(99)  # not the training seed: held-out images
    held_out = [_images(rng, 2, height, width) for height, width in sizes]
    net = _fit(spec, crop)
    with torch.no_grad():  # a generator that learnt nothing would make the PSNR checks vacuous
        x = torch.from_numpy(held_out[0])
        learnt = nn.functional.l1_loss(net(x), _target(x)).item()
        identity = nn.functional.l1_loss(x, _target(x)).item()
    assert learnt < 0.6 * identity, f"{request.param} did not fit: L1 {learnt:.3f}"
    return Fitted(request.param, _export(net, crop), crop, held_out)


@pytest.fixture(scope="module")
def fp32_outputs(fitted: Fitted) -> list[np.ndarray]:
    return list(_run(fitted.model, fitted.held_out))


@pytest.fixture(scope="module")
def fp16_model(fitted: Fitted) -> onnx.ModelProto:
    return convert_to_fp16(fitted.model)


@pytest.fixture(scope="module")
def int8_model(fitted: Fitted) -> onnx.ModelProto:
    return quantize_to_int8(fitted.model, _calibration(fitted.crop))


def _calibration(crop: int) -> list[np.ndarray]:
    # Larger than the crop and not square, so calibration_batches resizes and crops.
    rng = np.random.default_rng(7)
    images = [smooth_image(rng, crop + 8, crop + 24) for _ in range(8)]
    return calibration_batches(images, crop, batch_size=2)


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def _io_signature(model: onnx.ModelProto) -> list[tuple[str, int, list[str | int]]]:
    return [
        (v.name, v.type.tensor_type.elem_type,
         [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
        for v in [*model.graph.input, *model.graph.output]
    ]


# --- psnr -------------------------------------------------------------------------------------


def test_psnr_is_infinite_for_identical_outputs() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    assert psnr(x, x.copy()) == float("inf")


@pytest.mark.parametrize(("offset", "data_range", "expected"),
                         [(0.02, 2.0, 40.0), (0.2, 2.0, 20.0), (2.55, 255.0, 40.0)])
def test_psnr_matches_the_formula(offset: float, data_range: float, expected: float) -> None:
    reference = np.zeros((1, 3, 4, 4), np.float32)
    assert psnr(reference, reference + offset, data_range) == pytest.approx(expected, abs=1e-5)
    assert psnr(reference + offset, reference, data_range) == pytest.approx(expected, abs=1e-5)


def test_psnr_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((1, 3, 4, 4)), np.zeros((1, 3, 4, 5)))


# --- calibration_batches ----------------------------------------------------------------------


def test_calibration_batches_shape_dtype_range_and_batching() -> None:
    rng = np.random.default_rng(0)
    sizes = [(40, 60), (70, 50), (32, 32), (20, 90), (64, 64)]
    images = [smooth_image(rng, height, width) for height, width in sizes]
    batches = calibration_batches(images, 32, batch_size=2)
    assert [b.shape for b in batches] == [(2, 3, 32, 32), (2, 3, 32, 32), (1, 3, 32, 32)]
    assert all(b.dtype == np.float32 and b.min() >= -1.0 and b.max() <= 1.0 for b in batches)
    # An image already at the crop size passes through exactly, RGB order kept.
    expected = images[2].transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(batches[1][0], expected, atol=1e-6)


def test_calibration_batches_centre_crop_the_resized_image() -> None:
    # 40x120, left third red, middle third green, right third blue: the short side resized to
    # 32 gives 32x96, whose centre 32x32 crop is the green third.
    image = np.zeros((40, 120, 3), np.uint8)
    for channel in range(3):
        image[:, 40 * channel : 40 * (channel + 1), channel] = 255
    (batch,) = calibration_batches([image], 32)
    assert batch.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(batch[0, :, :, 2:-2].mean(axis=(1, 2)), [-1.0, 1.0, -1.0])


def test_calibration_batches_take_a_fixed_shape_and_fill_every_batch() -> None:
    rng = np.random.default_rng(1)
    images = [smooth_image(rng, 40, 60), smooth_image(rng, 70, 50), smooth_image(rng, 33, 33)]
    batches = calibration_batches(images, (32, 48), batch_size=2, full_batches=True)
    assert [b.shape for b in batches] == [(2, 3, 32, 48), (2, 3, 32, 48)]
    np.testing.assert_array_equal(batches[1][1], batches[0][0])  # filled from the first
    (wide,) = calibration_batches(images[:1], (16, 64))  # covers the crop: no side short
    assert wide.shape == (1, 3, 16, 64)


@pytest.mark.parametrize("image", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8),
                                   np.zeros((8, 8, 4), np.uint8)])
def test_calibration_batches_reject_non_rgb_uint8(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        calibration_batches([image], 8)


# --- fp16 -------------------------------------------------------------------------------------


def test_fp16_keeps_float32_io_and_leaves_the_input_model_alone(
    fitted: Fitted, fp16_model: onnx.ModelProto
) -> None:
    assert _io_signature(fp16_model) == _io_signature(fitted.model)
    assert _io_signature(fp16_model)[0] == ("input", TensorProto.FLOAT,
                                            ["batch", 3, "height", "width"])
    before = fitted.model.SerializeToString()
    convert_to_fp16(fitted.model)
    assert fitted.model.SerializeToString() == before


def test_fp16_stores_weights_in_half_precision(fp16_model: onnx.ModelProto) -> None:
    onnx.checker.check_model(fp16_model, full_check=True)  # also: nodes in topological order
    types = {i.name: i.data_type for i in fp16_model.graph.initializer}
    weights = [n.input[1] for n in fp16_model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert weights and all(types[w] == TensorProto.FLOAT16 for w in weights)
    size = sum(onnx.numpy_helper.to_array(i).nbytes for i in fp16_model.graph.initializer)
    half = sum(onnx.numpy_helper.to_array(i).nbytes for i in fp16_model.graph.initializer
               if i.data_type == TensorProto.FLOAT16)
    assert half > 0.95 * size


def test_fp16_runs_instance_norm_in_float32(fp16_model: onnx.ModelProto) -> None:
    producers = _producers(fp16_model)
    norms = [n for n in fp16_model.graph.node if n.op_type == "InstanceNormalization"]
    assert norms
    for norm in norms:
        cast = producers[norm.input[0]]
        assert cast.op_type == "Cast"
        assert onnx.helper.get_attribute_value(cast.attribute[0]) == TensorProto.FLOAT


def test_fp16_meets_the_psnr_floor(fitted: Fitted, fp16_model: onnx.ModelProto,
                                   fp32_outputs: list[np.ndarray]) -> None:
    outputs = _run(fp16_model, fitted.held_out)
    for x, reference, output in zip(fitted.held_out, fp32_outputs, outputs, strict=True):
        assert output.dtype == np.float32 and output.shape == x.shape
        value = psnr(reference, output)
        assert value >= FP16_MIN_PSNR_DB, f"{fitted.family} {x.shape}: {value:.1f} dB"


# --- int8 -------------------------------------------------------------------------------------


def test_int8_quantizes_convs_but_keeps_first_and_last_float(
    fitted: Fitted, int8_model: onnx.ModelProto
) -> None:
    onnx.checker.check_model(int8_model)
    assert _io_signature(int8_model) == _io_signature(fitted.model)
    ops = [n.op_type for n in int8_model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    producers = _producers(int8_model)
    float_types = {i.name: i.data_type for i in int8_model.graph.initializer}
    convs = [n for n in int8_model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    kept = set(default_keep_float(fitted.model))
    assert kept == {convs[0].name, convs[-1].name}
    for conv in convs:
        weight = producers.get(conv.input[1])
        if conv.name in kept or conv.op_type == "ConvTranspose":
            assert weight is None and float_types[conv.input[1]] == TensorProto.FLOAT, conv.name
            assert getattr(producers.get(conv.input[0]), "op_type", "") != "DequantizeLinear"
        else:
            assert weight is not None and weight.op_type == "DequantizeLinear", conv.name


def test_int8_meets_the_psnr_floor_at_dynamic_sizes(fitted: Fitted, int8_model: onnx.ModelProto,
                                                    fp32_outputs: list[np.ndarray]) -> None:
    # Two sizes, neither the calibration size, batch 2: the quantized graph stays dynamic.
    outputs = _run(int8_model, fitted.held_out)
    for x, reference, output in zip(fitted.held_out, fp32_outputs, outputs, strict=True):
        assert output.dtype == np.float32 and output.shape == x.shape
        value = psnr(reference, output)
        assert value >= INT8_MIN_PSNR_DB, f"{fitted.family} {x.shape}: {value:.1f} dB"


def test_int8_keep_float_overrides_the_default(fitted: Fitted) -> None:
    calibration = _calibration(fitted.crop)
    before = fitted.model.SerializeToString()
    model = quantize_to_int8(fitted.model, calibration, keep_float=[])
    assert fitted.model.SerializeToString() == before
    producers = _producers(model)
    first = next(n for n in model.graph.node if n.op_type == "Conv")
    assert producers[first.input[1]].op_type == "DequantizeLinear"
    with pytest.raises(ValueError, match="not in the model"):
        quantize_to_int8(fitted.model, calibration, keep_float=["no/such/Conv"])
    with pytest.raises(ValueError, match="at least one"):
        quantize_to_int8(fitted.model, [])
