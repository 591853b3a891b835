"""Benchmark outputs: bench.json (documented in docs/bench-schema.md), bench.csv, bench.md and
three PNG plots (latency vs SNR with its Pareto front, latency bars, peak memory)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from qmtgan.runtime.atomic import atomic_file, write_text_atomic

COLUMNS = [
    ("label", "configuration"),
    ("config.precision", "precision"),
    ("model_bytes", "size (KB)"),
    ("latency_ms.mean", "mean ms"),
    ("latency_ms.p50", "p50 ms"),
    ("latency_ms.p90", "p90 ms"),
    ("latency_ms.p99", "p99 ms"),
    ("latency_ms.std", "std ms"),
    ("init_ms", "init ms"),
    ("first_ms", "first ms"),
    ("speedup_vs_keras", "x Keras"),
    ("peak_rss_mb", "peak RSS MB"),
    ("snr_vs_float_db", "SNR vs float dB"),
    ("snr_vs_target_db", "SNR vs target dB"),
    ("lmse_vs_target", "LMSE"),
    ("megapixels_per_s", "MP/s"),
    ("gflops", "GFLOP/s"),
    ("fraction_of_peak", "of peak"),
]


def _get(record: dict, dotted: str):
    value = record
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "model_bytes":
        return f"{value / 1024:.0f}"
    if key == "fraction_of_peak":
        return f"{100 * value:.1f} %"
    if key == "speedup_vs_keras":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.3g}"
    return str(value)


def markdown(records: list[dict], meta: dict) -> str:
    ok = [r for r in records if r["status"] == "ok"]
    lines = [
        f"# qmtgan bench: {meta['tiles']} real scene tiles of {meta['tile']}x{meta['tile']}",
        "",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cpus']} CPUs; "
        f"peak {meta['peak']['formula']} = "
        f"{meta['peak']['peak_gflops']} GFLOP/s; measured numpy float32 matmul "
        f"{meta['sgemm_gflops']:.0f} GFLOP/s.",
        f"Timing: {meta['timing']['warmup']} warm-up runs, then at least {meta['timing']['runs']} runs and "
        f"{meta['timing']['min_time_s']} s; each configuration in a fresh process. "
        "x Keras = Keras mean / this mean "
        "(the TF/Keras float model in graph mode, measured in this run on this host, "
        "with the same thread count "
        "when it ran with it). SNR vs float is against the first Keras configuration's outputs.",
        "",
        "| " + " | ".join(h for _, h in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in ok:
        lines.append("| " + " | ".join(_fmt(k, _get(r, k)) for k, _ in COLUMNS) + " |")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed configurations", ""] + [f"- {r['label']}: {r['error']}" for r in failed]
    lines += _repeat_stability(ok)
    lines += [
        "",
        "Emulated-board (qemu) latencies measure the emulator, not a board; its peak RSS includes qemu.",
        "Over TVM RPC, latency is the board's own time_evaluator and peak RSS is not measured.",
        "",
    ]
    return "\n".join(lines)


def _repeat_stability(ok: list[dict]) -> list[str]:
    """With --repeat: each configuration's later passes against its first (p50 latency, peak RSS)."""
    first = {r["label"]: r for r in ok if r.get("pass", 1) == 1}
    later = [r for r in ok if r.get("pass", 1) > 1 and r["label"].rsplit(" (pass", 1)[0] in first]
    if not later:
        return []
    lines = [
        "",
        "## Repeat stability (each pass against pass 1, same configuration)",
        "",
        "| configuration | pass | p50 ms | x pass 1 | peak RSS MB | - pass 1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in later:
        base = first[r["label"].rsplit(" (pass", 1)[0]]
        rss = (
            (r["peak_rss_mb"] - base["peak_rss_mb"])
            if r.get("peak_rss_mb") and base.get("peak_rss_mb")
            else None
        )
        lines.append(
            f"| {base['label']} | {r['pass']} | {r['latency_ms']['p50']:.2f} | "
            f"{r['latency_ms']['p50'] / base['latency_ms']['p50']:.3f} | "
            f"{_fmt('peak_rss_mb', r.get('peak_rss_mb'))} | {'-' if rss is None else f'{rss:+.1f}'} |"
        )
    return lines


def write_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    keys = [
        "label",
        "status",
        "error",
        "config.name",
        "config.backend",
        "config.precision",
        "config.target",
        "config.where",
        "config.threads",
        "tile",
        "tiles",
        "model_bytes",
        "init_ms",
        "first_ms",
        *(f"latency_ms.{k}" for k in ("count", "min", "mean", "p50", "p90", "p99", "max", "std")),
        "peak_rss_mb",
        "snr_vs_float_db",
        "lmse_vs_float",
        "snr_vs_target_db",
        "lmse_vs_target",
        "megapixels_per_s",
        "macs_per_tile",
        "gflops",
        "peak_gflops",
        "fraction_of_peak",
        "speedup_vs_keras",
    ]
    w = csv.writer(buf)
    w.writerow(keys)
    for r in records:
        w.writerow(["" if _get(r, k) is None else _get(r, k) for k in keys])
    return buf.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower latency and higher SNR."""
    return [i for i, (lat, snr) in enumerate(points)
            if not any(l2 <= lat and s2 >= snr and (l2, s2) != (lat, snr) for l2, s2 in points)]


def plots(out: Path, records: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r["status"] == "ok"]
    written = []
    pts = [(r["latency_ms"]["mean"], r["snr_vs_target_db"]) for r in ok]
    front = set(pareto_front(pts))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    # one colour per bundle (legend), one marker per place it ran; only the front is labelled
    names = list(dict.fromkeys(f"{r['config']['name']} ({r['config']['backend']})" for r in ok))
    markers = {"local": "o", "qemu": "s", "ssh": "^", "rpc": "D"}
    for i, (r, (lat, snr)) in enumerate(zip(ok, pts)):
        name = f"{r['config']['name']} ({r['config']['backend']})"
        ax.scatter(
            lat,
            snr,
            color=f"C{names.index(name) % 10}",
            marker=markers.get(r["config"]["where"], "o"),
            s=40 + 15 * (r["config"]["threads"] or 1),
            edgecolor="k" if i in front else "none",
            zorder=3,
            label=name if name not in ax.get_legend_handles_labels()[1] else None,
        )
        if i in front:
            ax.annotate(f"{r['config']['name']}, {r['config']['threads'] or 'default'} thr", (lat, snr),
                        fontsize=7, xytext=(4, 4), textcoords="offset points")
    fr = sorted(pts[i] for i in front)
    if fr:
        ax.plot(*zip(*fr), color="k", lw=0.8, ls="--", label="Pareto front")
    ax.legend(fontsize=7, loc="best")
    ax.set(
        xscale="log",
        xlabel="mean latency per tile (ms, log); marker size: threads; o local, s qemu, ^ ssh, D rpc",
        ylabel="SNR vs true target (dB)",
        title="latency vs SNR",
    )
    ax.grid(alpha=0.3)
    written.append(_save(fig, out / "pareto.png"))
    for key, label, name in (
        ("latency_ms.p50", "p50 latency per tile (ms, log); whisker: p90", "latency.png"),
        ("peak_rss_mb", "peak RSS (MB)", "memory.png"),
    ):
        rows = [r for r in ok if _get(r, key) is not None]
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
        y = range(len(rows))
        values = [_get(r, key) for r in rows]
        if key.startswith("latency"):
            err = [[0] * len(rows), [r["latency_ms"]["p90"] - r["latency_ms"]["p50"] for r in rows]]
            ax.barh(y, values, xerr=err, color="C0")
            ax.set_xscale("log")
        else:
            ax.barh(y, values, color="C2")
        ax.set_yticks(list(y), [r["label"] for r in rows], fontsize=7)
        ax.set_xlabel(label)
        ax.invert_yaxis()
        written.append(_save(fig, out / name))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def write_report(out: Path, records: list[dict], meta: dict) -> None:
    from qmtgan.bench.machine import describe_host, host_peak, measured_sgemm_gflops
    from qmtgan.convert.build import tool_versions

    out.mkdir(parents=True, exist_ok=True)
    meta = {
        **meta,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_host(),
        "peak": host_peak(),
        "sgemm_gflops": measured_sgemm_gflops(),
        "versions": tool_versions(),
    }
    doc = {"schema": "qmtgan.bench-report/1", **meta, "records": records}
    write_text_atomic(out / "bench.json", json.dumps(doc, indent=1))
    write_text_atomic(out / "bench.csv", write_csv(records))
    write_text_atomic(out / "bench.md", markdown(records, meta))
    if any(r["status"] == "ok" for r in records):
        plots(out, records)
