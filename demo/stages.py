"""The demo's stages, in pipeline order: each reads what earlier ones left in the `DemoRun`
and adds its own results. `demo/pipeline.py` runs them and times each."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qmtgan.demo.config import DEMO_BITS, DEMO_PAIRS, DEMO_RATES, DEMO_VAL_EVERY
from qmtgan.runtime.atomic import write_text_atomic
from qmtgan.runtime.tiling import PATCH_SIZE
from qmtgan.train.presets import DEMO_GENERATOR, DEMO_TRAIN

log = logging.getLogger(__name__)


@dataclass
class DemoRun:
    out: Path
    epochs: int
    seed: int
    results: dict = field(default_factory=dict)   # each stage's part of the report

    @property
    def pair_dirs(self) -> list[Path]:
        return [self.out / name for name, _, _ in DEMO_PAIRS]

    @property
    def run_dirs(self) -> list[Path]:
        return [self.out / name.replace("pair", "model") for name, _, _ in DEMO_PAIRS]


def prepare(run: DemoRun) -> None:
    from qmtgan.train.ingest import read_scene, sample_scene_dir
    from qmtgan.train.pair import write_pair
    from qmtgan.train.simulate import preset_config, simulate_target

    scene = read_scene(sample_scene_dir())
    for (name, preset, pair_seed), d in zip(DEMO_PAIRS, run.pair_dirs):
        target, simulation = simulate_target(scene, preset_config(preset, run.seed + pair_seed))
        write_pair(d, scene, target, PATCH_SIZE, simulation, "bilinear")


def train(run: DemoRun) -> None:
    from qmtgan.rd.rate import generator_label
    from qmtgan.train.models.registry import default_config
    from qmtgan.train.pair import load_pair
    from qmtgan.train.training import TrainConfig

    gcfg = default_config("multitempgan", patch_size=PATCH_SIZE, **DEMO_GENERATOR)
    tcfg = TrainConfig(epochs=run.epochs, seed=run.seed, val_every=DEMO_VAL_EVERY, **DEMO_TRAIN)
    patches = len(load_pair(run.pair_dirs[0]).patches["patches"])
    log.info(
        f"      {generator_label(gcfg)}, {run.epochs} epochs on {patches} patches, one generator per pair"
    )
    start = time.perf_counter()
    trained = train_pairs(list(zip(run.pair_dirs, run.run_dirs)), gcfg, tcfg)
    run.results.update(generator=gcfg.to_dict(), history=trained[0][0],
                       training={"epochs": run.epochs, "wall_s": time.perf_counter() - start,
                                 "pair_wall_s": [w for _, w in trained]})


def train_pairs(jobs: list[tuple[Path, Path]], gcfg, tcfg) -> list[tuple[list[dict], float]]:
    """`train_or_reuse` on every (pair folder, run folder), the pairs side by side in
    single-threaded worker processes, one more than there are cores (a training step of the small
    generator gains less from a second thread than a second process gains from a second core);
    one progress bar counts the steps of all of them. With a GPU, one pair after the other in this
    process: each training takes the whole GPU. Returns each job's (history, wall s)."""
    import multiprocessing
    import os
    from concurrent.futures import FIRST_EXCEPTION, wait

    from tqdm import tqdm

    from qmtgan.train.device import gpus
    from qmtgan.train.pair import load_pair
    from qmtgan.workers import worker_pool

    if len(jobs) == 1 or gpus():
        return [train_or_reuse(pair, run, gcfg, tcfg) for pair, run in jobs]
    steps = sum(tcfg.epochs * len(load_pair(p).patches["patches"]) for p, _ in jobs)
    with multiprocessing.get_context("spawn").Manager() as manager, \
            worker_pool(min(len(jobs), (os.cpu_count() or 1) + 1)) as pool, \
            tqdm(total=steps, unit="step", desc="train", dynamic_ncols=True) as bar:
        ticks = manager.Queue()
        futures = [pool.submit(_train_job, p, r, gcfg, tcfg, ticks) for p, r in jobs]
        while True:
            done, _ = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
            bar.update(_drain(ticks))
            failed = [f.exception() for f in done if f.exception() is not None]
            if failed:
                raise failed[0]
            if len(done) == len(futures):
                return [f.result() for f in futures]


def _train_job(pair_dir: Path, run_dir: Path, gcfg, tcfg, ticks) -> tuple[list[dict], float]:
    return train_or_reuse(pair_dir, run_dir, gcfg, tcfg, progress=False, on_step=lambda: ticks.put(1))


def _drain(queue) -> int:
    import queue as queues

    n = 0
    while True:
        try:
            queue.get_nowait()
        except queues.Empty:
            return n
        n += 1


def train_or_reuse(pair_dir: Path, run_dir: Path, gcfg, tcfg, progress: bool = True,
                   on_step=None) -> tuple[list[dict], float]:
    """Train, or reuse a finished run with the same configuration and data, or resume one."""
    import shutil

    from qmtgan.train.model_io import load_model_meta
    from qmtgan.train.pair import data_identity, load_pair
    from qmtgan.train.training import train

    reference, target, meta, _ = load_pair(pair_dir)
    if (run_dir / "model.json").exists():
        old = load_model_meta(run_dir)
        if (old["generator"] == gcfg.to_dict() and old["training"]["config"] == asdict(tcfg)
                and old["data"]["sha256"] == meta["sha256"]):
            log.info("      reusing the finished run in " + str(run_dir))
            return _read_log(run_dir / "train_log.csv"), old["training"]["wall_s"]
        shutil.rmtree(run_dir)
    resume = (run_dir / "checkpoints" / "latest").exists()
    result = train(reference, target, run_dir, gcfg, tcfg, data_identity(pair_dir, meta), resume=resume,
                   progress=progress, on_step=on_step)
    return result["history"], result["wall_s"]


