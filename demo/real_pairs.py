"""`qmtgan real`: the codec against what a user would fly instead, on real Sentinel-2 pairs.

A root folder holds one folder per place, OSCD's layout: `CITY/imgs_1` (the earlier date, the
reference), `CITY/imgs_2` (the later date, the target), one GeoTIFF per band, and optionally
`CITY/dates.txt` (`date_1: YYYYMMDD`, `date_2: ...`). Each pair is prepared (the target
resampled onto the reference's grid), a generator is fitted to it with the demo's
configuration, and the rate-distortion stage runs every baseline, generator and hybrid on all
pairs, each hybrid also projected to the paper's scene size; the PTQ sweep quantizes every
pair's generator (Table 2, averaged over the pairs). `demo/real_report.py` turns the points
into the per-pair and mean tables, the break-even scene size and the plot.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.tiling import PATCH_SIZE

log = logging.getLogger(__name__)

# The paper's pairs: whole tiles of 441 patches of 512 x 512 pixels.
PAPER_PATCHES = 441
PAPER_PIXELS = PAPER_PATCHES * PATCH_SIZE * PATCH_SIZE
REAL_RATES = (0.05, 0.11, 0.15, 0.45)
REAL_BITS = (4, 8)
# The PTQ sweep on every pair's generator: the paper's Table 2 methods and widths, 2 bits (where
# the paper says quantization collapses), per-channel scales and the non-uniform codebooks.
SWEEP_METHODS = ("symmetric", "stochastic", "asymmetric", "integer", "kmeans", "pwl")
SWEEP_BITS = (2, 3, 4, 5, 6, 8)
OSCD_LICENCE = ("Contains modified Copernicus Sentinel data (OSCD: Caye Daudt et al., \"Urban Change "
                "Detection for Multispectral Earth Observation Using Convolutional Neural Networks\", "
                "IEEE IGARSS 2018)")


@dataclass(frozen=True)
class RealPair:
    city: str
    reference: Path
    target: Path
    reference_date: str
    target_date: str


def _dates(city_dir: Path) -> tuple[str, str]:
    found = {}
    path = city_dir / "dates.txt"
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            m = re.fullmatch(r"\s*date_([12])\s*:\s*(\d{4})(\d{2})(\d{2})\s*", line)
            if m:
                found[m.group(1)] = f"{m.group(2)}-{m.group(3)}-{m.group(4)}"
    return found.get("1", "unknown"), found.get("2", "unknown")


def discover(root: Path, cities: list[str] | None = None) -> list[RealPair]:
    """The pairs under `root` (every folder with imgs_1 and imgs_2), or one clear error saying
    where the data should be and how to get it."""
    root = Path(root)
    how = ("expected one folder per place with imgs_1/ (reference) and imgs_2/ (target) band GeoTIFFs, as "
           "in the OSCD dataset (Onera Satellite Change Detection, Caye Daudt et al. 2018); see the README, "
           "'Real pairs', and pass --pairs ROOT")
    if not root.is_dir():
        raise QmtganError(f"no real pairs: {root} is not a folder ({how})")
    pairs = [RealPair(d.name, d / "imgs_1", d / "imgs_2", *_dates(d)) for d in sorted(root.iterdir())
             if (d / "imgs_1").is_dir() and (d / "imgs_2").is_dir()]
    if cities:
        unknown = sorted(set(cities) - {p.city for p in pairs})
        if unknown:
            raise QmtganError(f"{root}: no pair for {', '.join(unknown)} (found: "
                              f"{', '.join(p.city for p in pairs) or 'none'})")
        pairs = [p for p in pairs if p.city in cities]
    if not pairs:
        raise QmtganError(f"no real pairs under {root} ({how})")
    return pairs


def licence_line(root: Path) -> str:
    """The dataset's licence line from its README when it has one, else OSCD's."""
    readme = Path(root) / "README.md"
    if readme.is_file():
        for line in readme.read_text(errors="replace").splitlines():
            if line.lower().startswith(("licence", "license")):
                return line.strip()
    return OSCD_LICENCE


def prepare(pair: RealPair, dest: Path) -> Path:
    """The pair folder (the target on the reference's grid), reused when already made from
    the same sources."""
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.pair import align_to_reference, write_pair

    if (dest / "pair.json").is_file():
        meta = json.loads((dest / "pair.json").read_text())
        if meta.get("real_pair") == asdict_str(pair):
            return dest
    reference = read_scene(pair.reference)
    target = align_to_reference(reference, read_scene(pair.target))
    write_pair(dest, reference, target, PATCH_SIZE, None, "bilinear", extra={"real_pair": asdict_str(pair)})
    return dest


def asdict_str(pair: RealPair) -> dict:
    return {k: str(v) for k, v in asdict(pair).items()}


INT8_FORMATS = ("tflite-int8", "onnx-int8")


def int8_loss(run_dir: Path, pair_dir: Path, out: Path) -> dict:
    """The int8 bundles of a pair's generator, each measured on the whole scene against the
    Keras float model (the convert stage's own measurement): SNR vs the target, and the loss."""
    from qmtgan.convert.build import build_bundles

    records = {r["name"]: r for r in build_bundles(run_dir, pair_dir, out, list(INT8_FORMATS), PATCH_SIZE)}
    float_snr = records["keras-fp32"]["snr_vs_target_db"]
    return {"float_snr_db": float_snr,
            **{name: {"snr_db": records[name]["snr_vs_target_db"], "precision": records[name]["precision"],
                      "loss_db": float_snr - records[name]["snr_vs_target_db"]}
               for name in INT8_FORMATS if name in records}}


def ptq_sweep(run_dirs: list[Path], pair_dirs: list[Path], out: Path, seed: int) -> dict:
    """Table 2 on every pair's generator (quantize/sweep.py, metrics averaged over the pairs,
    each pair kept): the rows a report needs, the paper's ordering, and where the rest is."""
    from qmtgan.quantize.sweep import run_sweep

    run_sweep(run_dirs, pair_dirs, out, list(SWEEP_METHODS), list(SWEEP_BITS), seed)
    table = json.loads((out / "table2.json").read_text())
    keep = ("label", "bits", "bpp_scene", "bpp_file", "snr_db", "patch_snr_db", "per_pair_snr_db")
    return {"report": str(out / "table2.md"), "ordering": table["ordering"], "on_disk": table.get("on_disk"),
            "pair_names": table["context"].get("pair_names", []),
            "rows": [{k: r.get(k) for k in keep} for r in table["rows"]
                     if r["label"] == "float32" or r["label"].split()[0] in SWEEP_METHODS
                     and (r.get("policy") or {}).get("mode") == "uniform"]}


def run_real(root: Path, out: Path, epochs: int, rates: tuple[float, ...], bits: tuple[int, ...],
             cities: list[str] | None = None, seed: int = 0, with_int8: bool = True,
             shared_epochs: int = 0, shared_ngf: int | None = None,
             methods: tuple[str, ...] = ("symmetric",)) -> dict:
    """Prepare, train and measure every pair; write out/rd (the rate-distortion report) and
    out/real.{md,json,png}; return the summary."""
    from tqdm import tqdm

    from qmtgan.demo.config import DEMO_VAL_EVERY
    from qmtgan.train.presets import DEMO_GENERATOR, REAL_TRAIN
    from qmtgan.demo.stages import train_pairs
    from qmtgan.demo.real_report import write_real_report
    from qmtgan.rd.workflow import rd_report
    from qmtgan.train.models.registry import default_config
    from qmtgan.train.training import TrainConfig

    pairs = discover(root, cities)
    timings = {}
    start = time.perf_counter()
    pair_dirs = [prepare(p, out / "pairs" / p.city) for p in tqdm(pairs, desc="prepare", unit="pair")]
    timings["prepare_s"] = time.perf_counter() - start
    gcfg = default_config("multitempgan", patch_size=PATCH_SIZE, **DEMO_GENERATOR)
    tcfg = TrainConfig(epochs=epochs, seed=seed, val_every=DEMO_VAL_EVERY, **REAL_TRAIN)
    run_dirs = [out / "models" / p.city for p in pairs]
    t = time.perf_counter()
    log.info(f"train {', '.join(p.city for p in pairs)}: {epochs} epochs each")
    walls = train_pairs(list(zip(pair_dirs, run_dirs)), gcfg, tcfg)
    trained = {p.city: wall for p, (_, wall) in zip(pairs, walls)}
    timings["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    doc = rd_report(pair_dirs, run_dirs, list(rates), tuple(bits), out / "rd", project_pixels=PAPER_PIXELS,
                    methods=methods)
    timings["rate_distortion_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sweep = ptq_sweep(run_dirs, pair_dirs, out / "sweep", seed)
    timings["sweep_s"] = time.perf_counter() - t
    shared = None
    if shared_epochs and len(pairs) >= 2:
        from qmtgan.demo.real_shared import shared_points

        t = time.perf_counter()
        points, shared = shared_points({p.city: d for p, d in zip(pairs, pair_dirs)}, out / "shared",
                                       list(rates), shared_epochs, seed, shared_ngf)
        doc["points"] += points
        timings["shared_s"] = time.perf_counter() - t
    elif shared_epochs:
        log.info("shared generator: skipped (leaving one city out needs at least two pairs)")
    int8 = {}
    if with_int8:
        t = time.perf_counter()
        int8 = {p.city: int8_loss(run_dir, pair_dir, out / "bundles" / p.city)
                for p, pair_dir, run_dir in zip(pairs, pair_dirs, run_dirs)}
        timings["int8_s"] = time.perf_counter() - t
    sizes = {}
    for p, d in zip(pairs, pair_dirs):
        meta = json.loads((d / "pair.json").read_text())
        sizes[p.city] = f"{meta['height']} x {meta['width']}"
    context = {"root": str(root), "licence": licence_line(root), "pairs": [asdict_str(p) for p in pairs],
               "sizes": sizes,
               "generator": gcfg.to_dict(), "training": {"epochs": epochs, **REAL_TRAIN},
               "train_wall_s": trained, "rates": list(rates), "bits": list(bits), "methods": list(methods),
               "paper_pixels": PAPER_PIXELS, "timings": timings, "int8": int8, "shared": shared,
               "sweep": sweep}
    return write_real_report(out, doc, context)
