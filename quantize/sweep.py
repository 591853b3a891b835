"""`qmtgan quantize sweep`: methods x bit widths on a trained model, measured on its pair.

For every configuration: the generator's weights are replaced by their dequantized values,
the whole target scene is reconstructed, and SNR / LMSE / PSNR are measured against the true
target (valid pixels, DN). bpp is given twice: for the scene's real pixel count (one image;
a small scene makes the model expensive per pixel) and projected onto the paper's data set
(441 patches of 512x512x12, one Sentinel-2 tile), which is what compares with Table 2.
Eq. 2-3 distances use the Table 2 set (float, 6 and 8 bits, mixed rows, peers) for min/max.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qmtgan.quantize.accounting import PAPER_IMAGES, PAPER_PIXELS, account, paper_row
from qmtgan.quantize.grids import GRID_METHODS
from qmtgan.quantize.model import quantize_tensors
from qmtgan.quantize.policy import FLOAT_LAYERS, Policy, generator_tensors
from qmtgan.runtime.scratch import scratch_dir
from qmtgan.train.model_io import assign_weights

log = logging.getLogger(__name__)


@dataclass
class Row:
    model: str
    policy: Policy | None
    bits: str
    accounting: dict
    paper: dict                 # the paper's columns for the 441-patch projection
    bpp_scene: float
    snr_db: float
    lmse: float
    psnr_db: float
    in_table2: bool
    patch_snr_db: float = float("nan")  # SNR of each patch, averaged (the paper's per-pair figure)
    distance: float = float("nan")
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "policy": self.policy.to_dict() if self.policy else None,
                "label": self.policy.label if self.policy else self.model, "bits": self.bits,
                "accounting_scene": self.accounting, **{f"paper_{k}": v for k, v in self.paper.items()},
                "bpp_tile": self.accounting["bpp_tile"], "bpp_scene": self.bpp_scene,
                "snr_db": self.snr_db, "patch_snr_db": self.patch_snr_db, "lmse": self.lmse,
                "psnr_db": self.psnr_db, "in_table2": self.in_table2, "distance": self.distance, **self.extra}


class Evaluator:
    """Reconstructs the pair's target with given generator weights and measures it (through the
    generator's sub-pixel twin: the same function, faster)."""

    def __init__(self, generator, patches, target: np.ndarray, valid: np.ndarray):
        from qmtgan.train.models.subpixel import with_subpixel_deconvs

        self.generator = with_subpixel_deconvs(generator)
        self.patches, self.target, self.valid = patches, target, valid
        self.pixels = int(target.size)  # H x W x bands of the one scene

    def reconstruct(self, weights: list[np.ndarray]) -> np.ndarray:
        from qmtgan.train.reconstruct import reconstruct_scene

        assign_weights(self.generator, weights)
        p = self.patches
        return reconstruct_scene(self.generator, p.reference, p.grid, p.normalization, self.valid)

    def measure(self, weights: list[np.ndarray]) -> tuple[dict, np.ndarray]:
        from qmtgan.train.reconstruct import scene_metrics

        recon = self.reconstruct(weights)
        return scene_metrics(self.target, recon, self.valid, self.patches.grid), recon


def critical_layers(evaluator: Evaluator, tensors, bits: int = 4, count: int = 2) -> tuple[str, ...]:
    """The conv layers whose kernel, quantized alone (symmetric, ``bits``), costs the most SNR.
    The probe uses 4 bits: at 8 bits every single layer's drop is within measurement noise."""
    base, _ = evaluator.measure([w for _, w in tensors])
    drops = {}
    for i, (info, _) in enumerate(tensors):
        if not info.is_conv or info.layer in FLOAT_LAYERS:  # kept in float32 by every policy
            continue
        only = quantize_tensors([tensors[i]], Policy("symmetric", bits=bits))
        weights = [w for _, w in tensors]
        weights[i] = only.dequantized()[0]
        drops[info.layer] = base["snr_db"] - evaluator.measure(weights)[0]["snr_db"]
    ranked = sorted(drops, key=drops.get, reverse=True)
    log.info("SNR drop when one conv layer alone is quantized to %d bits: %s" % (
             bits, ", ".join(f"{k} {drops[k]:.3f} dB" for k in ranked)))
    log.info(f"critical layers (largest drops): {', '.join(ranked[:count])}")
    return tuple(ranked[:count])


