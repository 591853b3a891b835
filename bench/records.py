"""One benchmark record per configuration, assembled in one place for every runner (local,
emulated, ssh, TVM RPC, the Keras baseline). Schema: docs/bench-schema.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from qmtgan.runtime.tileset import TileSet

SCHEMA = "qmtgan.bench/1"
# Runners that are not runtime backends (runtime/backends.py): the Keras float baseline on the
# host, and the C++ runner qmtg-run for a compiled TVM module.
KERAS_BASELINE = "keras"
NATIVE_RUNNER = "tvm-native"
# The keys of a measured record, in order (docs/bench-schema.md documents each): make_record
# writes exactly these; the harness adds the memory budget, and the outputs file when kept.
FIELDS = ("schema", "config", "label", "status", "error", "tile", "tiles", "threads", "model_bytes",
          "init_ms", "first_ms", "latency_ms", "peak_rss_mb", "snr_vs_float_db", "lmse_vs_float",
          "snr_vs_target_db", "lmse_vs_target", "megapixels_per_s", "macs_per_tile", "gflops", "peak_gflops",
          "fraction_of_peak", "peak_formula", "speedup_vs_keras", "device", "versions")
HARNESS_FIELDS = ("memory_budget_mb", "within_memory_budget", "outputs_file")


@dataclass(frozen=True)
class Config:
    name: str              # bundle name, or keras-fp32 for the baseline
    bundle: str            # bundle folder ("" for the baseline)
    backend: str          # keras | tflite | onnxruntime | tvm | tvm-native (the C++ runner qmtg-run)
    precision: str
    target: str            # board of targets/boards
    where: str             # local | qemu | ssh | rpc
    threads: int | None

    @property
    def label(self) -> str:
        runner = ", qmtg-run" if self.backend == NATIVE_RUNNER else ""
        return f"{self.name} @ {self.target} ({self.where}{runner}, {self.threads or 'default'} threads)"


@dataclass(frozen=True)
class Timing:
    warmup: int = 2
    runs: int = 10
    min_time_s: float = 0.0
    timeout_s: float = 1800.0

    def args(self) -> list[str]:
        return ["--warmup", str(self.warmup), "--runs", str(self.runs), "--min-time", str(self.min_time_s)]


def latency_stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds, np.float64) * 1000
    return {
        "count": int(ms.size),
        "min": float(ms.min()),
        "mean": float(ms.mean()),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "std": float(ms.std(ddof=1) if ms.size > 1 else 0.0),
    }


def throughput(macs: int, mean_s: float, peak: dict) -> dict:
    """Useful work per second: 2 x the convolutions' MACs per tile over the mean latency, and
    its fraction of the machine's peak (machine.py) when there is one."""
    gflops = 2 * macs / mean_s / 1e9
    peak_gflops = peak.get("peak_gflops")
    return {"macs_per_tile": macs, "gflops": gflops, "peak_gflops": peak_gflops,
            "fraction_of_peak": gflops / peak_gflops if peak_gflops else None,
            "peak_formula": peak.get("formula")}


def error_record(config: Config, error: str, stderr: str | None = None) -> dict:
    """`stderr`: the failed worker's whole stderr (the message has only its end)."""
    return {
        "schema": SCHEMA,
        "config": asdict(config),
        "label": config.label,
        "status": "error",
        "error": error,
        "stderr": stderr,
    }


def make_record(
    config: Config,
    probe: dict,
    predicted: np.ndarray,
    tiles: TileSet,
    float_outputs: np.ndarray | None,
    macs: int,
    peak: dict,
    model_bytes: int | None,
    keras_mean_ms: float | None,
) -> dict:
    lat = latency_stats(probe["latencies_s"])
    mean_s = lat["mean"] / 1000
    vs_float = tiles.scores(predicted, against=float_outputs) if float_outputs is not None else {}
    vs_target = tiles.scores(predicted)
    record = {
        "schema": SCHEMA,
        "config": asdict(config),
        "label": config.label,
        "status": "ok",
        "error": None,
        "tile": probe["tile"],
        "tiles": probe["tiles"],
        "threads": probe["threads"],
        "model_bytes": model_bytes,
        "init_ms": probe["init_s"] * 1000,
        "first_ms": probe["first_s"] * 1000,
        "latency_ms": lat,
        "peak_rss_mb": probe["peak_rss_kb"] / 1024 if probe.get("peak_rss_kb") else None,
        "snr_vs_float_db": vs_float.get("snr_db"),
        "lmse_vs_float": vs_float.get("lmse"),
        "snr_vs_target_db": vs_target.get("snr_db"),
        "lmse_vs_target": vs_target.get("lmse"),
        "megapixels_per_s": probe["tile"] ** 2 / mean_s / 1e6,
        **throughput(macs, mean_s, peak),
        "speedup_vs_keras": keras_mean_ms / lat["mean"] if keras_mean_ms else None,
        "device": probe.get("machine"),
        "versions": probe.get("versions"),
    }
    if tuple(record) != FIELDS:
        raise RuntimeError(f"bench record keys drifted from FIELDS: {sorted(set(record) ^ set(FIELDS))}")
    return record