def evaluate(run: DemoRun) -> None:
    from qmtgan.train.evaluate import evaluate as evaluate_run
    from qmtgan.train.pair import load_pair

    pair = load_pair(run.pair_dirs[0])
    run.results["reconstruction"] = evaluate_run(
        run.run_dirs[0], run.pair_dirs[0], run.out / "reconstruction.tif"
    )
    run.results["baseline_reference_as_target_snr_db"] = _identity_snr(pair.reference, pair.target)


def quantize(run: DemoRun) -> None:
    from qmtgan.quantize.configs import ALL_METHODS, SWEEP_BITS
    from qmtgan.quantize.sweep import best_row, run_sweep

    rows = run_sweep(
        [run.run_dirs[0]], [run.pair_dirs[0]], run.out / "quantize", ALL_METHODS, list(SWEEP_BITS), run.seed
    )
    by_label = {r.policy.label: r for r in rows if r.policy is not None}
    best = best_row(rows)
    run.results["quantization"] = {
        label: _summary(by_label[label])
        for label in ("float32", "symmetric 8", "symmetric 6", "stochastic 8")
    } | {"best (Eq. 3)": {**_summary(best), "label": best.policy.label + " (smallest d)"}}


def payload(run: DemoRun) -> None:
    from qmtgan.train.pair import load_pair

    pair = load_pair(run.pair_dirs[0])
    run.results["payload"] = _payload_round_trip(run.out, run.run_dirs[0], run.pair_dirs[0], pair.reference,
                                                 pair.target, pair.valid)


def convert(run: DemoRun) -> None:
    from qmtgan.convert.build import build_bundles
    from qmtgan.convert.formats import FORMATS
    from qmtgan.convert.report import artifact_table

    # TVM modules are built by `qmtgan convert tvm` (untuned, timing one on the scene takes minutes)
    formats = [f for f in FORMATS if not f.startswith("tvm-")]
    artifacts = build_bundles(
        run.run_dirs[0], run.pair_dirs[0], run.out / "bundles", formats, PATCH_SIZE, explain_int8=True
    )
    write_text_atomic(run.out / "bundles" / "artifacts.md", artifact_table(artifacts) + "\n")
    run.results["artifacts"] = artifacts


def rate_distortion(run: DemoRun) -> None:
    from qmtgan.rd.workflow import rd_report

    rd = rd_report(run.pair_dirs, run.run_dirs, list(DEMO_RATES), DEMO_BITS, run.out / "rd")
    run.results["rate_distortion"] = {"verdict": rd["context"]["verdict"], "average": rd["average"],
                                      "pairs": rd["pairs"], "errors": rd["errors"]}


def previews(run: DemoRun) -> None:
    from qmtgan.demo.report import plot_history
    from qmtgan.runtime.scene import Scene
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.pair import load_pair
    from qmtgan.train.preview import write_previews

    pair = load_pair(run.pair_dirs[0])
    recon = read_scene(run.out / "reconstruction.tif")
    write_previews(run.out / "preview", {"reference": pair.reference, "target": pair.target,
                                         "reconstruction": Scene(recon.data, recon.crs, recon.transform)},
                   pair.valid, pair=("target", "reference"))
    plot_history(run.results["history"], run.out / "training_curve.png")


def _summary(row) -> dict:
    return {"label": row.policy.label, "snr_db": row.snr_db, "lmse": row.lmse,
            "bpp_tile": row.accounting["bpp_tile"], "bpp_scene": row.bpp_scene,
            "memory_mb": row.accounting["memory_mb"], "distance": row.distance}


def _payload_round_trip(out: Path, run_dir: Path, pair_dir: Path, reference, target, valid) -> dict:
    from qmtgan.rd.encode import encode_pair
    from qmtgan.runtime.decode import decode_payload
    from qmtgan.runtime.raster import write_geotiff
    from qmtgan.runtime.scene import Scene
    from qmtgan.quantize.policy import Policy
    from qmtgan.runtime.metrics import snr_db
    from qmtgan.train.ingest import read_scene

    qmtg = out / "target.qmtg"
    info = encode_pair(pair_dir / "reference.tif", pair_dir / "target.tif", qmtg, Policy("symmetric", bits=8),
                       run_dir, epochs=1, seed=0)
    pred = decode_payload(qmtg, reference)
    decoded = write_geotiff(
        out / "target_decoded.tif", Scene(pred, reference.crs, reference.transform), valid=valid
    )
    snr = snr_db(target.data, read_scene(decoded).data, valid)
    return {"file": str(qmtg), "bytes": info["file_bytes"], "bpp_file": info["bpp_file"],
            "bpp_eq1": info["bpp_eq1"], "header_bytes": info["header_bytes"], "decoded_snr_db": snr}


def _identity_snr(reference, target) -> float:
    from qmtgan.runtime.metrics import snr_db

    return snr_db(target.data, reference.data, reference.valid & target.valid)


def _read_log(path: Path) -> list[dict]:
    import csv

    with open(path) as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(fh)]
