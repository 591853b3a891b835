"""`qmtgan bench`: bundles x targets x threads (+ TVM RPC), each configuration in a fresh
process on its device, every one scored against the Keras float baseline of the same run and
the true target on the same real scene tiles. A configuration that fails (bad bundle,
unreachable device, crash, timeout) gets an error record; the rest of the matrix still runs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qmtgan.bench.records import (KERAS_BASELINE, NATIVE_RUNNER, Config, Timing, error_record,
                                  make_record)
from qmtgan.runtime.backends import BACKENDS
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.names import safe_label
from qmtgan.runtime.scratch import scratch_dir
from qmtgan.runtime.tileset import TileSet

log = logging.getLogger(__name__)


@dataclass
class Plan:
    bundles: list[Path]
    targets: list[str]
    threads: list[int | None]
    hosts: dict[str, str] = field(default_factory=dict)       # board -> user@addr (ssh)
    ssh: dict = field(default_factory=dict)                    # port, identity, options, python, workdir
    rpc: dict = field(default_factory=dict)                    # server | tracker, key, target
    keras_threads: list[int | None] = field(default_factory=lambda: [None])
    native: bool = False                                       # also run TVM modules with qmtg-run


def _manifest(bundle: Path) -> dict:
    """The bundle's verified manifest record; a bundle that fails its checks becomes a record
    that carries the error (its configurations are reported as failed, the rest still run)."""
    from qmtgan.runtime.bundle import load_bundle

    try:
        return dict(load_bundle(bundle).manifest.record)
    except QmtganError as exc:
        return {
            "name": safe_label(bundle.name),
            "backend": "?",
            "precision": "?",
            "_error": str(exc),
        }


def expand(plan: Plan) -> list[tuple[Config, dict]]:
    """Every configuration with its manifest; a TVM module only on a board of its architecture."""
    from qmtgan.targets.registry import board

    configs = [
        (Config("keras-fp32", "", KERAS_BASELINE, "fp32", "host-x86_64", "local", t), {})
        for t in plan.keras_threads
    ]
    seen: set[str] = set()
    for path in plan.bundles:
        m = _manifest(path)
        m["name"] = _unique_name(m, path, seen)
        for target in plan.targets:
            b = board(target)
            if m.get("elf_machine") and m["elf_machine"] != b.arch:
                continue
            where = "ssh" if target in plan.hosts else b.reach.method
            native = [NATIVE_RUNNER] if plan.native and _built_for_a_board(m) else []
            backends = [m.get("backend", "?"), *native]
            for backend in backends:
                for t in plan.threads:
                    configs.append(
                        (
                            Config(
                                m["name"],
                                str(path),
                                backend,
                                str(m.get("precision", "?")),
                                target,
                                where,
                                t or b.tflite_threads,
                            ),
                            m,
                        )
                    )
        if plan.rpc and _built_for_a_board(m):  # TVM's RPC runs a compiled module
            rpc_board = board(plan.rpc.get("target", "host-x86_64"))
            if m.get("elf_machine") in (None, rpc_board.arch):
                configs.append((Config(m["name"], str(path), "tvm", str(m.get("precision", "fp32")),
                                       rpc_board.name, "rpc", None), m))
    return configs


def _built_for_a_board(manifest: dict) -> bool:
    """A module compiled for one CPU (TVM): the C++ runner and TVM RPC can run it."""
    spec = BACKENDS.get(manifest.get("backend"))
    return bool(spec and spec.built_for_a_board)


def _unique_name(manifest: dict, path: Path, seen: set[str]) -> str:
    """The bundle's name, marked when TVM-tuned, and made unique when two folders share it
    (e.g. the demo's int8 bundle that fell back to 16x8 next to a forced full-int8 one)."""
    name = manifest.get("name", path.name) + ("-tuned" if manifest.get("tvm_tuning") else "")
    if name in seen:
        name = f"{name}@{path.parent.name}"
    seen.add(name)
    return name


def _peak(target: str, where: str) -> dict:
    from qmtgan.bench.machine import board_peak, host_peak
    from qmtgan.targets.registry import board

    if where == "qemu":
        return board_peak(None)
    return (
        host_peak()
        if board(target).arch == "x86_64" and where in ("local", "rpc")
        else board_peak(board(target).peak)
    )


def _macs(manifest: dict, cache: dict) -> int:
    from qmtgan.train.models.config import GeneratorConfig
    from qmtgan.train.models.registry import build_generator
    from qmtgan.train.models.summary import conv_macs

    key = json.dumps(manifest["generator"], sort_keys=True)
    if key not in cache:
        cache[key] = conv_macs(
            build_generator(GeneratorConfig.from_dict(manifest["generator"]), batch_size=1)
        )
    return cache[key]


class Harness:
    def __init__(
        self, plan: Plan, model_dir: Path, tiles: TileSet, tiles_file: Path, timing: Timing, work: Path
    ):
        self.plan, self.model_dir, self.tiles, self.tiles_file, self.timing, self.work = (
            plan,
            model_dir,
            tiles,
            tiles_file,
            timing,
            work,
        )
        self.runners: dict[str, object] = {}
        self.float_outputs: np.ndarray | None = None
        self.keras_mean_ms: dict[int | None, float] = {}   # by thread count
        self.macs_cache: dict = {}

    def _runner(self, config: Config):
        key = KERAS_BASELINE if config.backend == KERAS_BASELINE else "rpc" if config.where == "rpc" else \
            f"{config.target}/{config.backend == NATIVE_RUNNER}"
        if key not in self.runners:
            self.runners[key] = self._make_runner(config)
        return self.runners[key]

    def _make_runner(self, config: Config):
        from qmtgan.bench.runners import DeviceRunner, KerasRunner, NativeRunner
        from qmtgan.targets.devices import connect
        from qmtgan.targets.registry import board

        if config.backend == KERAS_BASELINE:
            return KerasRunner(self.model_dir, self.tiles_file)
        if config.where == "rpc":
            from qmtgan.bench.rpc import RpcRunner

            return RpcRunner(
                self.tiles,
                self.plan.rpc.get("server"),
                self.plan.rpc.get("tracker"),
                self.plan.rpc.get("key"),
            )
        workdir = self.plan.ssh.get("workdir") if config.where == "ssh" else str(self.work / config.target)
        device = connect(
            board(config.target),
            self.plan.hosts.get(config.target),
            workdir,
            self.plan.ssh.get("python"),
            self.plan.ssh.get("port"),
            self.plan.ssh.get("identity"),
            tuple(self.plan.ssh.get("options", ())),
        )
        if config.backend == NATIVE_RUNNER:
            return NativeRunner(device, self.tiles_file, self.work)
        return DeviceRunner(device, self.tiles_file)

    def _keras_ms(self, config: Config) -> float | None:
        """The baseline with the same thread count when it ran, else the first one."""
        if config.threads in self.keras_mean_ms:
            return self.keras_mean_ms[config.threads]
        return next(iter(self.keras_mean_ms.values()), None)

    def run_one(self, config: Config, manifest: dict, keep_outputs: Path | None) -> dict:
        from qmtgan.targets.registry import board

        try:
            if manifest.get("_error"):
                raise QmtganError(manifest["_error"])  # load_bundle's message names the bundle
            expected = tuple(self.tiles.reference.shape)
            probe, predicted = self._runner(config).run(config, self.timing, expected)
            if config.backend == KERAS_BASELINE and self.float_outputs is None:
                self.float_outputs = predicted
            generator = (
                manifest.get("generator")
                or json.loads((self.model_dir / "model.json").read_text())["generator"]
            )
            generator = {**generator, "patch_size": self.tiles.tile}
            model_file = Path(config.bundle) / manifest["model_file"] if manifest else None
            record = make_record(
                config,
                probe,
                predicted,
                self.tiles,
                self.float_outputs,
                _macs({"generator": generator}, self.macs_cache),
                _peak(config.target, config.where),
                model_file.stat().st_size if model_file else None,
                self._keras_ms(config),
            )
            budget = board(config.target).memory_budget_mb or None
            record["memory_budget_mb"] = budget
            record["within_memory_budget"] = (record["peak_rss_mb"] <= budget
                                              if budget and record["peak_rss_mb"] is not None else None)
            if config.backend == KERAS_BASELINE:
                self.keras_mean_ms[config.threads] = record["latency_ms"]["mean"]
                record["speedup_vs_keras"] = 1.0
            if keep_outputs:
                keep_outputs.mkdir(parents=True, exist_ok=True)
                name = f"{config.name}-{config.target}-{config.where}-t{config.threads or 0}.npy"
                np.save(keep_outputs / name, predicted, allow_pickle=False)
                record["outputs_file"] = str(keep_outputs / name)
            return record
        except QmtganError as exc:
            return error_record(config, str(exc), exc.detail)
        except Exception as exc:  # a broken configuration must not stop the matrix
            return error_record(config, f"{type(exc).__name__}: {exc}")


def run_bench(plan: Plan, model_dir: Path, pair_dir: Path, tile_count: int, timing: Timing, out: Path,
              keep_outputs: bool = False, repeat: int = 1) -> list[dict]:
    """The matrix `repeat` times over (pass 2 onwards labelled so), then one report."""
    from tqdm import tqdm

    from qmtgan.bench.report import write_report
    from qmtgan.runtime.tileset import sample_tiles, save_tiles
    from qmtgan.train.pair import load_pair

    configs = expand(plan)
    tiles_sizes = {m["tile_size"] for _, m in configs if m and not m.get("_error")}
    if len(tiles_sizes) > 1:
        raise QmtganError(
            f"the bundles use different tile sizes {sorted(tiles_sizes)}; bench one size at a time"
        )
    tile = (
        tiles_sizes.pop()
        if tiles_sizes
        else json.loads((model_dir / "model.json").read_text())["generator"]["patch_size"]
    )
    reference, target, _, _ = load_pair(pair_dir)
    tiles = sample_tiles(reference.data, target.data, tile, tile_count)
    records = []
    with scratch_dir(prefix="qmtgan-bench-") as tmp:
        tiles_file = save_tiles(Path(tmp) / "tiles.npz", tiles)
        harness = Harness(plan, model_dir, tiles, tiles_file, timing, Path(tmp))
        bar = tqdm([(p, c, m) for p in range(1, repeat + 1) for c, m in configs], desc="bench", unit="config")
        for matrix_pass, config, manifest in bar:
            bar.set_postfix_str(config.label[:60])
            record = harness.run_one(config, manifest, out / "outputs" if keep_outputs else None)
            record["pass"] = matrix_pass
            if matrix_pass > 1:
                record["label"] = f"{record['label']} (pass {matrix_pass})"
            if record["status"] != "ok":
                log.info(f"FAILED {config.label}: {record['error']}")
            records.append(record)
    write_report(
        out,
        records,
        {
            "tile": tile,
            "tiles": len(tiles),
            "timing": timing.__dict__,
            "pair": str(pair_dir),
            "model": str(model_dir),
        },
    )
    return records
