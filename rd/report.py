"""The rate-distortion report: one table and one plot (SNR vs bpp, LMSE vs bpp) with every
baseline, generator and hybrid point on the same axes; per pair and averaged over pairs.
Markdown + JSON + PNG, each written atomically."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from qmtgan.rd.points import RDPoint
from qmtgan.runtime.atomic import atomic_file, write_text_atomic

STYLE = {"reference": ("k", "--"), "gain-offset": ("0.5", ":"), "linear": ("C7", "-."),
         "linear-3x3": ("C5", "-."), "jpeg2000": ("C0", "o-"), "linear+jpeg2000": ("C2", "s-"),
         "linear-3x3+jpeg2000": ("C4", "v-"), "klt+jpeg2000": ("C9", "P-"),
         "linear-3x3+klt+jpeg2000": ("C8", "X-"), "generator": ("C3", "^"), "hybrid": ("C1", "D-")}
ZERO_RATE = {"reference", "gain-offset", "linear", "linear-3x3"}  # drawn as horizontal lines


def average(points: list[RDPoint]) -> list[dict]:
    """Mean over pairs of the points that share a label (bpp, SNR, LMSE, SNR in/out of changes)."""
    groups: dict[tuple[str, str], list[RDPoint]] = defaultdict(list)
    for p in points:
        groups[(p.family, p.label)].append(p)
    rows = []
    for (family, label), ps in groups.items():
        def mean(attr: str):
            vals = [getattr(p, attr) for p in ps if getattr(p, attr) is not None]
            return float(np.mean(vals)) if vals else None
        snrs = [p.snr_db for p in ps]
        rows.append({"family": family, "label": label, "pairs": len(ps), "bpp": mean("bpp"),
                     "snr_db": mean("snr_db"), "snr_min_db": float(min(snrs)), "snr_max_db": float(max(snrs)),
                     "lmse": mean("lmse"), "snr_change_db": mean("snr_change_db"),
                     "snr_outside_db": mean("snr_outside_db")})
    return rows


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _spread(row: dict) -> str:
    if row.get("snr_min_db") is None or row["pairs"] < 2:
        return "-"
    return f"{row['snr_min_db']:.2f}..{row['snr_max_db']:.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| method | pairs | bpp | SNR (dB) | SNR min..max | LMSE | SNR in changes | SNR outside |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(
        rows, key=lambda r: (list(STYLE).index(r["family"]) if r["family"] in STYLE else 99, r["bpp"])
    ):
        lines.append(
            f"| {r['label']} | {r['pairs']} | {_fmt(r['bpp'], '.4f')} | {_fmt(r['snr_db'], '.2f')} | "
            f"{_spread(r)} | {_fmt(r['lmse'], '.4f')} | {_fmt(r['snr_change_db'], '.2f')} | "
            f"{_fmt(r['snr_outside_db'], '.2f')} |"
        )
    return "\n".join(lines)


def hybrid_colors_for(series: dict) -> list[str]:
    """A colour per hybrid line, in a stable order."""
    palette = ["C1", "C8", "C6", "C9", "C5", "C4"]
    return [palette[i % len(palette)] for i in range(len(series))]


def plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
    by_family: dict[str, list[dict]] = defaultdict(list)
    for r in rows:  # one line per hybrid configuration, not one zigzag through all of them
        key = f"hybrid: {r['label'].split(' + ')[0]}" if r["family"] == "hybrid" else r["family"]
        by_family[key].append(r)

    positive = [r["bpp"] for r in rows if r["bpp"] and r["family"] not in ZERO_RATE]
    lo, hi = (min(positive) / 2, max(positive) * 2) if positive else (1e-3, 10)
    for ax, key, name in ((axes[0], "snr_db", "SNR (dB)"), (axes[1], "lmse", "LMSE")):
        colors = iter(hybrid_colors_for(by_family))
        for family, rs in by_family.items():
            color, style = STYLE.get(family, (next(colors), STYLE["hybrid"][1]))
            rs = sorted(rs, key=lambda r: r["bpp"])
            if family in ZERO_RATE:
                ax.axhline(
                    rs[0][key], color=color, linestyle=style, label=f"{family} ({rs[0]['bpp']:.1e} bpp)"
                )
                continue
            marker = style.rstrip("-")
            line = "-" if style.endswith("-") else "none"
            ax.plot([r["bpp"] for r in rs], [r[key] for r in rs], marker=marker, linestyle=line, color=color,
                    label=family)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("bits per sample (bytes on disk)")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
        if key == "lmse":
            ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * ((len(labels) + 2) // 3), 1, 1))
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def write_report(out: Path, points: list[RDPoint], errors: list[str], context: dict) -> dict:
    """out/rd.md, rd.json, rd.png (average over pairs) and rd-<pair>.png per pair."""
    out.mkdir(parents=True, exist_ok=True)
    pairs = sorted({p.pair for p in points})
    mean_rows = average(points)
    doc = {"context": context, "pairs": pairs, "average": mean_rows, "points": [p.to_dict() for p in points],
           "errors": errors}
    plot(mean_rows, out / "rd.png", f"Rate-distortion, mean over {len(pairs)} pair(s)")
    sections = [f"# Rate-distortion ({len(pairs)} pair(s): {', '.join(pairs)})", "",
                "bpp = 8 x bytes / (H x W x bands), from the coded bytes; SNR and LMSE on valid pixels, "
                "in DN; SNR in/out of the simulated land-cover change areas.", "",
                "## Mean over pairs", "", table(mean_rows), "", "![rate-distortion](rd.png)", ""]
    for name in pairs:
        rows = average([p for p in points if p.pair == name])
        plot(rows, out / f"rd-{name}.png", f"Rate-distortion, pair {name}")
        sections += [f"## Pair {name}", "", table(rows), "", f"![{name}](rd-{name}.png)", ""]
    if errors:
        sections += ["## Not computed", "", *[f"- {e}" for e in errors], ""]
    if context.get("verdict"):
        sections += ["## Where the generator wins and loses", "", *context["verdict"], ""]
    write_text_atomic(out / "rd.json", json.dumps(doc, indent=1))
    write_text_atomic(out / "rd.md", "\n".join(sections))
    return doc
