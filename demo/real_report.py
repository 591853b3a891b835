"""The real-pairs report: per pair and mean (with the spread over pairs), the codec against the
best classical method at each rate, at each scene's own size and projected to the paper's, the
break-even scene size, and the generator alone against the best linear predictor.
Markdown + JSON + PNG.

Projection and break-even assume that the generator's per-pixel quality, and the residual
coder's rate-distortion per sample, hold on a larger scene of the same kind: the weights' bytes
are then spread over more samples and the residual gets the rate they leave. The hybrid's SNR
between two residual rates is interpolated linearly in log(rate) (below the smallest measured
one, linearly in the rate from the generator alone at 0 bpp).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from qmtgan.runtime.atomic import atomic_file, write_text_atomic

CLASSICAL = {"jpeg2000": "JPEG2000", "linear+jpeg2000": "linear + JPEG2000",
             "linear-3x3+jpeg2000": "3x3 linear + JPEG2000", "klt+jpeg2000": "KLT + JPEG2000",
             "linear-3x3+klt+jpeg2000": "3x3 linear + KLT + JPEG2000"}
BASE_FAMILY = "linear-3x3+klt+jpeg2000"  # the classical base the hybrid's residual is compared with
PIXEL_KM2 = 1e-4  # a 10 m pixel
BANDS = 12


def _at(points: list[dict], family: str, rate: float) -> list[dict]:
    return [p for p in points if p["family"] == family and p["requested_bpp"] is not None
            and math.isclose(p["requested_bpp"], rate)]


def _best(points: list[dict]) -> dict | None:
    return max(points, key=lambda p: p["snr_db"]) if points else None


def _snr_at(residual_rate: float, known: list[tuple[float, float]], alone: float) -> float:
    """The hybrid's SNR at a residual rate, from measured (residual rate, SNR) points."""
    known = sorted(known)
    if residual_rate <= known[0][0]:
        r0, s0 = known[0]
        return alone + (s0 - alone) * max(residual_rate, 0.0) / r0
    for (r0, s0), (r1, s1) in zip(known, known[1:]):
        if residual_rate <= r1:
            return s0 + (s1 - s0) * math.log(residual_rate / r0) / math.log(r1 / r0)
    return known[-1][1]


def break_even_pixels(rate: float, weight_bytes: int, samples_per_pixel: int,
                      known: list[tuple[float, float]], alone: float, target_snr: float) -> float | None:
    """The smallest scene (pixels) on which the hybrid reaches `target_snr` at `rate` in all;
    None when it does not even with free weights (at the largest measured residual rate)."""
    if not known or _snr_at(rate, known, alone) < target_snr:
        return None
    lo, hi = 0.0, rate  # weight rate: 0 (an endless scene) .. all of the rate (a tiny one)
    for _ in range(60):
        mid = (lo + hi) / 2
        if _snr_at(rate - mid, known, alone) >= target_snr:
            lo = mid
        else:
            hi = mid
    return math.inf if lo <= 0 else 8.0 * weight_bytes / (samples_per_pixel * lo)


def pair_summary(points: list[dict], pair: str, rates: list[float]) -> dict:
    """One pair: at each rate, the best classical method, the best hybrid at the scene's own
    size and projected, and the break-even scene size of the best projected configuration."""
    mine = [p for p in points if p["pair"] == pair]
    coded = next(p for p in mine if p["bpp"])
    samples = 8.0 * coded["bytes"] / coded["bpp"]  # H x W x bands
    out = {"pair": pair, "rates": {}}
    linear3 = _best([p for p in mine if p["family"] == "linear-3x3"])
    gens = [p for p in mine if p["family"] == "generator"]
    if linear3 and gens:
        best_gen = _best(gens)
        out["generator"] = {"label": best_gen["label"], "snr_db": best_gen["snr_db"], "bpp": best_gen["bpp"]}
        out["linear_3x3_snr_db"] = linear3["snr_db"]
        out["generator_minus_linear_db"] = best_gen["snr_db"] - linear3["snr_db"]
    shared = _best([p for p in mine if p["family"] == "shared"])
    if linear3 and shared:
        out["shared"] = {"snr_db": shared["snr_db"], "bpp": shared["bpp"],
                         "gate_fraction": shared["extra"].get("gate_fraction")}
        out["shared_minus_linear_db"] = shared["snr_db"] - linear3["snr_db"]
    for rate in rates:
        classical = _best([p for fam in CLASSICAL for p in _at(mine, fam, rate)])
        own = _best(_at(mine, "hybrid", rate))
        projected = _best(_at(mine, "hybrid-projected", rate))
        shared = _best(_at(mine, "shared-hybrid", rate))
        codec = _best([p for p in (own, shared) if p])
        row = {"classical": classical and {"family": classical["family"], "snr_db": classical["snr_db"],
                                           "bpp": classical["bpp"]},
               "hybrid": own and {"label": own["label"], "snr_db": own["snr_db"], "bpp": own["bpp"]},
               "projected": projected and {"label": projected["label"], "snr_db": projected["snr_db"]},
               "shared": shared and {"snr_db": shared["snr_db"], "bpp": shared["bpp"],
                                     "gate_fraction": shared["extra"].get("gate_fraction")}}
        for key, point in (("hybrid", own), ("shared", shared), ("codec", codec)):
            if classical and point:
                row[f"{key}_minus_classical_db"] = point["snr_db"] - classical["snr_db"]
        if classical and projected:
            row["projected_minus_classical_db"] = projected["snr_db"] - classical["snr_db"]
            row["break_even"] = _break_even(mine, projected, rate, classical["snr_db"], samples)
        if projected:
            row["equal_residual"] = _equal_residual(mine, projected, rate, samples)
            if row["equal_residual"]:
                row["equal_residual_gain_db"] = row["equal_residual"]["gain_db"]
        out["rates"][f"{rate:g}"] = row
    return out


def _hybrid_curve(mine: list[dict], projected: dict, samples: float) -> tuple[list, float]:
    """The projected configuration's hybrids (own size and projected, every rate) as (residual
    rate, SNR), the weights' bits set aside, and its generator alone's SNR."""
    bits, weights, pixels = (projected["extra"][k] for k in ("bits", "weight_bytes", "pixels"))
    gen = next(p for p in mine if p["family"] == "generator" and p["extra"].get("bits") == bits)
    known = []
    for p in mine:
        if p["extra"].get("bits") != bits or p["family"] not in ("hybrid", "hybrid-projected"):
            continue
        spent = weights if p["family"] == "hybrid" else weights * samples / BANDS / pixels
        known.append((p["bpp"] - 8.0 * spent / samples, p["snr_db"]))
    return known, gen["snr_db"]


def _break_even(mine: list[dict], projected: dict, rate: float, target: float, samples: float) -> dict:
    known, alone = _hybrid_curve(mine, projected, samples)
    found = break_even_pixels(rate, projected["extra"]["weight_bytes"], BANDS, known, alone, target)
    return {"bits": projected["extra"]["bits"], "pixels": found,
            "km2": None if found is None else found * PIXEL_KM2, "scene_pixels": samples / BANDS}


def _equal_residual(mine: list[dict], projected: dict, rate: float, samples: float) -> dict | None:
    """The hybrid and the classical base (3x3 linear + KLT + JPEG2000) with the same residual
    rate, each predictor's own bits set aside: where the generator's prediction is worth bits."""
    base = [p for p in mine if p["family"] == BASE_FAMILY and "predictor_bytes" in p["extra"]]
    linear3 = _best([p for p in mine if p["family"] == "linear-3x3"])
    if not base or not linear3:
        return None
    base_known = [(p["bpp"] - 8.0 * p["extra"]["predictor_bytes"] / samples, p["snr_db"]) for p in base]
    known, alone = _hybrid_curve(mine, projected, samples)
    if not known or rate > min(max(r for r, _ in known), max(r for r, _ in base_known)):
        return None  # beyond a curve's last measured point: extrapolated, so not compared
    hybrid, classical = _snr_at(rate, known, alone), _snr_at(rate, base_known, linear3["snr_db"])
    return {"hybrid_snr_db": hybrid, "base_snr_db": classical, "gain_db": hybrid - classical}


