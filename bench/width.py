"""Benchmark (not a test): the fraction of the CPU's peak each float runtime reaches as the
generator gets wider, from the demo's (ngf 4) to the paper's (ngf 20). A narrow generator has
layers of 4 to 12 channels, which fill a fraction of a SIMD register; this separates what the
runtime reaches from what the model's shape allows. Float speed does not depend on the
weights, so the generators are untrained; the inputs are real tiles of the scene. Each
(generator, runtime, threads) is timed in a fresh process by the device probe's loop. The
runtimes: TFLite fp32 (XNNPACK), ONNX Runtime fp32, and TVM without tuning (the schedule rules).

    qmtgan bench width --pair P -o results/bench [--generators demo,ngf8,paper]
        [--runtimes tflite,onnxruntime,tvm] [--threads 1,2] [--patch-size 512]
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from qmtgan.bench.machine import describe_host, host_peak, measured_sgemm_gflops
from qmtgan.bench.records import latency_stats, throughput
from qmtgan.runtime.atomic import atomic_file, write_text_atomic
from qmtgan.train.presets import DEMO_GENERATOR

# Generators by name: overrides of the paper-sized configuration (train/models/registry.py).
GENERATORS = {
    "demo": DEMO_GENERATOR,
    "ngf8": {**DEMO_GENERATOR, "ngf": 8},
    "paper": {},
}
MODEL_FILES = {"tflite": "model.tflite", "onnxruntime": "model.onnx", "tvm": "model.so"}


def export(generator: str, tile: int, runtimes: list[str], folder: Path) -> dict:
    """Write the generator's float deploy graph for each runtime; its MACs per tile."""
    from qmtgan.convert.deploy_graph import deploy_graph
    from qmtgan.convert.onnx_export import to_onnx
    from qmtgan.convert.tflite import to_tflite
    from qmtgan.train.models.registry import build_generator, default_config
    from qmtgan.train.models.summary import conv_macs

    cfg = replace(default_config("multitempgan", **GENERATORS[generator]), patch_size=tile)
    model = build_generator(cfg, batch_size=1)
    graph = deploy_graph(model)
    folder.mkdir(parents=True, exist_ok=True)
    for runtime in runtimes:
        path = folder / MODEL_FILES[runtime]
        if runtime == "tflite":
            path.write_bytes(to_tflite(graph, "fp32"))
        elif runtime == "onnxruntime":
            path.write_bytes(to_onnx(graph, for_onnxruntime=True))
        else:
            from qmtgan.convert.tvm_build import compile_onnx
            from qmtgan.targets.registry import board

            compile_onnx(to_onnx(graph), (1, tile, tile, cfg.bands), board("host-x86_64"), path)
    return {"generator": generator, "config": cfg.to_dict(), "macs_per_tile": conv_macs(model),
            "parameters": int(model.count_params())}


