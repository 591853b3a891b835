"""The machine a benchmark ran on, and its peak float32 rate.

Theoretical peak = cores x SIMD fp32 lanes x FMA pipes x 2 FLOP per FMA x clock. On x86 the
lanes come from /proc/cpuinfo flags (AVX-512: 16, AVX2: 8, SSE: 4) except on AMD family 25
(Zen 4), which runs AVX-512 on 256-bit datapaths (8 lanes; Zen 5, family 26, has full 512-bit
ones); FMA pipes per core are taken as 2 (every AVX2-era Intel and AMD core has two); the
clock is /proc/cpuinfo's "cpu MHz", which in a VM is the nominal clock, so boost can push a
measured fraction above what the formula allows. Boards give their numbers in
targets/boards/*.toml ([peak]). Next to the formula, a measured reference:
numpy's float32 matrix product (BLAS) on this machine."""

from __future__ import annotations

import os
from dataclasses import asdict
import platform
import time
from pathlib import Path

import numpy as np

from qmtgan.runtime.probe import cpuinfo

FMA_PIPES_X86 = 2


def host_peak() -> dict:
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    zen4 = info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25"
    lanes = 16 if "avx512f" in flags and not zen4 else 8 if "avx2" in flags or "avx512f" in flags else 4
    cores = os.cpu_count() or 1
    ghz = float(info.get("cpu MHz", "0") or 0) / 1000
    gflops = cores * lanes * FMA_PIPES_X86 * 2 * ghz
    return {"cores": cores, "fp32_lanes": lanes, "fma_pipes": FMA_PIPES_X86, "ghz": round(ghz, 3),
            "peak_gflops": round(gflops, 1),
            "formula": f"{cores} cores x {lanes} lanes x {FMA_PIPES_X86} FMA pipes x 2 x {ghz:.2f} GHz"}


def board_peak(peak) -> dict:
    """From a board's Peak record (targets/registry.py), or None."""
    if peak is None:
        return {"peak_gflops": None, "formula": "no peak for this board (emulated or unknown)"}
    g = peak.cores * peak.fp32_lanes * peak.fma_pipes * 2 * peak.ghz
    return {
        **asdict(peak),
        "peak_gflops": round(g, 1),
        "formula": f"{peak.cores} cores x {peak.fp32_lanes} lanes x {peak.fma_pipes} FMA pipes x 2 x "
        f"{peak.ghz} GHz",
    }


def measured_sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best of `repeats` float32 n x n matrix products through numpy's BLAS."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def describe_host() -> dict:
    info = cpuinfo()
    return {
        "hostname": platform.node(),
        "arch": platform.machine(),
        "cpu": info.get("model name", platform.processor()),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_mb": _mem_total_mb(),
    }


def _mem_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None