def _row(name: str, policy: Policy, sub: "Subject", seed: int, table2: bool, rounding: str = "nearest"):
    evaluator = sub.evaluator
    qmodel = quantize_tensors(sub.tensors, policy, seed)
    fitted = (rounding != "nearest" and policy.method in GRID_METHODS
              and any(e.quantized for e in qmodel.entries))
    if fitted:  # fitted to the pair's scene, kept where it measures better (quantize/adaround.py)
        from qmtgan.quantize.adaround import fitted_model

        qmodel, _ = fitted_model(sub.model_dir, sub.reference, sub.target, policy, rounding, seed)
    acc_tile = account(qmodel, PAPER_PIXELS, PAPER_IMAGES)
    acc_scene = acc_tile.with_data(evaluator.pixels, 1)
    m, recon = evaluator.measure(qmodel.dequantized())
    acc = {**acc_scene.to_dict(), "bpp_tile": acc_tile.bpp}
    stored = payload_bytes(qmodel, sub)
    stored["bpp_file"] = 8 * stored["file_bytes"] / evaluator.pixels
    return Row(name, policy, policy.bits_column if policy.mode != "uniform" else str(policy.bits), acc,
               paper_row(acc_tile), acc_scene.bpp, m["snr_db"], m["lmse"], m["psnr_db"], table2,
               m["mean_patch_snr_db"], extra={**stored, "rounding": rounding if fitted else "nearest"}), recon


def payload_bytes(qmodel, sub: "Subject") -> dict:
    """The size of the .qmtg file `encode` would write for this configuration (the codes coded
    by whichever coder is smallest), that coder, and the size with the codes bit-packed."""
    from qmtgan.quantize.codec import scene_header, to_payload
    from qmtgan.runtime import payload as fmt

    norm = sub.evaluator.patches.normalization
    payload = to_payload(qmodel, sub.config, norm, scene_header(sub.reference, sub.config["patch_size"]))
    data, coder = fmt.encode_with_coder(payload)
    return {"file_bytes": len(data), "packed_bytes": len(fmt.encode(payload, "packed")), "code_coder": coder}


def normalized_distances(rows: list[Row], reference: Row) -> None:
    """Eq. 2-3: min-max normalize bpp (tile) and SNR over the Table 2 rows, Euclidean distance
    of every row to the float model."""
    ref_rows = [r for r in rows if r.in_table2]
    bpps = [r.accounting["bpp_tile"] for r in ref_rows]
    snrs = [r.snr_db for r in ref_rows]
    b_lo, b_hi, s_lo, s_hi = min(bpps), max(bpps), min(snrs), max(snrs)
    nb = lambda b: (b - b_lo) / (b_hi - b_lo) if b_hi > b_lo else 0.0
    ns = lambda s: (s - s_lo) / (s_hi - s_lo) if s_hi > s_lo else 0.0
    for r in rows:
        r.extra.update(bpp_norm=nb(r.accounting["bpp_tile"]), snr_norm=ns(r.snr_db))
        r.distance = float(np.hypot(nb(r.accounting["bpp_tile"]) - nb(reference.accounting["bpp_tile"]),
                                    ns(r.snr_db) - ns(reference.snr_db)))


@dataclass
class Subject:
    """One trained model with the pair it compresses (the paper has three)."""

    model_dir: Path
    pair_dir: Path
    evaluator: Evaluator
    tensors: list
    reference: object
    target: object
    valid: np.ndarray
    config: dict


def load_subject(model_dir, pair_dir) -> Subject:
    from qmtgan.train.dataset import make_patch_set
    from qmtgan.train.model_io import load_model
    from qmtgan.train.pair import load_pair

    generator, cfg, norm, _ = load_model(model_dir)
    pair = load_pair(pair_dir)
    reference, target, valid = pair.reference, pair.target, pair.valid
    patches = make_patch_set(reference, target, cfg.patch_size, normalization=norm)
    return Subject(Path(model_dir), Path(pair_dir), Evaluator(generator, patches, target.data, valid),
                   generator_tensors(generator), reference, target, valid, cfg.to_dict())


def _average(rows: list[Row]) -> Row:
    """Metrics averaged over the pairs, as the paper averages its three data sets."""
    first = rows[0]
    if len(rows) == 1:
        return first
    mean = lambda k: float(np.mean([getattr(r, k) for r in rows]))
    per_pair = lambda k: [r.extra[k] for r in rows]
    return Row(first.model, first.policy, first.bits, first.accounting, first.paper, mean("bpp_scene"),
               mean("snr_db"), mean("lmse"), mean("psnr_db"), first.in_table2, mean("patch_snr_db"),
               extra={"per_pair_snr_db": [r.snr_db for r in rows],
                      "per_pair_patch_snr_db": [r.patch_snr_db for r in rows],
                      "file_bytes": float(np.mean(per_pair("file_bytes"))),
                      "bpp_file": float(np.mean(per_pair("bpp_file"))), "rounding": first.extra["rounding"],
                      **{f"per_pair_{k}": per_pair(k)
                         for k in ("file_bytes", "bpp_file", "packed_bytes", "code_coder")}})


