"""`qmtgan convert`: every artifact of a trained generator as a deployment bundle, each
measured at conversion time on the scene's tiles with its real runtime: SNR against the Keras
float model and against the true target, latency per tile."""

from __future__ import annotations

import logging
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from qmtgan import __version__
from qmtgan.convert.artifacts import Artifact, Int8Context, measure_bytes
from qmtgan.convert.formats import REGISTRY, Format
from qmtgan.runtime import metrics
from qmtgan.runtime.backends import BACKENDS, load_backend
from qmtgan.runtime.atomic import atomic_dir
from qmtgan.runtime.bundle import write_bundle
from qmtgan.runtime.infer import run_scene, run_tiles
from qmtgan.runtime.names import plain_name
from qmtgan.runtime.scratch import scratch_dir
from qmtgan.runtime.tileset import TileSet, load_tiles, save_tiles, smoke_tiles

log = logging.getLogger(__name__)

SMOKE_FILE = "smoke.npz"
SMOKE_SHARE = 0.05


@dataclass
class Measured:
    snr_vs_float_db: float
    snr_vs_target_db: float
    lmse_vs_target: float
    mean_tile_s: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def tool_versions() -> dict:
    from qmtgan.runtime.backends import BACKENDS
    from qmtgan.runtime.probe import package_versions

    runtimes = [p for b in BACKENDS.values() for p in b.reported]
    return {"qmtgan": __version__, "python": platform.python_version(),
            **package_versions(("tensorflow-cpu", "tensorflow", "onnx", "tf2onnx", "numpy", *runtimes))}


class Measurer:
    """Runs backends over the pair's reference with the same tiling as the float baseline."""

    def __init__(self, reference, target, norm, tile: int, keras_backend, overlap: int):
        self.reference, self.target, self.norm, self.tile, self.overlap = (
            reference,
            target,
            norm,
            tile,
            overlap,
        )
        self.valid = reference.valid & target.valid
        self.float_out, lat = run_scene(keras_backend, reference.data, norm, tile, overlap)
        self.baseline = self._record(self.float_out, lat)

    def _record(self, out: np.ndarray, lat: list[float]) -> Measured:
        return Measured(metrics.snr_db(self.float_out, out, self.valid),
                        metrics.snr_db(self.target.data, out, self.valid),
                        metrics.lmse(self.target.data, out, self.valid), float(np.mean(lat[1:] or lat)))

    def measure(self, backend) -> Measured:
        return self._record(*run_scene(backend, self.reference.data, self.norm, self.tile, self.overlap))


def smoke_record(backend, smoke: TileSet, norm, source: str) -> dict:
    """The SNR a board must reproduce on the bundle's own smoke tiles (`qmtgan flash`)."""
    out, _ = run_tiles(backend, smoke.normalized(norm))
    return {
        "file": SMOKE_FILE,
        "tiles": len(smoke),
        "snr_db": smoke.scores(TileSet.denormalized(out, norm))["snr_db"],
        "measured_with": source,
    }


@dataclass
class Graphs:
    """The deploy graph with the trained weights, and the one int8 formats are built from: the
    same graph with the kernels of the layers the payload keeps in float (the full-resolution
    prediction path) rounded to the int8 grid with error compensation."""
    float: object
    int8: object
    rounded: list[str]

    def for_format(self, fmt: Format):
        return self.int8 if fmt.int8_weights else self.float


def deploy_graphs(model, representative: np.ndarray) -> Graphs:
    from qmtgan.convert.deploy_graph import deploy_graph
    from qmtgan.convert.int8_rounding import round_convolutions
    from qmtgan.quantize.policy import FLOAT_LAYERS

    int8 = deploy_graph(model)
    rounded = round_convolutions(int8, representative, list(FLOAT_LAYERS))
    return Graphs(deploy_graph(model), int8, rounded)


def calibration_set(tiles: np.ndarray, limit: int) -> np.ndarray:
    """Every tile of the scene's grid, or `limit` of them drawn at random (seeded)."""
    order = np.random.default_rng(0).permutation(len(tiles))
    return tiles[np.sort(order[:limit])]