def _mean_spread(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(np.mean(vals)), "min": float(min(vals)), "max": float(max(vals)), "n": len(vals)}


def summarize(points: list[dict], pairs: list[str], rates: list[float]) -> dict:
    per_pair = [pair_summary(points, name, rates) for name in pairs]
    mean = {k: _mean_spread([p.get(k) for p in per_pair])
            for k in ("generator_minus_linear_db", "shared_minus_linear_db")}
    for rate in rates:
        key = f"{rate:g}"
        rows = [p["rates"][key] for p in per_pair]
        mean[key] = {k: _mean_spread([r.get(k) for r in rows])
                     for k in ("hybrid_minus_classical_db", "projected_minus_classical_db",
                               "shared_minus_classical_db", "codec_minus_classical_db",
                               "equal_residual_gain_db")}
        km2 = [r["break_even"]["km2"] for r in rows if r.get("break_even")]
        mean[key]["break_even_km2"] = {"never": sum(v is None for v in km2),
                                       **_mean_spread([v for v in km2 if v is not None and math.isfinite(v)])}
    return {"pairs": per_pair, "mean": mean}


def _f(v, spec=".2f", none="-") -> str:
    return none if v is None else format(v, spec)


def _spread(m: dict) -> str:
    return f"**{_f(m['mean'], '+.2f')}** ({_f(m['min'], '+.2f')}..{_f(m['max'], '+.2f')})"


def _km2(b: dict | None) -> str:
    if not b:
        return "-"
    if b["pixels"] is None:
        return "never"
    if b["scene_pixels"] and b["pixels"] <= b["scene_pixels"]:
        return f"<= its own ({b['scene_pixels'] * PIXEL_KM2:.0f} km²)"
    return f"{b['km2']:.0f} km²"


def _shared_intro(context: dict) -> list[str]:
    shared = context.get("shared")
    if not shared:
        return []
    g = shared["generator"]
    return [f"Shared generator: {g['name']} ngf {g['ngf']} depth {g['depth']}, residual {g['residual']}, "
            f"{shared['epochs']} epochs, one per city, trained on the other cities (leave one city out) and "
            "run on the city it never saw; the payload holds the city's 3x3 linear base, a gate over "
            "32 or 64 px blocks (refinement or base) and the residual, no weights. \"codec\" is the "
            "better of the per-pair hybrid and the shared one.", ""]


def _sweep_section(sweep: dict | None) -> list[str]:
    """PTQ of every pair's generator: SNR (mean over the pairs) and each pair's loss against
    float, then the paper's ordering as measured."""
    if not sweep:
        return []
    from qmtgan.quantize.on_disk import markdown as disk_markdown
    from qmtgan.quantize.ordering import markdown as ordering_markdown

    rows = sweep["rows"]
    float_row = next(r for r in rows if r["label"] == "float32")
    lines = ["## Post-training quantization of each pair's generator", "",
             f"Metrics averaged over the pairs, as the paper averages its data sets; full table: "
             f"{sweep['report']}.", "",
             "| configuration | bpp (Eq. 1, scene, mean) | bpp (file, mean) | SNR dB | SNR per patch dB | "
             "loss vs float dB, per pair |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        losses = [f - q for f, q in zip(float_row["per_pair_snr_db"] or [float_row["snr_db"]],
                                        r["per_pair_snr_db"] or [r["snr_db"]])]
        lines.append(f"| {r['label']} | {r['bpp_scene']:.4f} | {r.get('bpp_file', float('nan')):.4f} | "
                     f"{r['snr_db']:.2f} | {r['patch_snr_db']:.2f} | "
                     f"{min(losses):+.3f}..{max(losses):+.3f} |")
    lines += ["", "The paper's ordering on these pairs:", "", ordering_markdown(sweep["ordering"]), ""]
    if sweep.get("on_disk"):
        lines += ["### Bytes on disk", "", disk_markdown(sweep["on_disk"], sweep.get("pair_names", [])), ""]
    return lines


