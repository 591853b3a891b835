"""The float baseline of every benchmark: the trained Keras generator in graph mode
(tf.function), fixed batch 1 at the bundles' tile, timed on the same tiles by the same loop as
the device probe (runtime/probe.py), in its own fresh process.

    python -m qmtgan.bench.keras_probe --model RUN --tiles-file tiles.npz [--outputs float.npy] ..."""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    from qmtgan.runtime.probe import worker_arguments

    a = worker_arguments("python -m qmtgan.bench.keras_probe", "--model").parse_args(argv)
    import tensorflow as tf

    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from qmtgan.convert.build import tool_versions
    from qmtgan.convert.export import deployable_generator
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.probe import measure
    from qmtgan.runtime.tileset import load_tiles
    from qmtgan.train.keras_backend import KerasBackend

    try:
        tiles = load_tiles(a.tiles)
        t0 = time.perf_counter()
        model, _, norm, _ = deployable_generator(a.model, tiles.tile)
        backend = KerasBackend(model)
        backend.threads = a.threads
        init_s = time.perf_counter() - t0
        record = measure(backend, tiles, norm, a.warmup, a.runs, a.min_time, init_s, a.outputs)
    except QmtganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({**record, "bundle": "keras-fp32", "backend": "keras", "precision": "fp32",
                      "versions": tool_versions()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
