"""The shared generator on real pairs, leave one city out: for each city, a generator trained
on every other city, then that city encoded against it (no weights in its payload) at each
rate, and with no residual. The points join the rate-distortion points of `qmtgan real`
(families "shared" and "shared-hybrid")."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _fold(held: str, pair_dirs: dict[str, Path], run_dir: Path, gcfg, tcfg) -> float:
    """Train (or reuse) the generator of the fold that leaves `held` out; its wall seconds."""
    from dataclasses import asdict

    from qmtgan.train.pair import load_pair
    from qmtgan.train.shared import train_shared

    others = {c: d for c, d in pair_dirs.items() if c != held}
    digests = {c: json.loads((d / "pair.json").read_text())["sha256"] for c, d in others.items()}
    meta_path = run_dir / "model.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if (meta.get("generator") == gcfg.to_dict() and meta["training"]["config"] == asdict(tcfg)
                and meta.get("fold_data") == digests):
            log.info(f"      reusing the shared generator in {run_dir}")
            return meta["training"]["wall_s"]
    pairs = {}
    for city, d in others.items():
        p = load_pair(d)
        pairs[city] = (p.reference, p.target)
    record = train_shared(pairs, run_dir, gcfg, tcfg)
    meta = json.loads(meta_path.read_text())
    meta["fold_data"] = digests  # the exact pair files, so a rerun reuses only a matching fold
    from qmtgan.runtime.atomic import write_text_atomic

    write_text_atomic(meta_path, json.dumps(meta, indent=2))
    return record["training"]["wall_s"]


def shared_points(pair_dirs: dict[str, Path], out: Path, rates: list[float], epochs: int,
                  seed: int = 0, ngf: int | None = None) -> tuple[list[dict], dict]:
    """Every city against the generator of its fold: RD points (as dicts) and the stage's record."""
    from tqdm import tqdm

    from qmtgan.rd.points import PairData, score
    from qmtgan.rd.shared_codec import SharedEncoder, export_shared
    from qmtgan.runtime import payload as fmt
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.shared import SharedModel
    from qmtgan.train.shared import shared_config, shared_train_config

    gcfg, tcfg = shared_config(ngf=ngf), shared_train_config(epochs, seed)
    points, record = [], {"generator": gcfg.to_dict(), "epochs": epochs, "folds": {}, "errors": []}
    for city in tqdm(list(pair_dirs), desc="shared, leave one city out", unit="fold"):
        fold = out / city
        t0 = time.perf_counter()
        train_s = _fold(city, pair_dirs, fold / "run", gcfg, tcfg)
        export_shared(fold / "run", fold / "shared.qmtg")
        shared = SharedModel.read(fold / "shared.qmtg")
        pair = PairData.load(pair_dirs[city])
        encoder = SharedEncoder(pair, shared)
        alone = encoder.prediction()
        extra = {"run": str(fold / "run"), "held_out": city}
        p = score(pair, "shared", "shared generator over the 3x3 linear base, gated", alone.recon,
                  len(fmt.encode(alone.payload)), gate_fraction=alone.gate_fraction,
                  refined_snr_db=alone.refined_snr_db, **extra)
        points.append(p.to_dict())
        fold_record = {"train_s": train_s, "shared_bytes": (fold / "shared.qmtg").stat().st_size,
                       "prediction_snr_db": p.snr_db, "refined_everywhere_snr_db": alone.refined_snr_db,
                       "base_snr_db": alone.base_snr_db, "gate_fraction": alone.gate_fraction, "rates": {}}
        for rate in rates:
            try:
                got = encoder.hybrid(rate)
            except QmtganError as exc:
                record["errors"].append(f"{city}: shared hybrid @ {rate:g}: {exc}")
                continue
            h = score(pair, "shared-hybrid", f"shared generator, gated, + JPEG2000 residual @ {rate:g}",
                      got.recon, len(fmt.encode(got.payload)), rate, gate_fraction=got.gate_fraction,
                      base_snr_db=got.base_snr_db, **extra)
            log.info(f"  {city} @ {rate:g}: {h.snr_db:.2f} dB (base {got.base_snr_db:.2f}), "
                     f"{got.gate_fraction:.0%} of blocks refined")
            points.append(h.to_dict())
            fold_record["rates"][f"{rate:g}"] = {"snr_db": h.snr_db, "bpp": h.bpp,
                                                 "base_snr_db": got.base_snr_db,
                                                 "gate_fraction": got.gate_fraction}
        fold_record["wall_s"] = time.perf_counter() - t0
        record["folds"][city] = fold_record
    return points, record
