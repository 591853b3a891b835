"""Float islands for the per-image normalization's statistics in a full-int8 TFLite model.

The normalization scales each channel by rsqrt(variance + epsilon). XNNPACK has no int8 RSQRT,
and it refuses an int8 ADD whose two inputs' scales are too far apart (a variance against the
small epsilon constant), so each such op ran in TFLite's reference kernels and cut the model
into several XNNPACK partitions. Here every int8 RSQRT, with the ADD of a constant feeding it,
becomes DEQUANTIZE -> ADD -> RSQRT -> QUANTIZE in float32 on the same (1, 1, 1, C) statistics:
XNNPACK runs float RSQRT and both conversions, so the whole model is one partition. The island's
output keeps the int8 RSQRT's scale and zero point: every other tensor is unchanged, and the
scale factor is computed in float instead of through a 256-entry table.
"""

from __future__ import annotations

import numpy as np

from qmtgan.runtime.errors import QmtganError


def _code(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _opcode_index(model, builtin: int, version: int) -> int:
    from ai_edge_litert import schema_py_generated as schema

    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, version)
            return i
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _constant(model, tensor) -> np.ndarray | None:
    data = model.buffers[tensor.buffer].data
    return None if data is None or not len(data) else np.asarray(data, dtype=np.uint8)


class _Builder:
    """Appends float tensors, constant buffers and ops to one subgraph of a model object."""

    def __init__(self, model, graph):
        self.model, self.graph = model, graph

    def tensor(self, like, name: str, data: np.ndarray | None = None) -> int:
        from ai_edge_litert import schema_py_generated as schema

        t = schema.TensorT()
        t.shape, t.name, t.type = like.shape, name.encode(), schema.TensorType.FLOAT32
        buffer = schema.BufferT()
        if data is not None:
            buffer.data = np.frombuffer(data.astype("<f4").tobytes(), dtype=np.uint8)
        self.model.buffers.append(buffer)
        t.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def op(self, builtin: int, version: int, inputs: list[int], outputs: list[int], like=None):
        from ai_edge_litert import schema_py_generated as schema

        op = schema.OperatorT()
        op.opcodeIndex = _opcode_index(self.model, builtin, version)
        op.inputs, op.outputs = np.array(inputs, np.int32), np.array(outputs, np.int32)
        if like is not None:  # the replaced op's options (an ADD's fused activation)
            op.builtinOptionsType, op.builtinOptions = like.builtinOptionsType, like.builtinOptions
        return op


def _single_scale_int8(tensor) -> bool:
    from ai_edge_litert import schema_py_generated as schema

    q = tensor.quantization
    return (tensor.type == schema.TensorType.INT8 and q is not None and q.scale is not None
            and len(q.scale) == 1)


def _dequantized(model, tensor) -> np.ndarray:
    q = tensor.quantization
    values = _constant(model, tensor).view(np.int8).astype(np.float32)
    return (values - float(q.zeroPoint[0])) * float(q.scale[0])


def float_statistics(model_bytes: bytes) -> tuple[bytes, list[str]]:
    """(the model with every int8 RSQRT, and the constant ADD feeding it, in float; the names
    of the RSQRT outputs rewritten). A model without int8 RSQRT comes back unchanged."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    ops_enum, int8 = schema.BuiltinOperator, schema.TensorType.INT8
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    if len(model.subgraphs) != 1:
        raise QmtganError(f"int8 islands: expected one subgraph, found {len(model.subgraphs)}")
    graph = model.subgraphs[0]
    tensors = graph.tensors
    uses: dict[int, int] = {}
    for op in graph.operators:
        for i in op.inputs:
            uses[int(i)] = uses.get(int(i), 0) + 1
    for i in graph.outputs:
        uses[int(i)] = uses.get(int(i), 0) + 1

    build, rewritten, out_ops = _Builder(model, graph), [], []
    for op in graph.operators:
        source, result = int(op.inputs[0]), int(op.outputs[0])
        if _code(model, op) != ops_enum.RSQRT or tensors[source].type != int8 or tensors[result].type != int8:
            out_ops.append(op)
            continue
        name = tensors[result].name.decode()
        add = out_ops[-1] if out_ops else None
        constant = None
        if (add is not None and _code(model, add) == ops_enum.ADD and int(add.outputs[0]) == source
                and uses.get(source, 0) == 1):
            # an int8 constant with one scale (epsilon); any other ADD stays as it is
            constant = next((int(i) for i in add.inputs if _constant(model, tensors[int(i)]) is not None
                             and _single_scale_int8(tensors[int(i)])), None)
        island_in = source
        if constant is not None:
            out_ops.pop()
            island_in = next(int(i) for i in add.inputs if int(i) != constant)
        f_in = build.tensor(tensors[island_in], f"{name}/island_in")
        out_ops.append(build.op(ops_enum.DEQUANTIZE, 2, [island_in], [f_in]))
        if constant is not None:
            eps = build.tensor(tensors[constant], f"{name}/island_constant",
                               _dequantized(model, tensors[constant]))
            f_sum = build.tensor(tensors[source], f"{name}/island_sum")
            out_ops.append(build.op(ops_enum.ADD, 1, [f_in, eps], [f_sum], like=add))
            f_in = f_sum
        f_out = build.tensor(tensors[result], f"{name}/island_out")
        out_ops.append(build.op(ops_enum.RSQRT, 1, [f_in], [f_out]))
        out_ops.append(build.op(ops_enum.QUANTIZE, 2, [f_out], [result]))
        rewritten.append(name)
    if not rewritten:
        return model_bytes, []
    graph.operators = out_ops
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), rewritten