def build_bundles(run_dir: Path, pair_dir: Path, out_dir: Path, formats: list[str], tile: int,
                  payload: Path | None = None, int8_threshold_db: float = 1.0, overlap: int = 0,
                  calibration_tiles: int = 32, tuning=None,
                  explain_int8: bool = False) -> list[dict]:
    from tqdm import tqdm

    from qmtgan.convert.export import deployable_generator
    from qmtgan.train.keras_backend import KerasBackend
    from qmtgan.runtime.tiling import PatchGrid
    from qmtgan.train.pair import load_pair

    pair = load_pair(pair_dir)
    reference, target, pair_meta = pair.reference, pair.target, pair.meta
    model, cfg, norm, source = deployable_generator(run_dir, tile, payload)
    grid = PatchGrid(*reference.shape, tile)
    representative = calibration_set(grid.cut(norm.forward(reference.data)), calibration_tiles)
    keras = KerasBackend(model)
    measurer = Measurer(reference, target, norm, tile, keras, overlap)
    graphs = deploy_graphs(model, representative)
    # the smoke crop's DN fit in SMOKE_SHARE of an int8 model (about one byte per parameter)
    smoke = smoke_tiles(reference.data, target.data, tile, int(SMOKE_SHARE * model.count_params()))
    with scratch_dir() as tmp:
        saved = save_tiles(Path(tmp) / SMOKE_FILE, smoke)
        smoke, smoke_bytes = load_tiles(saved), saved.read_bytes()  # exactly what a board will load
    smoke_float = smoke_record(keras, smoke, norm, "keras-fp32 (the module cannot run on the build host)")
    keras_m = measurer.baseline
    log.info(
        f"Keras float on {len(grid.patches)} tiles of {tile}: "
        f"SNR vs target {keras_m.snr_vs_target_db:.2f} dB, "
        f"{keras_m.mean_tile_s * 1000:.0f} ms/tile"
    )
    ctx = Int8Context(representative, lambda kind, blob: measure_bytes(kind, blob, measurer.measure),
        keras_m.snr_vs_target_db, int8_threshold_db, explain_int8)
    common = {
        "tile_size": tile,
        "generator": cfg.to_dict(),
        "normalization": norm.to_dict(),
        "weights": source,
        "data": {"sha256": pair_meta["sha256"]},
        "graph": GRAPH_RECORD,
        "calibration": {
            "tiles": len(representative),
            "of": len(grid.patches),
            "int8_rounded_layers": graphs.rounded,
        },
    }
    records = [{"name": "keras-fp32", "backend": "keras", "size_bytes": None, **keras_m.to_dict()}]
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in tqdm(formats, desc="convert", unit="artifact"):
        fmt = REGISTRY[name]
        art = fmt.make(graphs.for_format(fmt), ctx, tuning)
        records.append(_one_bundle(fmt, art, measurer, keras_m, out_dir, common, norm, tile, cfg.bands,
                                   (smoke, smoke_bytes, smoke_float)))
    return records


# how the exported graph differs from the trained Keras model (same function in float)
GRAPH_RECORD = {"transposed_convolution": "sub-pixel (phase convolutions + depth-to-space)",
                "normalization": "centred before scaled"}


def write_reports(bundle: Path, reports: dict[str, bytes]) -> str | None:
    """A bundle's diagnostics in BUNDLE.reports/ beside it (never in the bundle, which is what
    is flashed); an older reports folder of the same bundle goes."""
    folder = bundle.with_name(bundle.name + ".reports")
    if not reports:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    with atomic_dir(folder) as tmp:
        for name, data in reports.items():
            (tmp / plain_name(name, "report file")).write_bytes(data)
    return str(folder)


def _one_bundle(
    fmt: Format,
    art: Artifact,
    measurer: Measurer,
    keras_m: Measured,
    out_dir: Path,
    common: dict,
    norm,
    tile: int,
    bands: int,
    smoke_parts,
) -> dict:
    smoke, smoke_bytes, smoke_float = smoke_parts
    kind, target = fmt.backend, fmt.target
    manifest = {"name": fmt.name, "backend": kind, "precision": art.precision, "target": target,
                "model_file": art.filename, **common,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "tool_versions": tool_versions(), **art.manifest}
    files = {art.filename: art.blob, SMOKE_FILE: smoke_bytes}
    record = {"name": fmt.name, "backend": kind, "precision": art.precision, "size_bytes": len(art.blob),
              "target": target}
    foreign = False
    if BACKENDS[kind].built_for_a_board:
        from qmtgan.targets.registry import board

        manifest["tvm_target"] = board(target).tvm_target
        foreign = board(target).arch != platform.machine()
    with scratch_dir() as tmp:
        path = Path(tmp) / art.filename
        path.write_bytes(art.blob)
        if BACKENDS[kind].built_for_a_board:
            from qmtgan.convert.tvm_build import elf_machine

            manifest["elf_machine"] = elf_machine(path)
        if foreign:
            log.info(
                f"{fmt.name}: built for {manifest['elf_machine']}; measure it on the board "
                f"(not this {platform.machine()} host)"
            )
            # not loadable here: its I/O is the float tiles it was built for
            manifest.update(BACKENDS[kind].float_io(tile, bands), measured=None, smoke=smoke_float)
            measured = None
        else:
            backend = load_backend(kind, path)
            measured = art.measured or measurer.measure(backend)
            manifest["measured"] = {"keras_float": keras_m.to_dict(), fmt.name: measured.to_dict()}
            manifest.update(backend.io_record(tile, bands))
            manifest["smoke"] = smoke_record(backend, smoke, norm, f"{fmt.name} on {platform.machine()}")
    dest = write_bundle(out_dir / fmt.name, manifest, files)
    record["reports"] = write_reports(dest, art.reports)
    nan = float("nan")
    return {**record, "bundle": str(dest),
            **(measured.to_dict() if measured else
               {"snr_vs_float_db": nan, "snr_vs_target_db": nan, "lmse_vs_target": nan, "mean_tile_s": nan})}
