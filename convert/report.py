"""The conversion report: one Markdown table row per artifact (size, SNRs, latency)."""

from __future__ import annotations


def artifact_table(records: list[dict]) -> str:
    lines = [
        "| artifact | backend | precision | target | size (KB) | SNR vs float (dB) | "
        "SNR vs target (dB) | ms / tile |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in records:
        size = f"{r['size_bytes'] / 1024:.0f}" if r.get("size_bytes") else "-"
        if r["mean_tile_s"] != r["mean_tile_s"]:  # NaN: built for another architecture
            measured = "not run here | (aarch64 module) | -"
        else:
            measured = (
                f"{r['snr_vs_float_db']:.2f} | {r['snr_vs_target_db']:.2f} | {r['mean_tile_s'] * 1000:.1f}"
            )
        lines.append(f"| {r['name']} | {r['backend']} | {r.get('precision', 'fp32')} | "
                     f"{r.get('target', 'host-x86_64')} | {size} | {measured} |")
    return "\n".join(lines)
