"""Where a model's time goes, per op type, for the bundle's report (op_profile.md) and manifest.

ONNX models are timed by ONNX Runtime's own profiler (kernel time of every node). LiteRT's Python
API has no op profiler, so a TFLite model is timed op by op: each op is cut out into a one-op
model (same weights, same quantization), fed that op's real inputs from a run of the whole model,
and run by the same interpreter with its default XNNPACK delegate. Ops on weights only (fp16
weight decoding) are folded when a model loads and are not timed. A one-op model that XNNPACK
does not take runs in TFLite's built-in kernel; such ops also split the whole model's delegate
partitions, so the report lists them and the partition count.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmtgan.runtime.scratch import scratch_dir

REPORT = "op_profile.md"


@dataclass(frozen=True)
class NodeTime:
    op: str
    ms: float
    delegated: bool = True   # run by the accelerated kernels (XNNPACK for TFLite; always true for ORT)
    name: str = ""


def by_op_type(nodes: list[NodeTime]) -> list[dict]:
    """[{op, ms (per run), share, nodes, delegated}] slowest op type first."""
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    delegated: dict[str, int] = defaultdict(int)
    for n in nodes:
        total[n.op] += n.ms
        count[n.op] += 1
        delegated[n.op] += n.delegated
    whole = sum(total.values()) or 1.0
    return [{"op": op, "ms": round(ms, 3), "share": round(ms / whole, 3), "nodes": count[op],
             "delegated": delegated[op]} for op, ms in sorted(total.items(), key=lambda kv: -kv[1])]


def onnx_op_profile(model_bytes: bytes, tile: np.ndarray, runs: int = 10, threads: int | None = None) -> dict:
    """{rows: per op type}; tile: (1, t, t, bands) normalized."""
    import onnxruntime as ort

    with scratch_dir() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")  # not the working directory
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: tile.astype(np.float32)}
        session.run(None, feed)  # warm-up, not counted below
        session.end_profiling()
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    total_us: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            total_us[(e["args"]["op_name"], e["name"])] += e["dur"]
    nodes = [NodeTime(op, us / runs / 1000, name=name) for (op, name), us in total_us.items()]
    return {"source": "ONNX Runtime's profiler, mean of its runs", "rows": by_op_type(nodes)}


def _median_ms(run, runs: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def _quantized(tile: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return tile.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(tile / scale + zero), info.min, info.max).astype(detail["dtype"])


def tflite_op_profile(model_bytes: bytes, tile: np.ndarray, runs: int = 15, threads: int = 1) -> dict:
    """{rows: per op type, slowest: per op, not_delegated, partitions, whole_ms, sum_ms}."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    from qmtgan.convert.tflite import layer_of

    whole = Interpreter(
        model_content=model_bytes, num_threads=threads, experimental_preserve_all_tensors=True
    )
    whole.allocate_tensors()
    entry = whole.get_input_details()[0]
    whole.set_tensor(entry["index"], _quantized(tile, entry))
    whole.invoke()  # every op's real inputs, kept for the one-op models

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    op_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    constant = {i for i, t in enumerate(graph.tensors) if model.buffers[t.buffer].data is not None
                and len(model.buffers[t.buffer].data)}
    operators = list(graph.operators)
    nodes: list[NodeTime] = []
    for op in operators:
        code = model.operatorCodes[op.opcodeIndex]
        inputs = [int(i) for i in op.inputs if i >= 0 and int(i) not in constant]
        if not inputs:  # an op on weights only (fp16 weight decoding): folded when the model loads
            continue
        graph.operators = [op]
        graph.inputs = np.array(inputs, dtype=np.int32)
        graph.outputs = np.array(op.outputs, dtype=np.int32)
        one = Interpreter(model_content=bytes(flatbuffer_utils.convert_object_to_bytearray(model)),
                          num_threads=threads)
        one.allocate_tensors()
        for detail, source in zip(one.get_input_details(), inputs):
            one.set_tensor(detail["index"], whole.get_tensor(source))
        name = graph.tensors[int(op.outputs[0])].name.decode()
        nodes.append(NodeTime(op_names[max(code.builtinCode, code.deprecatedBuiltinCode)],
                              _median_ms(one.invoke, runs),
                              delegated=one._interpreter.NumNodes() > 1,  # a delegate node was added
                              name=layer_of(name)))
    graph.operators = operators

    deployed = Interpreter(model_content=model_bytes, num_threads=threads)
    deployed.allocate_tensors()
    deployed.set_tensor(entry["index"], _quantized(tile, entry))
    partitions = deployed._interpreter.NumNodes() - len(operators)
    return {"source": "each op timed alone with the interpreter's XNNPACK delegate (median of runs)",
            "rows": by_op_type(nodes),
            "slowest": [{"op": n.op, "layer": n.name, "ms": round(n.ms, 3)}
                        for n in sorted(nodes, key=lambda n: -n.ms)[:10]],
            "not_delegated": sorted({f"{n.op} ({n.name})" for n in nodes if not n.delegated}),
            "partitions": partitions,
            "whole_ms": round(_median_ms(deployed.invoke, runs), 3),
            "sum_ms": round(sum(n.ms for n in nodes), 3)}


def markdown(profile: dict, label: str) -> str:
    lines = [f"{label}: time per op type, one tile; {profile['source']}.", ""]
    if "whole_ms" in profile:
        lines += [
            f"Whole model {profile['whole_ms']:.3f} ms; "
            f"the ops timed alone sum to {profile['sum_ms']:.3f} ms.",
            f"XNNPACK delegate partitions: {profile['partitions']}. "
            f"Ops XNNPACK does not take: {', '.join(profile['not_delegated']) or 'none'}.",
            "",
        ]
    delegate = "partitions" in profile
    lines += ["| op | ms / tile | share | nodes |" + (" on XNNPACK |" if delegate else ""),
              "|---|---:|---:|---:|" + ("---:|" if delegate else "")]
    lines += [f"| {r['op']} | {r['ms']:.3f} | {100 * r['share']:.1f} % | {r['nodes']} |"
              + (f" {r['delegated']} |" if delegate else "") for r in profile["rows"]]
    if profile.get("slowest"):
        lines += ["", "Slowest ops:", "", "| op | layer | ms / tile |", "|---|---|---:|"]
        lines += [f"| {s['op']} | {s['layer']} | {s['ms']:.3f} |" for s in profile["slowest"]]
    return "\n".join(lines) + "\n"


def summary(profile: dict) -> dict:
    """The manifest's share of a profile: the five costliest op types and the delegate facts."""
    return {k: (v[:5] if k == "rows" else v) for k, v in profile.items() if k != "slowest"}
