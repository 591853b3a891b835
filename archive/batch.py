"""`qmtgan encode-batch`: every pair of a list as a Ray task (archive/job.py), on a Ray cluster
(--address) or a local Ray instance started here. Pairs already finished from the same inputs
with the same settings are skipped; an interrupted pair resumes from its last training
checkpoint; a pair that fails becomes an error record and the batch goes on; a task whose
worker dies is retried. The catalogue (archive/stac.py) and OUT/batch.json are rewritten at
the end of every run from every finished pair."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from qmtgan.archive.job import BatchSettings, encode_pair_job, error_record, finished_record
from qmtgan.archive.pairs import PairJob, input_bytes, inputs_sha256
from qmtgan.archive.stac import write_catalogue
from qmtgan.runtime.atomic import write_text_atomic
from qmtgan.runtime.errors import QmtganError

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = "qmtgan.archive.batch/1"
# Tasks pass small records; the object store only has to hold them.
OBJECT_STORE_BYTES = 128 * 2**20
# A worker process killed mid-pair (out of memory, a lost node) costs a retry, not the pair.
WORKER_RETRIES = 3


def _encode_task(job: dict, out: str, settings: dict, inputs: str) -> dict:
    """What a Ray worker runs (plain dicts in and out)."""
    job = PairJob(**{**job, "reference": Path(job["reference"]), "target": Path(job["target"])})
    settings = BatchSettings(**{**settings, "formats": tuple(settings["formats"])})
    return encode_pair_job(job, Path(out), settings, inputs)


class _Lock:
    """One driver per output folder at a time (released by the kernel if the driver dies)."""

    def __init__(self, out: Path):
        self.path = out / ".batch.lock"

    def __enter__(self) -> "_Lock":
        self.fh = open(self.path, "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.close()
            raise QmtganError(f"{self.path.parent}: another encode-batch is writing here") from None
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


def _start_ray(
    address: str | None, workers: int, cpus_per_pair: float, gpus_per_pair: float
) -> tuple[int, bool]:
    """Join ``address`` or start a local instance with room for ``workers`` pairs: (how many
    pairs can run at once, whether this driver started Ray)."""
    import ray

    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **options)
    else:
        ray.init(
            num_cpus=max(1, round(workers * cpus_per_pair)),
            num_gpus=workers * gpus_per_pair or None,
            object_store_memory=OBJECT_STORE_BYTES,
            **options,
        )
    resources = ray.cluster_resources()
    slots = int(resources.get("CPU", 0) // cpus_per_pair)
    if gpus_per_pair:
        slots = min(slots, int(resources.get("GPU", 0) // gpus_per_pair))
    if slots < 1:
        ray.shutdown()
        raise QmtganError(
            f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} "
            f"GPUs: not enough for one pair ({cpus_per_pair:g} CPUs, {gpus_per_pair:g} GPUs)"
        )
    return slots, not address


def _worker_env(cpus_per_pair: float) -> dict:
    """TensorFlow's thread pools sized to the task's CPUs; the driver's Keras home and log level."""
    threads = str(max(1, int(cpus_per_pair)))
    return {
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": threads,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        **({"KERAS_HOME": os.environ["KERAS_HOME"]} if "KERAS_HOME" in os.environ else {}),
    }


def _failure(exc: Exception) -> str:
    """The pair's error in one line: the task's own exception, not Ray's wrapping of it."""
    import ray.exceptions

    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None else exc
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return f"{type(cause).__name__}: {first}"


def _run_tasks(
    todo: list[tuple[PairJob, str]],
    out: Path,
    settings: BatchSettings,
    slots: int,
    cpus_per_pair: float,
    gpus_per_pair: float,
    progress: bool,
) -> tuple[list[dict], list[dict]]:
    import ray
    from tqdm import tqdm

    task = ray.remote(_encode_task).options(
        num_cpus=cpus_per_pair,
        num_gpus=gpus_per_pair,
        max_retries=WORKER_RETRIES,
        retry_exceptions=False,
        runtime_env={"env_vars": _worker_env(cpus_per_pair)},
    )
    plain = {**asdict(settings), "formats": list(settings.formats)}
    # the largest pairs first, so that no long pair starts last while the other workers idle
    todo = sorted(todo, key=lambda t: input_bytes(t[0]), reverse=True)
    pending = {task.remote(j.to_dict(), str(out), plain, inputs): j for j, inputs in todo}
    done, failed = [], []
    with tqdm(
        total=len(todo), unit="pair", desc="encode-batch", disable=not progress, dynamic_ncols=True
    ) as bar:
        while pending:
            bar.set_postfix(done=len(done), running=min(slots, len(pending)), failed=len(failed))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=10.0)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    done.append(ray.get(ref))
                    log.info(f"  {job.id}: {done[-1]['bpp']:.4f} bpp, SNR {done[-1]['snr_db']:.2f} dB")
                except Exception as exc:  # the task's error or a worker lost past its retries
                    failed.append(error_record(out, job, _failure(exc)))
                    log.warning(f"  {job.id}: failed: {failed[-1]['error']}")
                bar.update(1)
        bar.set_postfix(done=len(done), running=0, failed=len(failed))
    return done, failed


def run_batch(
    jobs: list[PairJob],
    out: Path,
    settings: BatchSettings,
    workers: int = 1,
    address: str | None = None,
    cpus_per_pair: float = 1.0,
    gpus_per_pair: float = 0.0,
    progress: bool = True,
) -> dict:
    """Encode every pair not yet finished; write the catalogue and OUT/batch.json; the summary."""
    from tqdm import tqdm

    if workers < 1 or cpus_per_pair <= 0 or gpus_per_pair < 0:
        raise QmtganError("workers and CPUs per pair must be positive, GPUs per pair not negative")
    out = Path(out).resolve()  # the workers' working folder is not this one
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with _Lock(out):
        skipped, todo = [], []
        for job in tqdm(jobs, desc="check finished", unit="pair", disable=not progress):
            inputs = inputs_sha256(job)
            record = finished_record(out, job, settings, inputs)
            (skipped if record else todo).append(record or (job, inputs))
        log.info(f"{len(jobs)} pairs: {len(skipped)} already finished, {len(todo)} to encode")
        done, failed, slots = [], [], 0
        if todo:
            import ray

            slots, started = _start_ray(address, workers, cpus_per_pair, gpus_per_pair)
            try:
                done, failed = _run_tasks(todo, out, settings, slots, cpus_per_pair, gpus_per_pair, progress)
            finally:
                if started:
                    ray.shutdown()
        wall = time.perf_counter() - t0
        finished = [*skipped, *done]
        catalogue = write_catalogue(out, finished)
        summary = {
            "schema": SUMMARY_SCHEMA,
            "pairs": len(jobs),
            "encoded": len(done),
            "skipped": len(skipped),
            "failed": len(failed),
            "errors": {r["id"]: r["error"] for r in failed},
            "settings": asdict(settings),
            "workers": slots,
            "cpus_per_pair": cpus_per_pair,
            "gpus_per_pair": gpus_per_pair,
            "address": address or "local",
            "wall_s": wall,
            "pairs_per_hour": 3600 * len(done) / wall if done else None,
            "catalogue": str(catalogue),
            "finished": sorted(r["id"] for r in finished),
        }
        write_text_atomic(out / "batch.json", json.dumps(summary, indent=2))
    return summary
