"""The farm bench's report: one row per board (what it ran, how busy it was, its latencies),
then one row per configuration; Markdown, JSON and a PNG of each configuration's median
latency on each board."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qmtgan.runtime.atomic import atomic_file, write_text_atomic


def board_rows(records: list[dict]) -> list[dict]:
    rows = []
    for board in sorted({r["board"] for r in records if r["board"]}):
        mine = [r for r in records if r["board"] == board]
        ok = [r for r in mine if r["status"] == "ok"]
        rows.append(
            {
                "board": board,
                "key": mine[0]["key"],
                "configs": len(mine),
                "ok": len(ok),
                "failed": len(mine) - len(ok),
                "busy_s": sum(r["busy_s"] for r in mine),
                "median_p50_ms": float(np.median([r["latency_ms"]["p50"] for r in ok])) if ok else None,
            }
        )
    return rows


def write_farm_report(out: Path, records: list[dict], meta: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    boards = board_rows(records)
    lines = [
        f"# Farm bench: key {meta['key']} at {meta['tracker']}",
        "",
        f"{len(records)} configurations on {len(boards)} boards in {meta['wall_s']:.1f} s "
        f"({meta['tiles']} tiles of {meta['tile']} px each).",
        "",
        "| board | key | configurations | ok | failed | busy (s) | median p50 (ms) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for b in boards:
        p50 = f"{b['median_p50_ms']:.2f}" if b["median_p50_ms"] is not None else "-"
        lines.append(
            f"| {b['board']} | {b['key']} | {b['configs']} | {b['ok']} | {b['failed']} | "
            f"{b['busy_s']:.1f} | {p50} |"
        )
    lines += [
        "",
        "| configuration | board | p50 (ms) | p90 (ms) | SNR vs target (dB) | status |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in sorted(records, key=lambda r: r["label"]):
        if r["status"] == "ok":
            lines.append(
                f"| {r['label']} | {r['board']} | {r['latency_ms']['p50']:.2f} | "
                f"{r['latency_ms']['p90']:.2f} | {r['snr_vs_target_db']:.2f} | ok |"
            )
        else:
            lines.append(f"| {r['label']} | {r['board'] or '-'} | | | | {r['error']} |")
    write_text_atomic(out / "farm.md", "\n".join(lines) + "\n")
    write_text_atomic(out / "farm.json", json.dumps({**meta, "boards": boards, "records": records}, indent=2))
    _plot(out / "farm.png", records)
    return out / "farm.md"


def _plot(path: Path, records: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = sorted((r for r in records if r["status"] == "ok"), key=lambda r: r["label"])
    boards = sorted({r["board"] for r in ok})
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(len(ok), 3) + 1))
    for i, r in enumerate(ok):
        ax.barh(i, r["latency_ms"]["p50"], color=f"C{boards.index(r['board'])}")
    ax.set_yticks(range(len(ok)), [r["label"] for r in ok], fontsize=7)
    ax.set_xlabel("median latency per tile (ms)")
    for j, b in enumerate(boards):
        ax.bar(0, 0, color=f"C{j}", label=b)
    if boards:
        ax.legend(fontsize=7, title="board")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
