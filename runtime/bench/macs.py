"""What a generator costs in arithmetic: multiply-accumulates counted from its ONNX graph.

Only Conv and ConvTranspose are counted (they hold nearly all of a CycleGAN generator's work);
shapes come from ONNX shape inference at a concrete input size. Needs the ``onnx`` package,
which the runtime does not require: without it the count is None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _conv_macs(x: tuple[int, ...], w: tuple[int, ...], y: tuple[int, ...]) -> int:
    # weight (C_out, C_in / groups, kH, kW): every output value sums C_in/groups * kH * kW terms
    return math.prod(y) * math.prod(w[1:])


def _conv_transpose_macs(x: tuple[int, ...], w: tuple[int, ...], y: tuple[int, ...]) -> int:
    # weight (C_in, C_out / groups, kH, kW): every input value is scattered into
    # C_out/groups * kH * kW outputs
    return math.prod(x) * math.prod(w[1:])


# op type -> MACs from (input, weight, output) shapes; other ops are cheap next to these.
MAC_COUNTERS: dict[str, Callable[[tuple[int, ...], tuple[int, ...], tuple[int, ...]], int]] = {
    "Conv": _conv_macs,
    "ConvTranspose": _conv_transpose_macs,
}


def count_macs(model_path: str | Path, input_shape: Sequence[int]) -> int | None:
    """Multiply-accumulates of one forward pass at ``input_shape``, from the graph.

    Sums :data:`MAC_COUNTERS` (Conv, ConvTranspose) over the graph's nodes, with shapes from
    ONNX shape inference at the concrete input shape (e.g. ``(1, 3, 256, 256)`` for a float
    model, ``(1, 256, 256, 3)`` for uint8 IO). Returns None when the ``onnx`` package is not
    installed or some convolution's shape stays unknown. 1 MAC = 2 FLOPs.
    """
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(model_path))
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(input_shape):
        raise ValueError(f"{model_path}: input has rank {len(dims)}, got shape {input_shape}")
    for dim, value in zip(dims, input_shape, strict=True):
        dim.Clear()
        dim.dim_value = int(value)
    # The exporter's value_info carries symbolic sizes; inference would keep them, not refine.
    del model.graph.value_info[:]
    total = _sum_macs(model.graph.node, _inferred_shapes(model))
    if total is None:
        # The exporter's reflect padding computes its pads in-graph (ConstantOfShape, Concat,
        # Reshape, Transpose...), which shape inference does not evaluate: fold that constant
        # part into initializers and infer again. (onnxruntime's symbolic shape inference
        # would do it too, but importing it imports torch when torch is installed.)
        folded = _fold_constants(model)
        total = _sum_macs(folded.graph.node, _inferred_shapes(folded))
    return total


# Never folded: quantized weights keep their DequantizeLinear (its shape is inferred anyway, and
# evaluating it would materialise every weight in float).
_NO_FOLD = frozenset({"DequantizeLinear", "QuantizeLinear", "RandomNormal", "RandomUniform",
                      "RandomNormalLike", "RandomUniformLike", "Multinomial"})


def _fold_constants(model: Any) -> Any:
    """A copy of ``model`` whose nodes computing only from initializers and constants are
    replaced by initializers holding their values (evaluated with ``onnx.reference``)."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    constant = set(weights)
    folded_nodes, kept_nodes = [], []
    for node in graph.node:  # exported graphs are topologically sorted (the checker demands it)
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                           for a in node.attribute)
        if (node.op_type not in _NO_FOLD and not has_subgraph
                and all(not name or name in constant for name in node.input)):
            folded_nodes.append(node)
            constant.update(node.output)
        else:
            kept_nodes.append(node)
    if not folded_nodes:
        return model
    used = {name for node in kept_nodes for name in node.input} | {o.name for o in graph.output}
    produced = [name for node in folded_nodes for name in node.output if name in used]
    needed_weights = {name for node in folded_nodes for name in node.input if name in weights}
    try:
        sub = helper.make_model(
            helper.make_graph(folded_nodes, "constants", [],
                              [helper.make_empty_tensor_value_info(n) for n in produced],
                              [weights[n] for n in sorted(needed_weights)]),
            opset_imports=model.opset_import)
        values = ReferenceEvaluator(sub).run(None, {})
    except Exception:  # noqa: BLE001 - an op the reference evaluator lacks: no count
        return model
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(kept_nodes)
    result.graph.initializer.extend(numpy_helper.from_array(np.asarray(value), name)
                                    for name, value in zip(produced, values, strict=True))
    return result


def _inferred_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - an uninferable graph: shapes unknown, MACs None
        return {}
    return _known_shapes(inferred)


def _known_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, for every tensor whose every dimension is a known number."""
    shapes: dict[str, tuple[int, ...]] = {}
    graph = model.graph
    for info in (*graph.value_info, *graph.input, *graph.output):
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(int(d.dim_value) for d in dims)
    for init in graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    return shapes


def _sum_macs(nodes: Any, shapes: dict[str, tuple[int, ...]]) -> int | None:
    total = 0
    for node in nodes:
        counter = MAC_COUNTERS.get(node.op_type)
        if counter is None:
            continue
        x, w, y = (shapes.get(name) for name in (node.input[0], node.input[1], node.output[0]))
        if x is None or w is None or y is None:
            return None
        total += counter(x, w, y)
    return total
