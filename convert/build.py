"""`qmtgan convert`: every artifact of a trained generator as a deployment bundle, each
measured at conversion time on the scene's tiles with its real runtime: SNR against the Keras
float model and against the true target, latency per tile."""

from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from qmtgan import __version__
from qmtgan.runtime import metrics
from qmtgan.runtime.bundle import load_bundle, write_bundle
from qmtgan.runtime.infer import run_scene, run_tiles
from qmtgan.runtime.tileset import TileSet, sample_tiles, save_tiles

SMOKE_FILE = "smoke.npz"

TVM_BOARDS = ("host-x86_64", "rpi4", "rpi5", "jetson-nano", "jetson-orin-nano")
FORMATS = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-16x8", "onnx",
           *(f"tvm-{b}" for b in TVM_BOARDS))


@dataclass
class Measured:
    snr_vs_float_db: float
    snr_vs_target_db: float
    lmse_vs_target: float
    mean_tile_s: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def tool_versions() -> dict:
    from qmtgan.runtime.probe import package_versions

    return {"qmtgan": __version__, "python": platform.python_version(),
            **package_versions(("tensorflow-cpu", "tensorflow", "ai-edge-litert", "onnx", "onnxruntime", "tf2onnx",
                                "numpy", "apache-tvm", "apache-tvm-ffi"))}


class Measurer:
    """Runs backends over the pair's reference with the same tiling as the float baseline."""

    def __init__(self, reference, target, norm, tile: int, keras_backend, overlap: int):
        self.reference, self.target, self.norm, self.tile, self.overlap = reference, target, norm, tile, overlap
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
    return {"file": SMOKE_FILE, "tiles": len(smoke), "snr_db": smoke.scores(TileSet.denormalized(out, norm))["snr_db"],
            "measured_with": source}


def _model_bytes(fmt: str, model, representative, tuning=None, info: dict | None = None,
                 log=print) -> tuple[str, bytes]:
    """tuning: a tvm_tune.TuningOptions to MetaSchedule-tune tvm-* modules (its record goes to
    info["tvm_tuning"])."""
    if fmt == "onnx":
        from qmtgan.convert.onnx_export import to_onnx

        return "model.onnx", to_onnx(model)
    if fmt.startswith("tvm-"):
        from qmtgan.convert.onnx_export import to_onnx
        from qmtgan.convert.tvm_build import compile_onnx
        from qmtgan.targets.registry import board

        with tempfile.TemporaryDirectory() as tmp:
            so = Path(tmp) / "model.so"
            if tuning is None:
                compile_onnx(to_onnx(model), tuple(model.inputs[0].shape), board(fmt[4:]), so)
            else:
                from qmtgan.convert.tvm_tune import compile_tuned

                rec = compile_tuned(to_onnx(model), tuple(model.inputs[0].shape), board(fmt[4:]), so, tuning, log)
                if info is not None:
                    info["tvm_tuning"] = rec["tvm_tuning"]
            return "model.so", so.read_bytes()
    from qmtgan.convert.tflite import to_tflite

    return "model.tflite", to_tflite(model, fmt.split("-", 1)[1], representative)


