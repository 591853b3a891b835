"""Where an ONNX model's time goes, per op type: ONNX Runtime's own profiler (kernel time of
every node over several runs of one tile), summed by op type, in the bundle's report."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from qmtgan.runtime.scratch import scratch_dir

REPORT = "op_profile.md"


def onnx_op_profile(model_bytes: bytes, tile: np.ndarray, runs: int = 10, threads: int | None = None) -> list[dict]:
    """[{op, ms (per run), share, nodes}] slowest first; tile: (1, t, t, bands) normalized."""
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
    total_us: dict[str, float] = defaultdict(float)
    nodes: dict[str, set] = defaultdict(set)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e["args"]["op_name"]
            total_us[op] += e["dur"]
            nodes[op].add(e["name"])
    whole = sum(total_us.values()) or 1.0
    return [{"op": op, "ms": round(us / runs / 1000, 3), "share": round(us / whole, 3), "nodes": len(nodes[op])}
            for op, us in sorted(total_us.items(), key=lambda kv: -kv[1])]


def markdown(rows: list[dict], label: str) -> str:
    lines = [f"{label}: kernel time per op type, one tile, ONNX Runtime's profiler (mean of its runs).", "",
             "| op | ms / tile | share | nodes |", "|---|---:|---:|---:|"]
    lines += [f"| {r['op']} | {r['ms']:.3f} | {100 * r['share']:.1f} % | {r['nodes']} |" for r in rows]
    return "\n".join(lines) + "\n"
