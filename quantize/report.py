"""The sweep's report: Table 2 (Markdown, CSV, JSON), Figure 2 (normalized SNR vs normalized
bpp with distances to the float model), Figure 3 (RGB composites)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from qmtgan.quantize.on_disk import figure as disk_figure
from qmtgan.quantize.on_disk import markdown as disk_markdown
from qmtgan.quantize.on_disk import on_disk
from qmtgan.quantize.ordering import markdown as ordering_markdown
from qmtgan.quantize.ordering import table2_ordering
from qmtgan.runtime.atomic import atomic_file, write_text_atomic

COLUMNS = ["model", "label", "bits", "paper_q_params", "paper_side_info", "paper_memory_mb",
           "bpp_tile", "bpp_scene", "paper_ratio", "snr_db", "patch_snr_db", "lmse", "psnr_db", "distance"]


def _md_table(rows: list[dict]) -> str:
    lines = ["| Model | Configuration | Bits | Q-Params | Side Info. | Memory (MB) | bpp (tile) | "
             "bpp (scene) | Ratio | SNR (dB) | SNR per patch (dB) | LMSE | d |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['label']} | {r['bits']} | {r['paper_q_params']:,} | "
                     f"{r['paper_side_info']} | {r['paper_memory_mb']:.2f} | {r['paper_bpp']:.4f} | "
                     f"{r['bpp_scene']:.4f} | {r['paper_ratio']:.2f} | {r['snr_db']:.2f} | "
                     f"{r['patch_snr_db']:.2f} | {r['lmse']:.4f} | {r['distance']:.3f} |")
    return "\n".join(lines)


def write_report(out_dir, rows, best, recons, reference, target, valid, context: dict) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dicts = [r.to_dict() for r in rows]
    table2 = [d for d in dicts if d["in_table2"]]
    ordering = table2_ordering(dicts)
    disk = on_disk(dicts)
    write_text_atomic(out_dir / "table2.json", json.dumps(
        {"context": context, "best": best.to_dict(), "rows": dicts, "ordering": ordering, "on_disk": disk},
        indent=1, default=float))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(dicts)
    write_text_atomic(out_dir / "table2.csv", buf.getvalue())
    md = ["# Quantization sweep", "",
          f"Model `{context['model']}` on pair `{context['pair']}`. SNR / LMSE on the whole scene "
          "(valid pixels, DN). *bpp (tile)* is Eq. 1 projected onto the paper's data set (441 "
          f"patches of 512x512x12); *bpp (scene)* uses this scene's {context['scene_pixels']:,} "
          "pixel values, one image. Memory and Ratio as the paper prints them (truncated). "
          "d = Eq. 3 distance to the float model, normalized over the Table 2 rows. *SNR per patch* "
          "averages the SNR of each patch, as the paper averages a pair; the scene SNR weighs every "
          "pixel alike, so the two differ where patches differ in energy.", "",
          f"Critical layers for LWPQ (measured): {', '.join(context['critical_layers'])}.", "",
          f"**Smallest distance: {best.policy.label}** (d = {best.distance:.3f}).", "",
          "## Table 2 rows", "", _md_table(table2), "",
          "## The paper's ordering", "", ordering_markdown(ordering), "",
          "## Bytes on disk", "", disk_markdown(disk, context.get("pair_names", [])), "",
          "## Every configuration", "", _md_table(dicts), ""]
    write_text_atomic(out_dir / "table2.md", "\n".join(md))
    if disk:
        save_figure(disk_figure(disk), out_dir / "rd_on_disk.png")
    _figure2(out_dir / "figure2.png", table2)
    _figure3(out_dir / "figure3.png", recons, reference, target, valid, {d["label"]: d for d in dicts}, best)
    return out_dir


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _figure2(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6))
    for r in rows:
        ax.scatter(r["bpp_norm"], r["snr_norm"], s=40)
        ax.annotate(f"{r['label']}\nd={r['distance']:.2f}", (r["bpp_norm"], r["snr_norm"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("normalized bpp (Eq. 2)")
    ax.set_ylabel("normalized SNR (Eq. 2)")
    ax.set_title("Figure 2: configurations vs the float model (distance d, Eq. 3)")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _rgb(data: np.ndarray, ranges) -> np.ndarray:
    idx = (3, 2, 1)  # B04 B03 B02: natural colour
    out = np.stack([np.clip((data[i] - ranges[i][0]) / (ranges[i][1] - ranges[i][0]), 0, 1) for i in idx], -1)
    return out


def _figure3(path, recons, reference, target, valid, by_label, best) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranges = [tuple(np.percentile(b[valid], [2, 98])) for b in reference.data]
    h, w = reference.shape
    s = min(512, h, w)
    r0, c0 = (h - s) // 2, (w - s) // 2
    crop = lambda a: a[:, r0 : r0 + s, c0 : c0 + s]
    panels = [("(a) reference", reference.data), ("(b) target", target.data)]
    order = ["float32", "stochastic 8", "symmetric 8", best.policy.label]
    seen = set()
    for label in order:
        if label in recons and label not in seen:
            seen.add(label)
            title = "MultiTempGAN" if label == "float32" else label
            panels.append((f"{title} (SNR {by_label[label]['snr_db']:.2f})", recons[label]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, data) in zip(axes, panels):
        ax.imshow(_rgb(crop(data), ranges))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"Figure 3: natural colour (B04 B03 B02), central {s}x{s} px")
    save_figure(fig, path)
