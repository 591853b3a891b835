"""The demo's stage times as a benchmark table (not a test): what `qmtgan demo` measured of
itself, with the machine it ran on, next to the device rows of `make bench`."""

from __future__ import annotations

import json
from pathlib import Path

from qmtgan.runtime.atomic import write_text_atomic
from qmtgan.runtime.errors import QmtganError


def stage_rows(report: dict) -> list[dict]:
    timings = report.get("timings")
    if not isinstance(timings, dict) or not isinstance(timings.get("total_s"), (int, float)):
        raise QmtganError("the demo report has no stage timings (timings.total_s)")
    total = float(timings["total_s"])
    return [{"stage": key.removesuffix("_s").replace("_", "-"), "seconds": float(value),
             "share": float(value) / total if total > 0 else 0.0}
            for key, value in timings.items() if key.endswith("_s") and isinstance(value, (int, float))]


def run(report_path: Path, out: Path) -> str:
    try:
        report = json.loads(Path(report_path).read_text())
    except (OSError, ValueError) as exc:
        raise QmtganError(f"{report_path}: not a readable demo report ({exc})") from exc
    rows = stage_rows(report)
    host = report.get("host") or {}
    lines = [f"Demo stage times ({report_path}; CPU: {host.get('cpu', 'not recorded')}, "
             f"{host.get('cpus', '?')} cores)", "", "| stage | s | share |", "|---|---:|---:|"]
    lines += [f"| {r['stage']} | {r['seconds']:.0f} | {100 * r['share']:.0f} % |" for r in rows]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "demo_stages.json", json.dumps({"report": str(report_path), "host": host,
                                                            "stages": rows}, indent=2))
    write_text_atomic(out / "demo_stages.md", text)
    return text
