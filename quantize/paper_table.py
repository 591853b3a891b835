"""`qmtgan quantize report --paper-config`: the accounting columns of the paper's Table 2 for
the paper generator (2,560,252 parameters, 36 tensors) and its data set (441 patches of
512x512x12), computed from the architecture alone: nothing is trained."""

from __future__ import annotations

from qmtgan.quantize.accounting import PAPER_IMAGES, PAPER_PIXELS, account, paper_row
from qmtgan.quantize.configs import table2_policies
from qmtgan.quantize.model import quantize_tensors
from qmtgan.quantize.policy import generator_tensors


def paper_config_rows() -> list[dict]:
    from qmtgan.train.models.registry import build_generator, default_config

    generator = build_generator(default_config("multitempgan", patch_size=64))  # sizes only
    tensors = generator_tensors(generator)
    rows = []
    for name, policy in table2_policies():
        acc = account(quantize_tensors(tensors, policy), PAPER_PIXELS, PAPER_IMAGES)
        rows.append({"model": name, "bits": policy.bits_column, "policy": policy.label,
                     **paper_row(acc)})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| Model | Bits | Q-Params | Side Info. | Memory (MB) | bpp | Ratio |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['bits']} | {r['q_params']:,} | {r['side_info']} | "
                     f"{r['memory_mb']:.2f} | {r['bpp']:.4f} | {r['ratio']:.2f} |")
    return "\n".join(lines)