def _io_record(bundle_path: Path, manifest: dict) -> dict:
    """Input/output shape, dtype and quantization as the runtime sees them."""
    if manifest["backend"] == "tvm":
        shape = [1, manifest["tile_size"], manifest["tile_size"], manifest["generator"]["bands"]]
        return {"input": {"shape": shape, "dtype": "float32", "quantization": None},
                "output": {"shape": shape, "dtype": "float32", "quantization": None}}
    backend = load_bundle(bundle_path).backend(threads=1)
    if manifest["backend"] == "tflite":
        rec = {}
        for key, d in (("input", backend.input), ("output", backend.output)):
            rec[key] = {"shape": [int(v) for v in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
                        "quantization": [float(d["quantization"][0]), int(d["quantization"][1])]}
        return rec
    i, o = backend.session.get_inputs()[0], backend.session.get_outputs()[0]
    return {"input": {"shape": i.shape, "dtype": i.type, "quantization": None},
            "output": {"shape": o.shape, "dtype": o.type, "quantization": None}}


def build_bundles(run_dir: Path, pair_dir: Path, out_dir: Path, formats: list[str], tile: int,
                  payload: Path | None = None, int8_threshold_db: float = 1.0, overlap: int = 0,
                  calibration_tiles: int = 8, smoke_tiles: int = 1, log=print, tuning=None) -> list[dict]:
    from tqdm import tqdm

    from qmtgan.convert.export import deployable_generator
    from qmtgan.train.reconstruct import KerasBackend
    from qmtgan.runtime.tiling import PatchGrid
    from qmtgan.train.pair import load_pair

    reference, target, pair_meta, _ = load_pair(pair_dir)
    model, cfg, norm, source = deployable_generator(run_dir, tile, payload)
    grid = PatchGrid(*reference.shape, tile)
    rng = np.random.default_rng(0)
    tiles = grid.cut(norm.forward(reference.data))
    representative = tiles[rng.permutation(len(tiles))[:calibration_tiles]]
    keras = KerasBackend(model)
    measurer = Measurer(reference, target, norm, tile, keras, overlap)
    smoke = sample_tiles(reference.data, target.data, tile, smoke_tiles)
    with tempfile.TemporaryDirectory() as tmp:
        smoke_bytes = save_tiles(Path(tmp) / SMOKE_FILE, smoke).read_bytes()
    smoke_float = smoke_record(keras, smoke, norm, "keras-fp32 (the module cannot run on the build host)")
    keras_m = measurer.baseline
    log(f"Keras float on {len(grid.patches)} tiles of {tile}: SNR vs target {keras_m.snr_vs_target_db:.2f} dB, "
        f"{keras_m.mean_tile_s * 1000:.0f} ms/tile")
    records = [{"name": "keras-fp32", "backend": "keras", "size_bytes": None, **keras_m.to_dict()}]
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt in tqdm(formats, desc="convert", unit="artifact"):
        records.append(_one_bundle(fmt, model, representative, measurer, keras_m, out_dir, cfg, norm, tile,
                                   source, pair_meta, int8_threshold_db, (smoke, smoke_bytes, smoke_float), log,
                                   tuning))
    return records


def _one_bundle(fmt, model, representative, measurer, keras_m, out_dir, cfg, norm, tile, source,
                pair_meta, int8_threshold_db, smoke_parts, log, tuning=None) -> dict:
    smoke, smoke_bytes, smoke_float = smoke_parts
    backend_name = {"onnx": "onnxruntime", "tvm": "tvm"}.get(fmt.split("-", 1)[0], "tflite")
    precision = "fp32" if backend_name != "tflite" else fmt.split("-", 1)[1]
    target = fmt[4:] if backend_name == "tvm" else "host-x86_64"
    tuned: dict = {}
    filename, blob = _model_bytes(fmt, model, representative, tuning, tuned, log)
    manifest = {"name": fmt, "backend": backend_name, "precision": precision, "target": target,
                "model_file": filename, "tile_size": tile, "generator": cfg.to_dict(),
                "normalization": norm.to_dict(), "weights": source,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "data": {"sha256": pair_meta["sha256"]}, "tool_versions": tool_versions(), **tuned}
    dest = out_dir / fmt
    files = {filename: blob, SMOKE_FILE: smoke_bytes}
    write_bundle(dest, manifest, files)
    if backend_name == "tvm":
        from qmtgan.convert.tvm_build import elf_machine
        from qmtgan.targets.registry import board

        manifest["elf_machine"] = elf_machine(dest / filename)
        manifest["tvm_target"] = board(target).tvm_target
        if board(target).arch != platform.machine():
            log(f"{fmt}: built for {manifest['elf_machine']}; measure it on the board (not this {platform.machine()} host)")
            manifest.update(_io_record(dest, manifest), measured=None, smoke=smoke_float)
            write_bundle(dest, manifest, files)
            return {"name": fmt, "backend": backend_name, "precision": precision, "size_bytes": len(blob),
                    "bundle": str(dest), "snr_vs_float_db": float("nan"), "snr_vs_target_db": float("nan"),
                    "lmse_vs_target": float("nan"), "mean_tile_s": float("nan"), "target": target}
    measured = measurer.measure(load_bundle(dest).backend())
    manifest["measured"] = {"keras_float": keras_m.to_dict(), fmt: measured.to_dict()}
    loss = keras_m.snr_vs_target_db - measured.snr_vs_target_db
    if fmt == "tflite-int8" and loss > int8_threshold_db:
        log(f"WARNING: full int8 loses {loss:.2f} dB against float (threshold {int8_threshold_db} dB); "
            "falling back to 16x8 (int16 activations) for this bundle")
        filename, blob = _model_bytes("tflite-16x8", model, representative)
        files[filename] = blob
        manifest.update(precision="16x8 (fallback from int8)",
                        int8_fallback={"reason": f"full int8 lost {loss:.2f} dB > {int8_threshold_db} dB",
                                       "full_int8": measured.to_dict()})
        write_bundle(dest, manifest, files)
        measured = measurer.measure(load_bundle(dest).backend())
        manifest["measured"][fmt] = measured.to_dict()
    manifest.update(_io_record(dest, manifest))
    manifest["smoke"] = smoke_record(load_bundle(dest).backend(), smoke, norm, f"{fmt} on {platform.machine()}")
    write_bundle(dest, manifest, files)
    return {"name": fmt, "backend": backend_name, "precision": manifest["precision"], "size_bytes": len(blob),
            "bundle": str(dest), "target": target, **measured.to_dict()}
