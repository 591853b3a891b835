"""The device-side measurement worker, run in a fresh process on the board (locally, under
qemu, over ssh): load a bundle, run real scene tiles through it, print one JSON record.
numpy + the bundle's backend only (no click, no TensorFlow), so it runs on any board.

    python3 -m qmtgan.runtime.probe --bundle B --tiles-file tiles.npz [--warmup K] [--runs R]
        [--min-time S] [--threads T] [--outputs out.npy] [--expect-snr DB --tolerance DB]

Timing follows TFLite's benchmark_model: init (load + allocate) and the first inference are
reported apart; then K warm-up runs; then at least R timed runs and at least S seconds. Every
tile is run once before timing starts, and those outputs are the ones scored and saved.
--expect-snr turns it into the bundle's smoke test: exit 3 when the SNR is off by more than
the tolerance."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from qmtgan.runtime.atomic import atomic_file
from qmtgan.runtime.backends import BACKENDS
from qmtgan.runtime.bundle import load_bundle
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.infer import run_tiles
from qmtgan.runtime.tileset import TileSet, load_tiles

SCHEMA = "qmtgan.probe/1"
SMOKE_MISMATCH = 3


def package_versions(packages) -> dict[str, str]:
    """The installed version of each of these distributions; absent ones are left out."""
    import importlib.metadata as md

    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _versions(backend: str) -> dict:
    libraries = BACKENDS[backend].reported if backend in BACKENDS else ()
    return {"python": platform.python_version(), "numpy": np.__version__, **package_versions(libraries)}


def peak_rss_kb() -> int:
    """Peak resident set of this process, KiB: VmHWM of /proc/self/status (the high-water mark
    of this program's own memory). ru_maxrss is only the fallback: Linux carries it over
    from the parent across fork and exec, so a small worker started by a big parent would
    report the parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


@dataclass
class ProbeRecord:
    """What one measurement of a model on a device gives, whoever measured it (this probe, the
    C++ runner, a TVM RPC session): the fields the bench record is built from. It travels as
    the JSON of `to_dict`; `extra` holds what only some measurers know (bundle, versions...)."""
    tile: int
    tiles: int
    threads: int | None
    init_s: float
    first_s: float
    latencies_s: list[float]
    peak_rss_kb: int | None
    machine: dict
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        return {"schema": SCHEMA, **d, **self.extra}


def cpuinfo() -> dict[str, str]:
    """The first processor's /proc/cpuinfo fields (empty where there is none)."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            out.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return out


def this_machine() -> dict:
    return {"arch": platform.machine(), "system": platform.system(), "cpus": os.cpu_count(),
            "cpu": cpuinfo().get("model name", platform.processor())}


def time_backend(backend, x: np.ndarray, warmup: int = 2, runs: int = 10, min_time: float = 0.0) -> dict:
    """Run every tile once (those outputs are returned; the first call is the first inference),
    then `warmup` untimed runs, then at least `runs` timed runs lasting at least `min_time` s."""
    out, per_tile = run_tiles(backend, x)
    for i in range(warmup):
        backend.run(x[i % len(x) : i % len(x) + 1])
    latencies, started, i = [], time.perf_counter(), 0
    while len(latencies) < runs or time.perf_counter() - started < min_time:
        t = time.perf_counter()
        backend.run(x[i % len(x) : i % len(x) + 1])
        latencies.append(time.perf_counter() - t)
        i += 1
    return {"outputs": out, "first_s": per_tile[0], "tile_pass_s": per_tile, "latencies_s": latencies}


def save_outputs(path: str, predicted: np.ndarray) -> None:
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, predicted, allow_pickle=False)


def measure(backend, tiles: TileSet, norm, warmup: int, runs: int, min_time: float, init_s: float,
            outputs_path: str | None) -> dict:
    """The part of a probe record every backend shares (also the Keras baseline's)."""
    timed = time_backend(backend, tiles.normalized(norm), warmup, runs, min_time)
    predicted = TileSet.denormalized(timed.pop("outputs"), norm)
    if outputs_path:
        save_outputs(outputs_path, predicted)
    return ProbeRecord(
        tiles.tile,
        len(tiles),
        backend.threads,
        init_s,
        timed["first_s"],
        timed["latencies_s"],
        peak_rss_kb(),
        this_machine(),
        extra={"tile_pass_s": timed["tile_pass_s"], "vs_target": tiles.scores(predicted)},
    ).to_dict()


def probe(bundle_path: str, tiles_path: str, warmup: int = 2, runs: int = 10, min_time: float = 0.0,
          threads: int | None = None, outputs_path: str | None = None, xnnpack: bool = True) -> dict:
    tiles = load_tiles(tiles_path)
    t0 = time.perf_counter()
    bundle = load_bundle(bundle_path)
    if tiles.tile != bundle.tile:
        raise QmtganError(
            f"{tiles_path}: tiles are {tiles.tile} px, the bundle's model takes {bundle.tile} px"
        )
    backend = bundle.backend(threads, xnnpack)
    init_s = time.perf_counter() - t0
    record = measure(backend, tiles, bundle.normalization, warmup, runs, min_time, init_s, outputs_path)
    return {**record, "bundle": bundle.manifest.name, "backend": bundle.manifest.backend,
            "precision": bundle.manifest.precision, "xnnpack": xnnpack,
            "versions": _versions(bundle.manifest.backend)}


def worker_arguments(prog: str, model_option: str) -> argparse.ArgumentParser:
    """The command line every measurement worker shares (this probe, the Keras baseline)."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument(model_option, required=True)
    ap.add_argument("--tiles-file", dest="tiles", required=True)  # a .npz of tiles, not a count
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--min-time", type=float, default=0.0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--outputs")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = worker_arguments("python -m qmtgan.runtime.probe", "--bundle")
    ap.add_argument("--no-xnnpack", action="store_true", help="TFLite: no default delegate (XNNPACK)")
    ap.add_argument("--expect-snr", type=float)
    ap.add_argument("--tolerance", type=float, default=0.05)
    a = ap.parse_args(argv)
    try:
        record = probe(
            a.bundle, a.tiles, a.warmup, a.runs, a.min_time, a.threads, a.outputs, not a.no_xnnpack
        )
    except QmtganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    status = 0
    if a.expect_snr is not None:
        got = record["vs_target"].get("snr_db", float("nan"))
        record["smoke"] = {"expected_snr_db": a.expect_snr, "snr_db": got, "tolerance_db": a.tolerance,
                           "ok": bool(abs(got - a.expect_snr) <= a.tolerance)}
        status = 0 if record["smoke"]["ok"] else SMOKE_MISMATCH
    print(json.dumps(record))
    return status


if __name__ == "__main__":
    sys.exit(main())
