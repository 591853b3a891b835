"""Worker processes for jobs that are independent and each mostly single-threaded (a pair's
baselines, a pair's training): one single-threaded process per job, so the jobs fill the cores
between them instead of each leaving cores idle in its serial parts."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

from qmtgan import logs, memory

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS")


@contextlib.contextmanager
def single_threaded_children() -> Iterator[None]:
    """Environment that processes started inside inherit: one thread per numeric library."""
    saved = {n: os.environ.get(n) for n in THREAD_VARIABLES}
    os.environ.update({n: "1" for n in THREAD_VARIABLES})
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def _start_worker(verbosity: int) -> None:
    memory.install()
    logs.configure(verbosity)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """``workers`` single-threaded processes, started by spawn (the caller may hold TensorFlow's
    threads, which a fork would copy half-alive), with the caller's memory settings and logging."""
    with single_threaded_children(), ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
            initargs=(logs.verbosity(),)) as pool:
        yield pool