def run_sweep(model_dirs: list, pair_dirs: list, out_dir: str | Path, methods: list[str], bits: list[int],
              seed: int = 0, peers: list[str] = (), rounding: str = "nearest") -> list[Row]:
    """Every configuration on every (model, pair); metrics averaged over the pairs. The LWPQ
    critical layers are measured on the first model and used for all. With a ``rounding`` other
    than nearest, every configuration of a method with one grid per tensor is fitted to its
    pair's scene as `encode --rounding` fits it."""
    from tqdm import tqdm

    from qmtgan.quantize.configs import sweep_policies, table2_policies
    from qmtgan.quantize.report import write_report
    from qmtgan.runtime.errors import QmtganError

    if len(model_dirs) != len(pair_dirs) or not model_dirs:
        raise QmtganError(
            f"give one --pair per --model (got {len(model_dirs)} models, {len(pair_dirs)} pairs)"
        )
    subjects = [load_subject(m, p) for m, p in zip(model_dirs, pair_dirs)]
    if len({json_key(s.config) for s in subjects}) != 1:
        raise QmtganError("every --model of one sweep must have the same architecture")
    first = subjects[0]
    critical = critical_layers(first.evaluator, first.tensors)
    table2 = {p.label for _, p in table2_policies(critical)}
    names = {p.label: n for n, p in table2_policies(critical)}
    rows, recons = [], {}
    for policy in tqdm(sweep_policies(methods, bits, critical), desc="sweep", unit="config"):
        per_pair = []
        for k, sub in enumerate(subjects):
            row, recon = _row(names.get(policy.label, "Q-MultiTempGAN"), policy, sub, seed,
                              policy.label in table2, rounding)
            per_pair.append(row)
            if k == 0 and policy.label in ("float32", "symmetric 8", "stochastic 8"):
                recons[policy.label] = recon
        rows.append(_average(per_pair))
    for sub in subjects:  # leave the models as they were
        assign_weights(sub.evaluator.generator, [w for _, w in sub.tensors])
    for peer in peers:
        rows.append(_peer_row(peer, first.pair_dir, first.evaluator.pixels, log))
    normalized_distances(rows, rows[0])
    best = best_row(rows)
    if best.policy.label not in recons:
        recons[best.policy.label] = first.evaluator.reconstruct(
            quantize_tensors(first.tensors, best.policy, seed).dequantized())
        assign_weights(first.evaluator.generator, [w for _, w in first.tensors])
    write_report(out_dir, rows, best, recons, first.reference, first.target, first.valid,
                 {"model": ", ".join(map(str, model_dirs)), "pair": ", ".join(map(str, pair_dirs)),
                  "pairs": len(subjects), "pair_names": [s.pair_dir.name for s in subjects],
                  "seed": seed, "rounding": rounding, "critical_layers": list(critical),
                  "scene_pixels": first.evaluator.pixels, "generator": first.config})
    return rows


def json_key(d: dict) -> str:
    import json

    return json.dumps(d, sort_keys=True)


def best_row(rows: list[Row]) -> Row:
    """The quantized Table 2 configuration nearest to the float model (the paper's criterion)."""
    return min((r for r in rows if r.in_table2 and r.policy is not None and r.policy.label != "float32"),
               key=lambda r: r.distance)


def _peer_row(run_dir: str, pair_dir, pixels: int, log) -> Row:
    """A float row for a trained peer generator (the paper's LinkNet / ResNet / U-Net rows)."""
    from qmtgan.quantize.accounting import Accounting
    from qmtgan.train.evaluate import evaluate


    with scratch_dir() as tmp:
        m = evaluate(run_dir, pair_dir, Path(tmp) / "peer.tif", progress=False)
    params = sum(int(np.prod(t)) for t in _shapes(run_dir))
    acc = Accounting(params, 0, 0, 0, PAPER_PIXELS, PAPER_IMAGES)
    name = m["generator"]["name"]
    log.info(f"peer {name}: SNR {m['snr_db']:.2f} dB")
    return Row(name, None, "32", {**acc.with_data(pixels, 1).to_dict(), "bpp_tile": acc.bpp},
               paper_row(acc), acc.with_data(pixels, 1).bpp, m["snr_db"], m["lmse"], m["psnr_db"], True,
               m["mean_patch_snr_db"])


def _shapes(run_dir) -> list[tuple[int, ...]]:
    from qmtgan.train.model_io import load_model

    generator = load_model(run_dir)[0]
    return [tuple(v.shape) for v in generator.trainable_weights]