def markdown(summary: dict, context: dict) -> str:
    pairs = {p["city"]: p for p in context["pairs"]}
    lines = ["# The codec on real Sentinel-2 pairs", "",
             f"Data: {context['root']}. {context['licence']}", "",
             f"Generator: {context['generator']['name']} ngf {context['generator']['ngf']}, residual "
             f"{context['generator'].get('residual')}, {context['training']['epochs']} epochs, loss "
             f"{context['training']['loss']}, {context['training'].get('norm_clip', 0)} % of each band "
             f"clipped at either end by the normalization; bits {', '.join(map(str, context['bits']))} "
             f"({', '.join(context.get('methods', ['symmetric']))}). "
             "Every number is measured on the pair itself (bpp from the coded bytes, SNR over valid "
             f"pixels); the paper-size column is a projection to {context['paper_pixels']:,} pixels (441 "
             "patches of 512 x 512) that assumes the generator's per-pixel quality holds there. *Equal "
             "residual rate*: the hybrid against the classical base (3x3 linear + KLT + JPEG2000 residual) "
             "when each residual gets the whole rate and each predictor's own bits are set aside "
             "(interpolated in log rate between measured points): what the generator's prediction is "
             "worth to the residual coder. Rate-distortion details: rd/rd.md.", "",
             *_shared_intro(context),
             "## Pairs", "", "| city | reference date | target date | size (H x W) | 3x3 linear SNR | "
             "generator SNR | generator - linear | shared SNR (held out) | shared - linear |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for s in summary["pairs"]:
        p = pairs.get(s["pair"], {})
        size = context.get("sizes", {}).get(s["pair"], "?")
        gain = _f(s.get("generator_minus_linear_db"), "+.2f")
        dates = f"{p.get('reference_date', '?')} | {p.get('target_date', '?')}"
        snrs = f"{_f(s.get('linear_3x3_snr_db'))} | {_f(s.get('generator', {}).get('snr_db'))}"
        shared = f"{_f(s.get('shared', {}).get('snr_db'))} | {_f(s.get('shared_minus_linear_db'), '+.2f')}"
        lines.append(f"| {s['pair']} | {dates} | {size} | {snrs} | {gain} | {shared} |")
    m = summary["mean"]
    lines += [f"| **mean** | | | | | | {_spread(m['generator_minus_linear_db'])} | | "
              f"{_spread(m['shared_minus_linear_db'])} |", ""]
    for rate in context["rates"]:
        key = f"{rate:g}"
        lines += [f"## At {key} bpp", "", "| city | best classical | SNR | hybrid (own size) | SNR | "
                  "hybrid - classical | projected to the paper's size | hybrid - classical | "
                  "break-even scene | equal residual rate: hybrid - base | shared, held out (blocks "
                  "refined) | shared - classical | codec - classical |",
                  "|---|---|---:|---|---:|---:|---|---:|---|---:|---:|---:|---:|"]
        for s in summary["pairs"]:
            r = s["rates"][key]
            c, h, pr, sh = r["classical"], r["hybrid"], r["projected"], r.get("shared")
            name = CLASSICAL.get(c["family"], c["family"]) if c else "-"
            hybrid = h["label"].split(" + ")[0] if h else "weights exceed the rate"
            shared = f"{_f(sh['snr_db'])} ({sh['gate_fraction']:.0%})" if sh else "-"
            lines.append(
                f"| {s['pair']} | {name} | {_f(c and c['snr_db'])} | {hybrid} | "
                f"{_f(h and h['snr_db'])} | {_f(r.get('hybrid_minus_classical_db'), '+.2f')} | "
                f"{_f(pr and pr['snr_db'])} | {_f(r.get('projected_minus_classical_db'), '+.2f')} | "
                f"{_km2(r.get('break_even'))} | {_f(r.get('equal_residual_gain_db'), '+.2f')} | {shared} | "
                f"{_f(r.get('shared_minus_classical_db'), '+.2f')} | "
                f"{_f(r.get('codec_minus_classical_db'), '+.2f')} |")
        mk = summary["mean"][key]
        own, proj = mk["hybrid_minus_classical_db"], mk["projected_minus_classical_db"]
        be = mk["break_even_km2"]
        lines += [f"| **mean** | | | ({own['n']} pairs) | | {_spread(own)} | ({proj['n']} pairs) | "
                  f"{_spread(proj)} | never on {be['never']}; else {_f(be['mean'], '.0f')} km² mean | "
                  f"{_spread(mk['equal_residual_gain_db'])} | | "
                  f"{_spread(mk['shared_minus_classical_db'])} | "
                  f"{_spread(mk['codec_minus_classical_db'])} |", ""]
    lines += ["![hybrid minus the best classical method](real.png)", ""]
    lines += _sweep_section(context.get("sweep"))
    if context.get("int8"):
        lines += ["## int8 against float (whole scene, the convert stage's measurement)", "",
                  "| city | float SNR | tflite-int8 SNR | loss | onnx-int8 SNR | loss |",
                  "|---|---:|---:|---:|---:|---:|"]
        for city, r in context["int8"].items():
            cells = [f"{_f(r.get(n, {}).get('snr_db'))} ({r.get(n, {}).get('precision', '-')}) | "
                     f"{_f(r.get(n, {}).get('loss_db'), '.3f')}" for n in ("tflite-int8", "onnx-int8")]
            lines.append(f"| {city} | {_f(r['float_snr_db'])} | {' | '.join(cells)} |")
        for n in ("tflite-int8", "onnx-int8"):
            m = _mean_spread([r.get(n, {}).get("loss_db") for r in context["int8"].values()])
            lines.append(f"\n{n}: mean loss {_f(m['mean'], '.3f')} dB (worst {_f(m['max'], '.3f')})")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict, rates: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, key, title in ((axes[0], "hybrid_minus_classical_db", "at each scene's own size"),
                           (axes[1], "projected_minus_classical_db", "projected to the paper's size")):
        for s in summary["pairs"]:
            ys = [s["rates"][f"{r:g}"].get(key) for r in rates]
            ax.plot(rates, [np.nan if y is None else y for y in ys], "o-", label=s["pair"], alpha=0.8)
        means = [summary["mean"][f"{r:g}"][key]["mean"] for r in rates]
        ax.plot(rates, [np.nan if y is None else y for y in means], "k-", lw=3,
                label="mean of the pairs shown")
        ax.axhline(0, color="0.5", lw=1)
        ax.set_xscale("log")
        ax.set_xlim(min(rates) / 1.5, max(rates) * 1.5)  # also when a panel has no point at all
        ax.set_xticks(rates, [f"{r:g}" for r in rates])
        ax.minorticks_off()
        ax.set_xlabel("bits per sample")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("hybrid - best classical (dB)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_real_report(out: Path, rd_doc: dict, context: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rd_doc["points"], rd_doc["pairs"], context["rates"])
    doc = {"context": context, **summary}
    write_text_atomic(out / "real.json", json.dumps(doc, indent=1))
    write_text_atomic(out / "real.md", markdown(summary, context))
    plot(summary, context["rates"], out / "real.png")
    return doc
