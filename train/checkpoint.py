"""Per-epoch training checkpoints that survive kill -9.

Each checkpoint is a folder checkpoints/epoch-NNNN with the generator and discriminator
weights (Keras .weights.h5), the optimizer variables (.npz, loaded with allow_pickle=False)
and state.json. It is written under a temporary name and renamed into place; only then is
checkpoints/latest (a one-line file, itself replaced atomically) pointed at it. A kill at any
moment leaves either the previous or the new checkpoint as `latest`, never a partial one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from qmtgan.runtime.atomic import atomic_dir, write_text_atomic
from qmtgan.runtime.errors import QmtganError

KEEP = 2


def _opt_arrays(prefix: str, optimizer) -> dict[str, np.ndarray]:
    return {f"{prefix}{i:04d}": v.value.numpy() for i, v in enumerate(optimizer.variables)}


def save_checkpoint(ckpt_root: Path, epoch: int, models: dict, optimizers: dict, state: dict) -> Path:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"epoch-{epoch:04d}"
    with atomic_dir(final) as tmp:
        for name, model in models.items():
            model.save_weights(tmp / f"{name}.weights.h5")
        arrays: dict[str, np.ndarray] = {}
        for name, opt in optimizers.items():
            arrays.update(_opt_arrays(f"{name}/", opt))
        with open(tmp / "optimizers.npz", "wb") as fh:
            np.savez(fh, **arrays)
        (tmp / "state.json").write_text(json.dumps({"epoch": epoch, **state}, indent=1))
    write_text_atomic(ckpt_root / "latest", final.name + "\n")
    for old in sorted(ckpt_root.glob("epoch-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / "latest"
    if not pointer.exists():
        return None
    path = ckpt_root / pointer.read_text().strip()
    if not (path / "state.json").exists():
        raise QmtganError(f"{pointer} points at {path.name}, which is incomplete or missing")
    return path


def restore_checkpoint(path: Path, models: dict, optimizers: dict) -> dict:
    """Load weights and optimizer variables (optimizers must be built) and return the state."""
    for name, model in models.items():
        model.load_weights(path / f"{name}.weights.h5")
    with np.load(path / "optimizers.npz", allow_pickle=False) as npz:
        for name, opt in optimizers.items():
            variables = opt.variables
            keys = sorted(k for k in npz.files if k.startswith(f"{name}/"))
            if len(keys) != len(variables):
                raise QmtganError(f"{path}: optimizer '{name}' has {len(keys)} saved variables, "
                                  f"the model needs {len(variables)}")
            for var, key in zip(variables, keys):
                if tuple(var.shape) != npz[key].shape:
                    raise QmtganError(f"{path}: optimizer variable {key} has shape "
                                      f"{npz[key].shape}, expected {tuple(var.shape)}")
                var.assign(npz[key])
    return json.loads((path / "state.json").read_text())
