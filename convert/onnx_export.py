"""Keras generator -> ONNX (tf2onnx, opset 17), validated with onnx.checker.

tf2onnx writes `clip_by_value` as Min then Max against one-element (1, 1, 1, 1) constants. They
become one Clip with scalar bounds: TVM's ONNX frontend broadcasts such constants to the full
output shape and folds them into the module (two output-sized float arrays in every .so).

For ONNX Runtime, each DepthToSpace becomes reshapes around two transposes that each move one
axis. ONNX Runtime runs DepthToSpace (NCHW: a 6-D transpose that interleaves single elements)
with its generic transpose, which dominates the decoder's upsampling; a transpose that moves one
axis has a fast path (a 2-D block transpose, or a copy of contiguous runs). Same values, bit for
bit. TVM fuses either form into the same kind of loop, so its graph keeps DepthToSpace.
"""

from __future__ import annotations

import numpy as np

OPSET = 17


def to_onnx(model, *, for_onnxruntime: bool = False) -> bytes:
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec(tuple(model.inputs[0].shape), tf.float32, name="reference"),)

    @tf.function(input_signature=spec)
    def forward(x):
        return model(x, training=False)

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    fuse_clips(proto.graph)
    if for_onnxruntime:
        split_depth_to_space(proto)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def fuse_clips(graph) -> int:
    """Rewrite each Min(x, hi) -> Max(., lo) with one-element constant bounds, lo <= hi, whose
    Min output feeds only that Max, as Clip(x, lo, hi). Returns how many were fused."""
    from onnx import helper, numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    producers = {name: node for node in graph.node for name in node.output}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def bound(name: str):
        value = constants.get(name)
        return float(value.reshape(())) if value is not None and value.size == 1 else None

    fused = 0
    for low in [n for n in graph.node if n.op_type == "Max" and len(n.input) == 2]:
        high = producers.get(low.input[0])
        if high is None or high.op_type != "Min" or len(high.input) != 2 or len(consumers[low.input[0]]) != 1:
            continue
        lo, hi = bound(low.input[1]), bound(high.input[1])
        if lo is None or hi is None or lo > hi:
            continue
        names = [f"{low.name}/clip_min", f"{low.name}/clip_max"]
        graph.initializer.extend(numpy_helper.from_array(constants[src].reshape(()), name)
                                 for src, name in zip((low.input[1], high.input[1]), names))
        clip = helper.make_node("Clip", [high.input[0], *names], list(low.output), name=f"{low.name}/clip")
        index = list(graph.node).index(high)
        graph.node.remove(high)
        graph.node.remove(low)
        graph.node.insert(index, clip)
        fused += 1
    used = {name for node in graph.node for name in node.input}
    for unused in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(unused)
    return fused


def split_depth_to_space(model, requantize: bool = False) -> int:
    """Rewrite each DCR-mode DepthToSpace with a static input shape as
    (n, b*b*c, h, w) -> (n*b, b, c*h*w) -T-> (n*b, c*h*w, b) -> (n, b, c*h, w*b) -T-> (n, c*h, b, w*b)
    -> (n, c, h*b, w*b): the column phase moves innermost, then the row phase in between each
    output row's pixels. Returns how many were rewritten.

    requantize (a QDQ model): where the DepthToSpace's output goes to one QuantizeLinear, every
    step's output is quantized and dequantized with that QuantizeLinear's parameters, so ONNX
    Runtime runs each step on the 8-bit values. The steps only move values: the result is the
    DepthToSpace's, quantized once."""
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.input, *inferred.value_info]}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph, nodes, split = model.graph, [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shape = shapes.get(node.input[0]) if node.op_type == "DepthToSpace" else None
        if shape is None or attrs.get("mode", b"DCR") != b"DCR" or len(shape) != 4 or 0 in shape:
            nodes.append(node)
            continue
        b = attrs["blocksize"]
        n, c, h, w = shape[0], shape[1] // (b * b), shape[2], shape[3]
        stem = f"{node.name or node.output[0]}/split"
        steps = [("Reshape", [n * b, b, c * h * w]), ("Transpose", [0, 2, 1]),
                 ("Reshape", [n, b, c * h, w * b]), ("Transpose", [0, 2, 1, 3]),
                 ("Reshape", [n, c, h * b, w * b])]
        after = consumers.get(node.output[0], [])
        quantized = requantize and len(after) == 1 and after[0].op_type == "QuantizeLinear"
        source = node.input[0]
        for i, (op, values) in enumerate(steps):
            out = node.output[0] if i == len(steps) - 1 else f"{stem}/{i}"
            if op == "Reshape":
                shape_name = f"{stem}/shape{i}"
                graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), shape_name))
                nodes.append(helper.make_node(op, [source, shape_name], [out], name=f"{stem}/{op}{i}"))
            else:
                nodes.append(helper.make_node(op, [source], [out], name=f"{stem}/{op}{i}", perm=values))
            source = out
            if quantized and i < len(steps) - 1:
                parameters = list(after[0].input[1:])
                nodes.append(helper.make_node("QuantizeLinear", [out, *parameters], [f"{out}/q"],
                                              name=f"{out}/q"))
                nodes.append(helper.make_node("DequantizeLinear", [f"{out}/q", *parameters], [f"{out}/dq"],
                                              name=f"{out}/dq"))
                source = f"{out}/dq"
        split += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return split
