"""Soak (not a test, though a test runs a short one): decode the same scene N times in one
process with one bundle, streaming, and record each pass's wall time and the process's resident
memory after it. A leak shows as RSS that keeps growing; a slow-down as times that drift.

    qmtgan bench soak --bundle B --reference R.tif [--passes 50] -o results/soak
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from qmtgan.runtime.atomic import write_text_atomic


def rss_mib() -> float:
    """This process's resident memory now (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def soak(bundle_path: Path, reference: Path, passes: int, progress: bool = False) -> list[dict]:
    """[{pass, seconds, rss_mib}] for `passes` streamed decodes of `reference` in this process."""
    from qmtgan.runtime.bundle import load_bundle
    from qmtgan.runtime.raster import SceneWriter, streaming_gdal
    from qmtgan.runtime.stream import SceneReader, stream_scene

    bundle = load_bundle(bundle_path)
    backend = bundle.backend()
    rows = []
    with tempfile.TemporaryDirectory(prefix="qmtgan-soak-") as tmp:
        for i in range(passes):
            start = time.perf_counter()
            with streaming_gdal(), SceneReader(reference) as ref:
                with SceneWriter(
                    Path(tmp) / "decoded.tif", ref.band_count, *ref.shape, ref.crs, ref.transform
                ) as w:
                    stream_scene(backend, ref, bundle.normalization, bundle.tile, 0,
                                 lambda win: w.write(win.row, win.col, win.prediction, win.valid))
            rows.append({"pass": i + 1, "seconds": time.perf_counter() - start, "rss_mib": rss_mib()})
            if progress:
                print(
                    f"pass {i + 1}/{passes}: {rows[-1]['seconds']:.3f} s, RSS {rows[-1]['rss_mib']:.1f} MiB",
                    flush=True,
                )
    return rows


def summary(rows: list[dict], settle: int = 5) -> dict:
    """RSS growth and time drift after the first `settle` passes (allocators and caches warm up)."""
    import numpy as np

    later = rows[settle:] or rows
    times = [r["seconds"] for r in later]
    half = len(times) // 2 or 1
    return {
        "passes": len(rows),
        "rss_first_mib": rows[0]["rss_mib"],
        "rss_settled_mib": later[0]["rss_mib"],
        "rss_last_mib": rows[-1]["rss_mib"],
        "rss_growth_after_settle_mib": rows[-1]["rss_mib"] - later[0]["rss_mib"],
        "median_s_first_half": float(np.median(times[:half])),
        "median_s_second_half": float(np.median(times[half:])),
    }


def write_report(out: Path, rows: list[dict], meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qmtgan.runtime.atomic import atomic_file

    s = summary(rows)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "soak.json", json.dumps({**meta, "summary": s, "passes": rows}, indent=1))
    write_text_atomic(
        out / "soak.md",
        "\n".join(
            [
                f"# Soak: {s['passes']} streamed decodes in one process",
                "",
                f"Bundle `{meta['bundle']}`, scene `{meta['reference']}`, {meta['host']['cpu']}.",
                "",
                "| RSS after pass 1 (MiB) | after pass 6 | after the last | growth after pass 6 | "
                "median s, first half | "
                "median s, second half |",
                "|---:|---:|---:|---:|---:|---:|",
                f"| {s['rss_first_mib']:.1f} | {s['rss_settled_mib']:.1f} | {s['rss_last_mib']:.1f} | "
                f"{s['rss_growth_after_settle_mib']:.1f} | {s['median_s_first_half']:.3f} | "
                f"{s['median_s_second_half']:.3f} |",
                "",
                "![soak](soak.png)",
                "",
            ]
        ),
    )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([r["pass"] for r in rows], [r["rss_mib"] for r in rows], label="RSS (MiB)")
    ax.set_xlabel("pass")
    ax.set_ylabel("RSS (MiB)")
    ax2 = ax.twinx()
    ax2.plot([r["pass"] for r in rows], [r["seconds"] for r in rows], color="C1", label="seconds")
    ax2.set_ylabel("seconds per decode")
    fig.legend(loc="upper center", ncol=2)
    fig.tight_layout()
    with atomic_file(out / "soak.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run(bundle: Path, reference: Path, passes: int, out: Path) -> dict:
    """Soak with a progress bar; write the report into `out`; its summary."""
    from qmtgan.bench.machine import describe_host

    rows = soak(bundle, reference, passes, progress=True)
    write_report(out, rows, {"bundle": str(bundle), "reference": str(reference), "host": describe_host()})
    return summary(rows)
