"""`qmtgan baselines` (and the demo's rate-distortion section): baselines, generators and hybrids
on every pair, the averaged table and plot, and a plain verdict of where the generator wins."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from qmtgan.rd.baselines import run_baselines
from qmtgan.rd.rate import candidates, generator_points
from qmtgan.rd.points import PairData, RDPoint
from qmtgan.rd.report import average, write_report
from qmtgan.runtime.errors import QmtganError
from qmtgan.workers import worker_pool

log = logging.getLogger(__name__)

RATE_SLACK = 1.05  # a point counts "at" a rate when within 5 % above it, the rate-control tolerance


def runs_by_pair(pair_dirs: list[Path], model_dirs: list[Path]) -> dict[Path, list[Path]]:
    """Each run goes with the pair whose files it was trained on (sha256 in model.json)."""
    digests = {}
    for p in pair_dirs:
        digests[json.dumps(json.loads((p / "pair.json").read_text())["sha256"], sort_keys=True)] = p
    out: dict[Path, list[Path]] = {p: [] for p in pair_dirs}
    for run in model_dirs:
        data = json.loads((run / "model.json").read_text()).get("data", {})
        key = json.dumps(data.get("sha256"), sort_keys=True)
        if key not in digests:
            raise QmtganError(f"{run} was not trained on any of the given pairs")
        out[digests[key]].append(run)
    return out


def pair_points(pair_dir: Path, runs: list[Path], rates: list[float], bits: tuple[int, ...],
                part: str, project_pixels: int | None = None,
                methods: tuple[str, ...] = ("symmetric",)) -> tuple[list[RDPoint], list[str]]:
    """One pair's baseline points (part "baselines") or generator and hybrid points ("generators"),
    and what could not be computed."""
    pair = PairData.load(pair_dir)
    if part == "baselines":
        log.info(f"pair {pair.name} ({pair.preset or 'given'}): baselines")
        return run_baselines(pair, rates)
    log.info(f"pair {pair.name}: {len(runs)} generator(s) x {len(bits)} bit widths, hybrids at {rates}")
    try:
        cands = [c for m in methods for c in candidates(runs, bits, pair, 0, m)
                 if m == methods[0] or c.bits != 32]  # float32 is the same for every method
        return generator_points(pair, cands, rates, project_pixels)
    except QmtganError as exc:
        log.info(f"  generators: not computed: {exc}")
        return [], [f"{pair.name}: generators: {exc}"]


def rd_report(pair_dirs: list[Path], model_dirs: list[Path], rates: list[float], bits: tuple[int, ...],
              out: Path, project_pixels: int | None = None,
              methods: tuple[str, ...] = ("symmetric",)) -> dict:
    """Each pair's baselines and generators run as separate jobs in worker processes (JPEG2000
    coding is single-threaded), at most one per core. With ``project_pixels``, the hybrids are
    also projected to a scene of that many pixels."""
    jobs = [(pair, runs, part) for pair, runs in runs_by_pair(pair_dirs, model_dirs).items()
            for part in ("baselines", "generators") if part == "baselines" or runs]
    workers = min(len(jobs), os.cpu_count() or 1)
    points: list[RDPoint] = []
    errors: list[str] = []
    if workers <= 1:
        results = [pair_points(p, r, rates, bits, part, project_pixels, methods) for p, r, part in jobs]
    else:
        with worker_pool(workers) as pool:
            futures = [pool.submit(pair_points, p, r, rates, bits, part, project_pixels, methods)
                       for p, r, part in jobs]
            results = [f.result() for f in futures]
    for got, errs in results:
        points += got
        errors += errs
    context = {"rates": rates, "bits": list(bits), "methods": list(methods),
               "pairs": [str(p) for p in pair_dirs],
               "models": [str(m) for m in model_dirs]}
    context["verdict"] = verdict(average(points), rates)
    return write_report(out, points, errors, context)


def _best(rows: list[dict], family: str, rate: float) -> dict | None:
    inside = [r for r in rows if r["family"] == family and r["bpp"] <= rate * RATE_SLACK]
    return max(inside, key=lambda r: r["snr_db"]) if inside else None


def _at(rows: list[dict], family: str, rate: float) -> dict | None:
    near = [r for r in rows if r["family"] == family and abs(r["bpp"] / rate - 1) <= RATE_SLACK - 1]
    return max(near, key=lambda r: r["snr_db"]) if near else None


def verdict(rows: list[dict], rates: list[float]) -> list[str]:
    """One line per comparison the report promises, with the margin in dB."""
    lines = []
    linear = next((r for r in rows if r["family"] == "linear"), None)
    gens = [r for r in rows if r["family"] == "generator"]
    if not gens:
        return ["No generator was given: baselines only."]
    best_gen = max(gens, key=lambda r: r["snr_db"])
    if linear:
        lines.append(_line("generator alone (best)", best_gen, "linear predictor", linear))
    spatial = next((r for r in rows if r["family"] == "linear-3x3"), None)
    if spatial:
        lines.append(_line("generator alone (best)", best_gen, "3x3 linear predictor", spatial))
    for rate in rates:
        gen, hyb = _best(rows, "generator", rate), _best(rows, "hybrid", rate)
        for family, name, ours, what in (
            ("jpeg2000", "JPEG2000 of the target", gen, "best generator"),
            ("linear+jpeg2000", "linear + JPEG2000 residual", hyb, "best hybrid"),
            ("linear-3x3+jpeg2000", "3x3 linear + JPEG2000 residual", hyb, "best hybrid"),
            ("klt+jpeg2000", "KLT + JPEG2000 of the target", hyb, "best hybrid"),
            ("linear-3x3+klt+jpeg2000", "3x3 linear + KLT + JPEG2000 residual", hyb, "best hybrid"),
        ):
            theirs = _at(rows, family, rate)
            if theirs:
                lines.append(_line(f"at {rate:g} bpp, {what}", ours, name, theirs))
    return lines


def _line(what: str, ours: dict | None, name: str, theirs: dict) -> str:
    if ours is None:
        return f"- {what}: none fits the rate; {name} {theirs['snr_db']:.2f} dB (loses)"
    margin = ours["snr_db"] - theirs["snr_db"]
    word = "wins" if margin > 0 else "loses"
    return (f"- {what} ({ours['label']}, {ours['bpp']:.4f} bpp): {ours['snr_db']:.2f} dB vs {name} "
            f"{theirs['snr_db']:.2f} dB ({theirs['bpp']:.4f} bpp): {word} by {abs(margin):.2f} dB")
