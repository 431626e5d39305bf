"""Edits of an exported generator's ONNX graph, made at load time for a faster engine.

- :func:`with_uint8_io`: the float model inside uint8 image IO, so a GPU session takes camera
  frames and returns displayable frames, and the arithmetic of :mod:`runtime.transforms`
  (scale, channel order, layout, rounding) runs on the device instead of in numpy.
- :func:`convert_to_fp16`: float16 weights and arithmetic, float32 IO (the exporter's
  ``--precision fp16`` and the GPU's default precision use the same conversion).

Both return a new :class:`onnx.ModelProto` and leave their argument unchanged. The model's
metadata is updated to describe the new graph (its ``io``/``layout``/``color_order`` or
``precision``), so everything that reads the session's metadata sees what it really takes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.metadata import metadata_or_none

if TYPE_CHECKING:
    import onnx

# Ops convert_to_fp16 leaves in float32. InstanceNormalization reduces over H*W values: summed in
# float16 the mean and variance lose precision (float16 stops resolving +1 beyond 2048) and the
# sum of squares overflows 65504 on large activations, so it runs in float32 between two Casts.
# The converter's own default list (non-numeric ops such as TopK, Range, Upsample) stays blocked.
FP16_KEEP_FLOAT_NAMES = ("InstanceNormalization",)

_UINT8_INPUT = "frames"
_UINT8_OUTPUT = "frames_out"


def _update_metadata(model: onnx.ModelProto, **changes: Any) -> None:
    """Change fields of the model's :class:`ModelMetadata` in place; a model without this
    toolkit's metadata (the exporter's, before it writes them) is left as it is."""
    props = {prop.key: prop.value for prop in model.metadata_props}
    found = metadata_or_none(props)
    if found is None:
        return
    meta = replace(found, **changes)
    del model.metadata_props[:]
    props.update(meta.to_props())
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def with_uint8_io(model: onnx.ModelProto, color_order: str = "BGR") -> onnx.ModelProto:
    """Wrap a float-IO generator in uint8 image IO.

    Args:
        model: a generator whose input is ``(N, 3, H, W)`` float (float32 or float16) RGB in
            [-1, 1] and whose output is the same kind of tensor (this toolkit's float IO).
        color_order: the channel order of the new input and output, ``"BGR"`` (OpenCV's) or
            ``"RGB"``.

    Returns:
        A model taking ``frames``: ``(N, H, W, 3)`` uint8 in ``color_order`` and returning
        ``frames_out`` of the same layout, computing exactly what
        :func:`runtime.transforms.to_model_input` and :func:`~runtime.transforms.from_model_output`
        compute: ``x / 127.5 - 1`` in float32, then ``clip(round((y + 1) * 127.5), 0, 255)``
        (ONNX ``Round`` rounds half to even, as ``np.rint``). Its metadata says ``io=uint8``,
        ``layout=NHWC``, ``color_order`` and the new input and output names.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if color_order not in ("BGR", "RGB"):
        raise ValueError(f"color_order must be 'BGR' or 'RGB', got {color_order!r}")
    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    graph = wrapped.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError("expected a generator with one input and one output, got "
                         f"{len(graph.input)} and {len(graph.output)}")
    old_in, old_out = graph.input[0], graph.output[0]
    in_type = old_in.type.tensor_type.elem_type
    out_type = old_out.type.tensor_type.elem_type
    dims = old_in.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"expected an (N, 3, H, W) input, got {len(dims)} dimensions")

    def dim(index: int) -> int | str | None:
        entry = dims[index]
        if entry.HasField("dim_value"):
            return entry.dim_value
        return entry.dim_param or None

    swap = color_order == "BGR"
    constants: dict[str, np.ndarray] = {
        "u8io_scale": np.array(127.5, np.float32),
        "u8io_one": np.array(1.0, np.float32),
        "u8io_low": np.array(0.0, np.float32),
        "u8io_high": np.array(255.0, np.float32),
    }
    if swap:
        constants["u8io_swap"] = np.array([2, 1, 0], np.int64)
    graph.initializer.extend(numpy_helper.from_array(value, name)
                             for name, value in constants.items())
    # Input side: uint8 NHWC -> float32 -> NCHW -> RGB -> [-1, 1] -> the model's input dtype.
    head = [
        helper.make_node("Cast", [_UINT8_INPUT], ["u8io_in_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["u8io_in_f"], ["u8io_in_nchw"], perm=[0, 3, 1, 2]),
    ]
    current = "u8io_in_nchw"
    if swap:  # Gather of three channel indices: supported by every provider, TensorRT included
        head.append(helper.make_node("Gather", [current, "u8io_swap"], ["u8io_in_rgb"], axis=1))
        current = "u8io_in_rgb"
    head += [
        helper.make_node("Div", [current, "u8io_scale"], ["u8io_in_half"]),
        helper.make_node("Sub", ["u8io_in_half", "u8io_one"],
                         [old_in.name if in_type == TensorProto.FLOAT else "u8io_in_scaled"]),
    ]
    if in_type != TensorProto.FLOAT:
        head.append(helper.make_node("Cast", ["u8io_in_scaled"], [old_in.name], to=in_type))
    # Output side: the model's output -> float32 -> [0, 255] rounded -> NHWC in color_order ->
    # uint8, the Cast last: TensorRT takes uint8 only as a network input or output (its
    # operator list has no uint8 Gather or Transpose), so a swap or transpose after the Cast
    # would leave those nodes, and a CUDA graph, off TensorRT.
    tail = []
    result = old_out.name
    if out_type != TensorProto.FLOAT:
        tail.append(helper.make_node("Cast", [result], ["u8io_out_f"], to=TensorProto.FLOAT))
        result = "u8io_out_f"
    tail += [
        helper.make_node("Add", [result, "u8io_one"], ["u8io_out_shift"]),
        helper.make_node("Mul", ["u8io_out_shift", "u8io_scale"], ["u8io_out_scaled"]),
        helper.make_node("Round", ["u8io_out_scaled"], ["u8io_out_round"]),
        helper.make_node("Clip", ["u8io_out_round", "u8io_low", "u8io_high"], ["u8io_out_clip"]),
    ]
    current = "u8io_out_clip"
    if swap:
        tail.append(helper.make_node("Gather", [current, "u8io_swap"], ["u8io_out_bgr"], axis=1))
        current = "u8io_out_bgr"
    tail += [
        helper.make_node("Transpose", [current], ["u8io_out_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Cast", ["u8io_out_nhwc"], [_UINT8_OUTPUT], to=TensorProto.UINT8),
    ]

    nodes = [*head, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)
    new_in = helper.make_tensor_value_info(_UINT8_INPUT, TensorProto.UINT8,
                                           [dim(0), dim(2), dim(3), 3])
    new_out = helper.make_tensor_value_info(_UINT8_OUTPUT, TensorProto.UINT8,
                                            [dim(0), dim(2), dim(3), 3])
    # The old input becomes an inner tensor; its value info keeps shape inference informed.
    graph.value_info.extend([old_in, old_out])
    del graph.input[:]
    graph.input.append(new_in)
    del graph.output[:]
    graph.output.append(new_out)
    _update_metadata(wrapped, io="uint8", layout="NHWC", value_range=(0.0, 255.0),
                     color_order=color_order, input_name=_UINT8_INPUT,
                     output_name=_UINT8_OUTPUT)
    return wrapped


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert weights and arithmetic to float16, keeping float32 graph inputs and outputs.

    Args:
        model: float32 generator (float IO: ``(N, 3, H, W)`` float32 in [-1, 1]).

    Returns:
        A new model with float16 initializers and a Cast after the input and before the output,
        so callers still feed and receive float32. InstanceNormalization (and the converter's
        own non-numeric block list) runs in float32 between Casts. Its metadata says
        ``precision=fp16``.

    onnxruntime's x86 CPU provider has no float16 kernels for Conv, ConvTranspose,
    InstanceNormalization, Pad, Relu, Tanh or Add: at session start it wraps each of them in
    Casts to float32 and folds the float16 weights back to float32. There the model is half the
    size and nearly as accurate as float32 (only the weights were rounded) but no faster;
    float16 arithmetic happens on providers that have the kernels, CUDA and DirectML for
    instance.
    """
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    # onnxruntime ships the maintained copy of onnxconverter-common's converter: no extra
    # dependency. Work on a copy: the converter edits the graph it is given in place.
    source = onnx.ModelProto()
    source.CopyFrom(model)
    converted: onnx.ModelProto = convert_float_to_float16(
        source, keep_io_types=True,
        op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FLOAT_NAMES])
    # The converter appends the Casts it inserts at the end of the node list; onnxruntime sorts
    # graphs itself, but the ONNX checker (and other runtimes) require topological order.
    OnnxModel.graph_topological_sort(converted.graph)
    _update_metadata(converted, precision="fp16")
    return converted
