"""Benchmark (not a test): seconds per 512x512 GAN training step and per 512x512 generator
forward pass of the paper generator, and the demo generator's training step (its L2 recipe) in
steps/s, GFLOP/s and percent of the host's peak, with the peak RSS of each, every measurement
in a fresh process so that one's memory does not count for the other. A training step's work
is counted as three times the convolution MACs of the layers it trains (forward, input
gradients, weight gradients) plus the forward of the fixed ones where a step computes them.

    qmtgan bench train-step [--patch-size 512] [--steps 10] [-o results/train_step.json]
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path



def _measure(what: str, patch: int, steps: int, warmup: int) -> dict:
    """Runs inside the child process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from qmtgan import memory

    memory.install()  # as every qmtgan command runs
    import numpy as np
    import tensorflow as tf

    from qmtgan.train.device import training_device
    from qmtgan.train.models.registry import build_generator, default_config
    from qmtgan.train.training import (TrainConfig, _build, caches_spectral_base, make_train_step,
                                       spectral_bases)

    from qmtgan.train.presets import DEMO_GENERATOR, DEMO_TRAIN

    demo = what == "demo_step"
    cfg = default_config("multitempgan", patch_size=patch, **(DEMO_GENERATOR if demo else {}))
    rng = np.random.default_rng(0)
    ref = tf.constant(rng.uniform(-1, 1, (1, patch, patch, 12)).astype(np.float32))
    tgt = tf.constant(rng.uniform(-1, 1, (1, patch, patch, 12)).astype(np.float32))
    if what == "forward":
        generator = build_generator(cfg)
        fn = tf.function(lambda x: generator(x, training=False))
        call = lambda: fn(ref).numpy()
    else:
        tcfg = TrainConfig(**DEMO_TRAIN) if demo else TrainConfig(adversarial=what == "gan_step")
        parts = _build(cfg, tcfg)
        generator = parts[0]
        given = caches_spectral_base(cfg, tcfg)  # as the trainer runs it
        step = make_train_step(*parts, tcfg, given)
        args = (ref, tgt, spectral_bases(generator, ref.numpy())) if given else (ref, tgt)
        call = lambda: float(step(*args)["g_loss"])
    for _ in range(warmup):
        call()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    record = {}
    if demo:
        from qmtgan.bench.machine import host_peak
        from qmtgan.bench.records import throughput
        from qmtgan.train.models.summary import layer_macs
        from qmtgan.train.training import FIXED_LAYERS

        # trained layers: forward, input and weight gradients; the fixed map: its forward, once
        # per patch instead of every step when the trainer caches it
        fixed = 0 if caches_spectral_base(cfg, tcfg) else 1
        work = sum((fixed if f"{layer.name}/".startswith(FIXED_LAYERS) else 3) * layer_macs(layer)
                   for layer in generator.layers)
        median = statistics.median(times)
        record = {"steps_per_s": 1 / median, **throughput(work, median, host_peak())}
    return {"what": what, "patch": patch, "steps": steps, "mean_s": statistics.mean(times),
            "median_s": statistics.median(times), "min_s": min(times), **record,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tensorflow": tf.__version__, "device": training_device(),
            "tf_cpu_allocator": os.environ.get(memory.BFC_SWITCH, "default")}


CHILDREN = ("forward", "generator_step", "gan_step", "demo_step")


def run(patch_size: int, steps: int, warmup: int, out: Path | None) -> list[dict]:
    """Time each of CHILDREN in a fresh process; print a line each and write the records to `out`."""
    records = []
    for what in CHILDREN:
        proc = subprocess.run([sys.executable, "-m", "qmtgan.bench.train_step", what, str(patch_size),
                               str(steps), str(warmup)], capture_output=True, text=True)
        if proc.returncode:
            from qmtgan.runtime.errors import QmtganError

            raise QmtganError(f"the {what} measurement failed:\n{proc.stderr[-4000:]}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        records.append(rec)
        rate = ""
        if "steps_per_s" in rec:
            rate = f"  {rec['steps_per_s']:.2f} steps/s, {rec['gflops']:.1f} GFLOP/s"
        if rec.get("fraction_of_peak") is not None:
            rate += f" ({100 * rec['fraction_of_peak']:.1f} % of peak)"
        print(f"{what:15s} {patch_size}x{patch_size} on {rec['device']}: "
              f"mean {rec['mean_s'] * 1000:8.1f} ms  median {rec['median_s'] * 1000:8.1f} ms  "
              f"peak RSS {rec['peak_rss_mb']:7.0f} MB{rate}")
    if out:
        from qmtgan.runtime.atomic import write_text_atomic

        write_text_atomic(out, json.dumps({"machine": {"cpu_count": os.cpu_count(),
                                                       "platform": platform.platform()},
                                           "records": records}, indent=2))
    return records


if __name__ == "__main__":  # one measurement: WHAT PATCH STEPS WARMUP, started by run()
    what, patch, steps, warmup = sys.argv[1], *map(int, sys.argv[2:5])
    print(json.dumps(_measure(what, patch, steps, warmup)))
