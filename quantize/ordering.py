"""The paper's Table 2 ordering, checked on measured sweep rows: float >= 8-bit symmetric >=
8-bit stochastic > the best 6-bit row, and 2 bits collapse. Each claim is checked on the mean
over the pairs and on every pair, and carries its margin so that a near tie reads as one."""

from __future__ import annotations

# A ">=" holds when the left side is at most this much below the right: differences under it
# are below what the scene's SNR resolves between two quantizations of one model.
TIE_DB = 0.01
# "Collapses": the 2-bit model loses at least this much SNR against float (the error power
# at least doubles).
COLLAPSE_DB = 3.0


def _snrs(row: dict) -> list[float]:
    """The row's SNR per pair (one value when the sweep had one pair)."""
    return list(row.get("per_pair_snr_db") or [row["snr_db"]])


def _claim(text: str, left: dict | None, right: list[dict], relation: str) -> dict:
    if left is None or not right:
        return {"claim": text, "measured": False}
    pairs = len(_snrs(left))
    margins = []  # left minus the best of the right side, per pair, then the mean
    for k in range(pairs):
        margins.append(_snrs(left)[k] - max(_snrs(r)[k] for r in right))
    margins.append(left["snr_db"] - max(r["snr_db"] for r in right))
    ok = {">=": lambda m: m >= -TIE_DB, ">": lambda m: m > TIE_DB}[relation]
    return {"claim": text, "measured": True, "margin_db": margins[-1], "per_pair_margin_db": margins[:-1],
            "holds_mean": ok(margins[-1]), "holds_every_pair": all(ok(m) for m in margins[:-1])}


def table2_ordering(rows: list[dict]) -> list[dict]:
    """Each claim of the paper's ordering with its margin in dB (left minus right), on the mean
    and per pair; `measured` is False when the sweep lacks a row it needs."""
    by_label = {r["label"]: r for r in rows}
    get = by_label.get
    six = [r for r in (get("symmetric 6"), get("stochastic 6")) if r]
    claims = [
        _claim("float >= 8-bit symmetric", get("float32"), [get("symmetric 8")] if get("symmetric 8") else [],
               ">="),
        _claim("8-bit symmetric >= 8-bit stochastic", get("symmetric 8"),
               [get("stochastic 8")] if get("stochastic 8") else [], ">="),
        _claim("8-bit stochastic > every 6-bit row", get("stochastic 8"), six, ">"),
    ]
    float_row = get("float32")
    for label in ("symmetric 2", "stochastic 2"):
        row = get(label)
        if float_row is None or row is None:
            claims.append({"claim": f"{label} collapses", "measured": False})
            continue
        losses = [f - q for f, q in zip(_snrs(float_row), _snrs(row))]
        mean_loss = float_row["snr_db"] - row["snr_db"]
        claims.append({"claim": f"{label} collapses (loses >= {COLLAPSE_DB:g} dB)", "measured": True,
                       "margin_db": mean_loss, "per_pair_margin_db": losses,
                       "holds_mean": mean_loss >= COLLAPSE_DB,
                       "holds_every_pair": all(v >= COLLAPSE_DB for v in losses)})
    return claims


def markdown(claims: list[dict]) -> str:
    lines = [f"A `>=` holds within {TIE_DB:g} dB; margins are left minus right (for a collapse: the "
             "loss against float), on the mean over the pairs and per pair.", "",
             "| claim | margin (mean) dB | per pair dB | holds (mean) | holds (every pair) |",
             "|---|---:|---|---|---|"]
    for c in claims:
        if not c["measured"]:
            lines.append(f"| {c['claim']} | not measured (the sweep lacks a row) | | | |")
            continue
        per = ", ".join(f"{m:+.3f}" for m in c["per_pair_margin_db"])
        mean, every = ("yes" if c[k] else "no" for k in ("holds_mean", "holds_every_pair"))
        lines.append(f"| {c['claim']} | {c['margin_db']:+.3f} | {per} | {mean} | {every} |")
    return "\n".join(lines)
