"""Benchmark (not a test): seconds per 512x512 GAN training step and per 512x512 generator
forward pass of the paper generator, and the peak RSS of each, every measurement in a fresh
process so that one's memory does not count for the other.

    python -m qmtgan.bench.train_step [--patch-size 512] [--steps 10] [-o results/train_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def _measure(what: str, patch: int, steps: int, warmup: int) -> dict:
    """Runs inside the child process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from qmtgan.train.models.registry import build_generator, default_config
    from qmtgan.train.training import TrainConfig, _build, make_train_step

    cfg = default_config("multitempgan", patch_size=patch)
    rng = np.random.default_rng(0)
    ref = tf.constant(rng.uniform(-1, 1, (1, patch, patch, 12)).astype(np.float32))
    tgt = tf.constant(rng.uniform(-1, 1, (1, patch, patch, 12)).astype(np.float32))
    if what == "forward":
        generator = build_generator(cfg)
        fn = tf.function(lambda x: generator(x, training=False))
        call = lambda: fn(ref).numpy()
    else:
        tcfg = TrainConfig(adversarial=what == "gan_step")
        step = make_train_step(*_build(cfg, tcfg), tcfg)
        call = lambda: float(step(ref, tgt)["g_loss"])
    for _ in range(warmup):
        call()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return {"what": what, "patch": patch, "steps": steps, "mean_s": statistics.mean(times),
            "median_s": statistics.median(times), "min_s": min(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tensorflow": tf.__version__}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--child", choices=["forward", "gan_step", "generator_step"], help=argparse.SUPPRESS)
    ap.add_argument("-o", "--out", help="also write the records as JSON here")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_measure(args.child, args.patch_size, args.steps, args.warmup)))
        return []
    records = []
    for what in ("forward", "generator_step", "gan_step"):
        proc = subprocess.run([sys.executable, "-m", "qmtgan.bench.train_step", "--child", what,
                               "--patch-size", str(args.patch_size), "--steps", str(args.steps),
                               "--warmup", str(args.warmup)], capture_output=True, text=True, check=True)
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        records.append(rec)
        print(f"{what:15s} {args.patch_size}x{args.patch_size}: mean {rec['mean_s'] * 1000:8.1f} ms  "
              f"median {rec['median_s'] * 1000:8.1f} ms  peak RSS {rec['peak_rss_mb']:7.0f} MB")
    if args.out:
        from qmtgan.runtime.atomic import write_text_atomic

        write_text_atomic(args.out, json.dumps({"machine": {"cpu_count": os.cpu_count(),
                                                           "platform": platform.platform()},
                                                "records": records}, indent=2))
    return records


if __name__ == "__main__":
    main()
