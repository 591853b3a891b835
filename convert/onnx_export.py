"""Keras generator -> ONNX (tf2onnx, opset 17), validated with onnx.checker.

tf2onnx writes `clip_by_value` as Min then Max against one-element (1, 1, 1, 1) constants. They
become one Clip with scalar bounds: TVM's ONNX frontend broadcasts such constants to the full
output shape and folds them into the module (two output-sized float arrays in every .so).
"""

from __future__ import annotations

OPSET = 17


def to_onnx(model) -> bytes:
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec(tuple(model.inputs[0].shape), tf.float32, name="reference"),)

    @tf.function(input_signature=spec)
    def forward(x):
        return model(x, training=False)

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    fuse_clips(proto.graph)
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