def time_in_fresh_process(runtime: str, model: Path, inputs: Path, threads: int, runs: int,
                          min_time: float) -> dict:
    args = [sys.executable, "-m", "qmtgan.bench.width", "--model", str(model),
            "--backend", runtime, "--tiles-file", str(inputs), "--threads", str(threads), "--runs", str(runs),
            "--min-time", str(min_time)]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode:
        from qmtgan.runtime.errors import QmtganError

        raise QmtganError(f"{runtime} on {model} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker(argv: list[str]) -> None:
    """Time one model: every tile once, warm-up, then the timed runs (runtime/probe.py)."""
    from qmtgan.runtime.backends import load_backend
    from qmtgan.runtime.probe import peak_rss_kb, time_backend, worker_arguments

    ap = worker_arguments("python -m qmtgan.bench.width", "--model")
    ap.add_argument("--backend", required=True)
    a = ap.parse_args(argv)
    x = np.load(a.tiles, allow_pickle=False)
    timed = time_backend(load_backend(a.backend, a.model, a.threads), x, a.warmup, a.runs, a.min_time)
    print(json.dumps({"latencies_s": timed["latencies_s"], "peak_rss_kb": peak_rss_kb()}))


def normalized_tiles(pair: Path, tile: int, count: int) -> np.ndarray:
    from qmtgan.runtime.normalization import Normalization
    from qmtgan.runtime.tileset import sample_tiles
    from qmtgan.train.pair import load_pair

    reference = load_pair(pair).reference.data
    tiles = sample_tiles(reference, None, tile, count)
    return tiles.normalized(Normalization.fit([reference], np.all(reference != 0, axis=0), 0.0))


def markdown(result: dict) -> str:
    peak, sgemm = result["peak"], result["sgemm_gflops"]
    lines = [
        f"# Float runtimes by generator width ({result['tile']} x {result['tile']} tiles)", "",
        f"{result['host']['cpu']}, {result['host']['cpus']} CPUs. Peak: {peak['formula']} = "
        f"{peak['peak_gflops']} GFLOP/s; measured numpy float32 matmul: {sgemm:.0f} GFLOP/s. "
        "GFLOP/s = 2 x the convolutions' MACs per tile / mean latency. Untrained generators "
        "(float speed does not depend on the weights), real tiles of the scene; tvm is untuned "
        "(the schedule rules). \"of peak\" is of the whole machine's, whatever the threads.", "",
        "| generator | ngf | parameters | MMAC / tile | runtime | threads | mean ms | p50 ms | GFLOP/s "
        "| of peak | of matmul |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['generator']} | {row['ngf']} | {row['parameters']:,} | "
            f"{row['macs_per_tile'] / 1e6:.0f} | "
            f"{row['runtime']} | {row['threads']} | {row['latency_ms']['mean']:.2f} | "
            f"{row['latency_ms']['p50']:.2f} | {row['gflops']:.1f} | {100 * row['fraction_of_peak']:.1f} % | "
            f"{100 * row['gflops'] / sgemm:.1f} % |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{r['generator']}\n{r['runtime']}, {r['threads']} t" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows)), 4.5))
    ax.bar(range(len(rows)), [100 * r["fraction_of_peak"] for r in rows],
           color=[f"C{list(GENERATORS).index(r['generator'])}" for r in rows])
    ax.axhline(100 * result["sgemm_gflops"] / result["peak"]["peak_gflops"], color="k", ls="--", lw=1,
               label="numpy float32 matmul")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("% of the formula peak")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def measure(pair: Path, generators: list[str], runtimes: list[str], threads: list[int], tile: int, tiles: int,
            runs: int, min_time: float) -> dict:
    """Every (generator, runtime, threads), each timed in a fresh process; the report's JSON."""
    from tqdm import tqdm

    from qmtgan.runtime.scratch import scratch_dir

    peak, rows = host_peak(), []
    with scratch_dir(prefix="qmtgan-width-") as tmp:
        inputs = Path(tmp) / "inputs.npy"
        np.save(inputs, normalized_tiles(pair, tile, tiles), allow_pickle=False)
        jobs = [(g, r, t) for g in generators for r in runtimes for t in threads]
        exported: dict[str, dict] = {}
        for generator, runtime, n in tqdm(jobs, desc="width", unit="config"):
            if generator not in exported:
                exported[generator] = export(generator, tile, runtimes, Path(tmp) / generator)
            model = exported[generator]
            timed = time_in_fresh_process(runtime, Path(tmp) / generator / MODEL_FILES[runtime], inputs, n,
                                          runs, min_time)
            lat = latency_stats(timed["latencies_s"])
            rows.append({"generator": generator, "ngf": model["config"]["ngf"], "runtime": runtime,
                         "threads": n, "parameters": model["parameters"], "config": model["config"],
                         "latency_ms": lat, "peak_rss_kb": timed["peak_rss_kb"],
                         **throughput(model["macs_per_tile"], lat["mean"] / 1000, peak)})
    return {"schema": "qmtgan.bench-width/1", "tile": tile, "host": describe_host(), "peak": peak,
            "sgemm_gflops": measured_sgemm_gflops(), "rows": rows}


def run(pair: Path, generators: list[str], runtimes: list[str], threads: list[int], tile: int, tiles: int,
        runs: int, min_time: float, out: Path) -> dict:
    """Measure, then write width.{json,md,png} into `out`."""
    from qmtgan.runtime.errors import QmtganError

    unknown = sorted(set(generators) - set(GENERATORS)) + sorted(set(runtimes) - set(MODEL_FILES))
    if unknown:
        raise QmtganError(f"unknown generator or runtime: {', '.join(unknown)} "
                          f"(generators: {', '.join(GENERATORS)}; runtimes: {', '.join(MODEL_FILES)})")
    result = measure(pair, generators, runtimes, threads, tile, tiles, runs, min_time)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "width.json", json.dumps(result, indent=1))
    write_text_atomic(out / "width.md", markdown(result))
    plot(result, out / "width.png")
    return result


if __name__ == "__main__":  # the timing worker, started by time_in_fresh_process
    worker(sys.argv[1:])
