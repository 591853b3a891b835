"""What the sweep's configurations cost on disk: the .qmtg file `encode` writes (header, side
information and the entropy-coded codes), against the paper's 8-bit symmetric payload stored
the paper's way (bit-packed), per pair and on the mean over the pairs."""

from __future__ import annotations

import numpy as np

# "Within float" for the smallest-payload search: what a user would call no visible loss.
NEAR_FLOAT_DB = 0.1
REFERENCE_LABEL = "symmetric 8"
BUDGETS = (0.25, 0.375, 0.5, 0.75, 1.0)  # fractions of the reference payload
# Published points, as (label, bpp / the 8-bit symmetric bpp, SNR loss against float in dB), on
# their authors' own pairs: the paper's Table 2 (float 26.34 dB, 8-bit 0.0148 bpp, 6-bit 0.0111)
# and NUQ-MultiTempGAN's 6-bit piecewise-linear point (-0.46 % SNR, -81 % bpp against float
# at 0.0590 bpp).
PUBLISHED = (("paper: symmetric 8", 1.0, 26.34 - 25.78), ("paper: stochastic 8", 1.0, 26.34 - 25.42),
             ("paper: conv-only 8", 1.0, 26.34 - 25.19), ("paper: LWPQ", 0.0149 / 0.0148, 26.34 - 24.93),
             ("paper: conv-only 6", 0.0111 / 0.0148, 26.34 - 23.93), ("paper: symmetric 6", 0.0111 / 0.0148,
                                                                      26.34 - 21.86),
             ("NUQ-MultiTempGAN: pwl 6", 0.19 * 0.0590 / 0.0148, 0.0046 * 26.34))


def _per_pair(row: dict, key: str) -> list:
    return list(row.get(f"per_pair_{key}") or [row[key]])


def on_disk(rows: list[dict]) -> dict:
    """Per configuration: mean bytes and SNR loss with the per-pair spread; per pair: the smallest
    payload within NEAR_FLOAT_DB of its float model; per budget: the best configuration."""
    by_label = {r["label"]: r for r in rows}
    if "float32" not in by_label or REFERENCE_LABEL not in by_label:
        return {}
    floats = np.array(_per_pair(by_label["float32"], "snr_db"))
    reference = np.array(_per_pair(by_label[REFERENCE_LABEL], "packed_bytes"), float)
    configs = []
    for r in rows:
        if r.get("policy") is None or "per_pair_file_bytes" not in r and "file_bytes" not in r:
            continue
        size = np.array(_per_pair(r, "file_bytes"), float)
        loss = floats - np.array(_per_pair(r, "snr_db"))
        configs.append(
            {
                "label": r["label"],
                "bytes": float(size.mean()),
                "bpp_file": r["bpp_file"],
                "ratio": float(np.mean(size / reference)),
                "per_pair_ratio": (size / reference).tolist(),
                "snr_db": r["snr_db"],
                "loss_db": float(loss.mean()),
                "loss_min_db": float(loss.min()),
                "loss_max_db": float(loss.max()),
                "per_pair_loss_db": loss.tolist(),
                "coders": sorted(set(_per_pair(r, "code_coder"))),
            }
        )
    smallest = []
    for k in range(len(floats)):
        near = [c for c in configs if c["label"] != "float32" and c["per_pair_loss_db"][k] <= NEAR_FLOAT_DB]
        if near:
            best = min(near, key=lambda c: c["per_pair_ratio"][k])
            smallest.append(
                {
                    "pair": k,
                    "label": best["label"],
                    "ratio": best["per_pair_ratio"][k],
                    "loss_db": best["per_pair_loss_db"][k],
                }
            )
    budgets = []
    for fraction in BUDGETS:
        fits = [c for c in configs if c["ratio"] <= fraction]
        if fits:
            best = min(fits, key=lambda c: (c["loss_db"], c["bytes"]))
            budgets.append({"fraction": fraction, "bytes": fraction * float(reference.mean()), **best})
    return {
        "reference": REFERENCE_LABEL + " bit-packed (the paper's payload)",
        "reference_bytes": reference.tolist(),
        "near_float_db": NEAR_FLOAT_DB,
        "configs": configs,
        "smallest_near_float": smallest,
        "smallest_near_float_mean_ratio": float(np.mean([s["ratio"] for s in smallest]))
        if smallest
        else None,
        "budgets": budgets,
    }


def markdown(summary: dict, pair_names: list[str]) -> str:
    if not summary:
        return "(needs the float32 and symmetric 8 rows)"
    ref = summary["reference_bytes"]
    lines = [
        f"Bytes are the `.qmtg` file `encode` writes, codes entropy coded by the smallest coder; the "
        f"reference is {summary['reference']}, {np.mean(ref):,.0f} bytes on the mean. Loss is float SNR "
        "minus the configuration's, mean (min..max over the pairs).",
        "",
        "| configuration | bytes | bpp (file) | x reference | SNR (dB) | loss (dB) | coder |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in sorted(summary["configs"], key=lambda c: c["bytes"]):
        lines.append(
            f"| {c['label']} | {c['bytes']:,.0f} | {c['bpp_file']:.4f} | {c['ratio']:.3f} | "
            f"{c['snr_db']:.2f} | {c['loss_db']:+.3f} ({c['loss_min_db']:+.2f}..{c['loss_max_db']:+.2f}) | "
            f"{', '.join(c['coders'])} |"
        )
    lines += [
        "",
        f"Smallest payload within {summary['near_float_db']} dB of each pair's float model:",
        "",
        "| pair | configuration | x reference | loss (dB) |",
        "|---|---|---:|---:|",
    ]
    for s in summary["smallest_near_float"]:
        name = pair_names[s["pair"]] if s["pair"] < len(pair_names) else str(s["pair"])
        lines.append(f"| {name} | {s['label']} | {s['ratio']:.3f} | {s['loss_db']:+.3f} |")
    if summary["smallest_near_float_mean_ratio"] is not None:
        lines.append(f"| **mean** | | **{summary['smallest_near_float_mean_ratio']:.3f}** | |")
    lines += [
        "",
        "Best configuration per budget (mean bytes at most the fraction of the reference):",
        "",
        "| budget | configuration | x reference | SNR (dB) | loss (dB) |",
        "|---:|---|---:|---:|---:|",
    ]
    for b in summary["budgets"]:
        lines.append(
            f"| {b['fraction']:.3f} | {b['label']} | {b['ratio']:.3f} | {b['snr_db']:.2f} | "
            f"{b['loss_db']:+.3f} |"
        )
    return "\n".join(lines)


def figure(summary: dict):
    """SNR loss against bytes on disk, one line per method across its widths (a Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    methods: dict[str, list] = {}
    for c in summary.get("configs", []):
        parts = c["label"].split()
        if len(parts) == 2 and parts[1].isdigit():
            methods.setdefault(parts[0], []).append(c)
    for name, cs in sorted(methods.items()):
        cs.sort(key=lambda c: c["ratio"])
        ax.plot([c["ratio"] for c in cs], [max(c["loss_db"], 1e-3) for c in cs], "o-", ms=4, label=name)
    for label, ratio, loss in PUBLISHED:
        ax.scatter([ratio], [loss], marker="x", color="black", s=30)
        ax.annotate(label, (ratio, loss), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(NEAR_FLOAT_DB, color="grey", ls="--", lw=0.8)
    ax.axvline(0.5, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("payload on disk / the paper's 8-bit symmetric payload")
    ax.set_ylabel("SNR loss against float (dB, mean over the pairs)")
    ax.set_title("Bytes on disk: every method across its widths (x: published points, their own pairs)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig
