"""`qmtgan encode`: reference + target -> trained (or given) generator -> .qmtg payload."""

from __future__ import annotations

import tempfile
from pathlib import Path

from qmtgan.quantize.accounting import account
from qmtgan.quantize.codec import scene_header, to_payload
from qmtgan.quantize.model import quantize_tensors
from qmtgan.quantize.policy import Policy, generator_tensors
from qmtgan.runtime import payload as fmt
from qmtgan.runtime.errors import QmtganError


def encode_pair(reference_path: Path, target_path: Path, out: Path, policy: Policy,
                model_dir: Path | None, epochs: int, seed: int) -> dict:
    from qmtgan.train.ingest import read_scene
    from qmtgan.train.models.registry import default_config
    from qmtgan.train.pair import align_to_reference
    from qmtgan.train.training import TrainConfig, train

    reference = read_scene(reference_path)
    target = align_to_reference(reference, read_scene(target_path))
    if model_dir is None:  # train a generator for this pair; only the payload is kept
        with tempfile.TemporaryDirectory(prefix="qmtgan-encode-") as tmp:
            identity = {"reference": str(reference_path), "target": str(target_path),
                        "height": reference.shape[0], "width": reference.shape[1]}
            train(reference, target, Path(tmp), default_config("multitempgan"),
                  TrainConfig(epochs=epochs, seed=seed), identity)
            return _encode(reference, Path(tmp), reference_path, out, policy, seed)
    return _encode(reference, model_dir, reference_path, out, policy, seed)


def _encode(reference, model_dir: Path, reference_path: Path, out: Path, policy: Policy, seed: int) -> dict:
    from qmtgan.train.model_io import load_model

    generator, cfg, norm, meta = load_model(model_dir)
    data = meta.get("data", {})
    trained_on = (data.get("height"), data.get("width"))
    if None not in trained_on and trained_on != reference.shape:
        raise QmtganError(f"{model_dir} was trained on a {trained_on[0]}x{trained_on[1]} px scene, "
                          f"{reference_path} is {reference.shape[0]}x{reference.shape[1]} px")
    qmodel = quantize_tensors(generator_tensors(generator), policy, seed)
    payload = to_payload(qmodel, cfg.to_dict(), norm, scene_header(reference, cfg.patch_size))
    fmt.write(out, payload)
    pixels = reference.data.size
    acc = account(qmodel, pixels, 1)
    size = out.stat().st_size
    overhead = size - (acc.total_bits + 7) // 8
    return {"file_bytes": size, "bpp_file": 8 * size / pixels, "bpp_eq1": acc.bpp,
            "header_bytes": overhead, "accounting": acc.to_dict()}
