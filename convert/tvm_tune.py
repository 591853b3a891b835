"""MetaSchedule tuning of a Relax module for a board, with a JSON database that later runs reuse.

TVM 0.27 (MetaSchedule lives in tvm.s_tir.meta_schedule). The module from `from_onnx` is
legalized and fused exactly as the default CPU pipeline does (so the fused PrimFuncs are the
tuning tasks), `extract_tasks` lists them. `trials` is the database's total budget
(`trials.json` counts what was spent): a later run with a larger one spends the difference on
every task, the search seeded by the records; with no more budget only tasks without a record
are tuned (`tune_tasks`). The build applies the
database before lowering (`tvm_rules.database_pass`). Functions without a record are compiled
as in an untuned build.

The database lives in `<root>/<board>/database_{workload,tuning_record}.json` (+ logs/), one per
board: MetaSchedule's lookup ignores the target, so boards must not share one.

Candidates are measured where they run: LocalRunner for a board of this machine's
architecture, an RPC tracker (`python -m tvm.exec.rpc_tracker` + `python -m tvm.exec.rpc_server
--tracker HOST:PORT --key KEY` on the board) for another one. Applying an existing database
(trials 0) needs no runner.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from qmtgan.runtime.errors import QmtganError
from qmtgan.targets.registry import Board

log = logging.getLogger(__name__)

DEFAULT_TRIALS = 2000
BUILDER_TIMEOUT_S = 120.0  # a builder worker first imports the tensor intrinsics, which takes a while
# Evolutionary search population (MetaSchedule's default: 512). Searching one batch of a conv
# task costs ~1 min at 512 on 2 cores, whatever the trials; half of it halves that.
SEARCH_POPULATION = 256


def default_database_root() -> Path:
    """$QMTGAN_CACHE/tvm-tuning, else ~/.cache/qmtgan/tvm-tuning (never inside the repo)."""
    from qmtgan.targets.device_files import cache_dir

    return cache_dir() / "tvm-tuning"


@dataclass
class TuningOptions:
    trials: int = DEFAULT_TRIALS
    database_root: Path = field(default_factory=default_database_root)
    rpc_tracker: str | None = None  # HOST:PORT of a TVM RPC tracker the board registered with
    rpc_key: str | None = None      # the board's key at that tracker

    def database_dir(self, board: Board) -> Path:
        return Path(self.database_root).expanduser() / board.name


def tuning_target(board: Board):
    """The board's target with `num-cores` (MetaSchedule's parallel extents need it)."""
    import tvm

    spec = dict(board.tvm_target)
    if spec.get("kind") == "llvm" and "num-cores" not in spec:
        spec["num-cores"] = os.cpu_count() or 1  # only boards of this machine lack it
    return tvm.target.Target(spec)


def prepare(mod, target):
    import tvm

    from qmtgan.convert.tvm_rules import prepare_passes

    with target:
        return tvm.transform.Sequential(prepare_passes(target))(mod)


def _open_database(work_dir: Path, target):
    from tvm.s_tir import meta_schedule as ms

    work_dir.mkdir(parents=True, exist_ok=True)
    stamp = work_dir / "target.json"  # the records' target (MetaSchedule's lookup ignores it)
    spec = json.dumps(json.loads(str(target)), sort_keys=True)
    if stamp.exists() and stamp.read_text() != spec:
        # the schedules stay valid code for the new target, only maybe not the fastest
        log.warning(f"{work_dir} was tuned for {stamp.read_text()}, now {spec}: its records are reused "
                    "(use another --tuning-db to tune from scratch)")
    stamp.write_text(spec)
    try:
        return ms.database.JSONDatabase(work_dir=str(work_dir), module_equality="structural")
    except Exception:  # TVM raises its own error types for a record it cannot replay
        _set_aside_records_that_do_not_load(work_dir)
        return ms.database.JSONDatabase(work_dir=str(work_dir), module_equality="structural")


def _loads(work_dir: Path, records: list[str]) -> bool:
    """Whether MetaSchedule loads these record lines next to the database's workloads."""
    import shutil
    import tempfile

    from tvm.s_tir import meta_schedule as ms

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(work_dir / "database_workload.json", tmp)
        Path(tmp, "database_tuning_record.json").write_text("".join(f"{r}\n" for r in records))
        try:
            ms.database.JSONDatabase(work_dir=tmp, module_equality="structural")
            return True
        except Exception:
            return False


def _set_aside_records_that_do_not_load(work_dir: Path) -> None:
    """MetaSchedule refuses a whole database when one record's trace does not replay on its
    workload. Such records (their trace names blocks of another, structurally equal function)
    are found by bisection and moved to database_tuning_record.rejected.json; the rest load."""
    from qmtgan.runtime.atomic import write_text_atomic

    path = work_dir / "database_tuning_record.json"
    records = [line for line in path.read_text().splitlines() if line.strip()]

    def bad(lines: list[str], start: int) -> list[int]:
        if _loads(work_dir, lines):
            return []
        if len(lines) == 1:
            return [start]
        half = len(lines) // 2
        return bad(lines[:half], start) + bad(lines[half:], start + half)

    rejected = set(bad(records, 0))
    if len(rejected) == len(records) and records:
        raise QmtganError(f"{work_dir}: MetaSchedule cannot load any of its {len(records)} tuning records "
                          "(tune again with another --tuning-db)")
    aside = work_dir / "database_tuning_record.rejected.json"
    kept = "".join(f"{r}\n" for i, r in enumerate(records) if i not in rejected)
    previous = aside.read_text() if aside.exists() else ""
    write_text_atomic(aside, previous + "".join(f"{records[i]}\n" for i in sorted(rejected)))
    write_text_atomic(path, kept)
    log.warning(f"{work_dir}: {len(rejected)} of {len(records)} tuning records do not replay on their "
                f"workload; set aside in {aside.name}, the other {len(records) - len(rejected)} are used")


def _as_known_workload(db, task):
    """The task over the database's own copy of its workload when the database has a
    structurally equal one: MetaSchedule files the new records under that workload, so their
    traces must name its blocks (the same layer gets other names after any change to the graph)."""
    from tvm.s_tir.meta_schedule.extracted_task import ExtractedTask

    mod = task.dispatched[0]
    if not db.has_workload(mod):
        return task
    return ExtractedTask(task.task_name, task.mod, task.target, [db.commit_workload(mod).mod], task.weight)


def _is_tuned(db, task) -> bool:
    mod = task.dispatched[0]
    return bool(db.has_workload(mod) and db.get_top_k(db.commit_workload(mod), 1))


def _has_records(work_dir: Path) -> bool:
    records = Path(work_dir) / "database_tuning_record.json"
    return records.is_file() and records.stat().st_size > 0


def host_board():
    """The board of this machine's architecture that tuning runs measure on."""
    from qmtgan.targets.registry import boards

    return next(b for b in boards().values() if b.arch == platform.machine() and b.reach.method == "local")


def _trials_spent(work_dir: Path) -> int:
    f = work_dir / "trials.json"
    try:
        return int(json.loads(f.read_text())["trials"]) if f.exists() else 0
    except (ValueError, KeyError, TypeError) as exc:
        raise QmtganError(f"{f}: unreadable trial count ({exc})") from exc


def _record_trials(work_dir: Path, total: int) -> None:
    from qmtgan.runtime.atomic import write_text_atomic

    write_text_atomic(work_dir / "trials.json", json.dumps({"trials": total}))


def plan_trials(total: int, spent: int, tasks: list, untuned: list) -> tuple[list, int]:
    """(tasks to tune, trials to spend). `total` is the database's whole budget: a run with a
    larger one than was spent tunes every task with the difference, its search seeded by the
    records; otherwise only tasks without a record (another model sharing the database) get
    tuned, with `total` trials."""
    if total > spent:
        return tasks, total - spent
    return (untuned, total) if untuned and total > 0 else ([], 0)


def _build_candidate(mod, target, _params):
    """default_build without `import tvm.s_tir.tensor_intrin` (~12-26 s in every fresh builder
    worker; fp32 CPU candidates contain no tensorized blocks)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


def _export_cross(compiler: str, rt_mod) -> str:
    """Candidate as a shared library linked by the board's cross compiler (for an RPC runner)."""
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(), "candidate.so")
    rt_mod.export_library(path, fcompile=cc.cross_compiler(compiler))
    return path


def can_measure(board: Board, options: TuningOptions) -> bool:
    """Whether tuning can run candidates: same architecture as this host, or an RPC tracker."""
    return board.arch == platform.machine() or bool(options.rpc_tracker and options.rpc_key)


def _runner_and_export(board: Board, rpc_tracker: str | None, rpc_key: str | None):
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=100, enable_cpu_cache_flush=False)
    if rpc_tracker or rpc_key:
        if not (rpc_tracker and rpc_key) or ":" not in rpc_tracker:
            raise QmtganError("RPC tuning needs both --rpc-tracker HOST:PORT and --rpc-key KEY")
        host, port = rpc_tracker.rsplit(":", 1)
        config = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=rpc_key,
                                     session_timeout_sec=120)
        cross = board.compiler()
        f_export = functools.partial(_export_cross, cross) if cross else None
        return ms.runner.RPCRunner(config, evaluator, max_workers=1), f_export
    if board.arch != platform.machine():
        raise QmtganError(
            f"tuning for {board.name} ({board.arch}) cannot measure candidates on this {platform.machine()} "
            "host: start `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY` on the board (and "
            "`python -m tvm.exec.rpc_tracker` somewhere) and pass --rpc-tracker HOST:PORT --rpc-key KEY, "
            "or apply an existing database with --trials 0")
    return ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator), None


def _progress_callback(names: list[str], trials: int):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    t0 = time.perf_counter()
    state = {"done": 0, "best": {}}

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            errors = sum(1 for b, r in zip(builder_results, runner_results) if b.error_msg or r.error_msg)
            secs = [sum(map(float, r.run_secs)) / len(r.run_secs) for r in runner_results
                    if r.run_secs and not r.error_msg]
            state["done"] += len(runner_results)
            if secs:
                state["best"][task_id] = min(state["best"].get(task_id, float("inf")), min(secs))
            best = state["best"].get(task_id)
            best_s = f"{best * 1000:.3f} ms" if best is not None else "none valid yet"
            log.info(f"tune [{state['done']}/{trials} trials, {time.perf_counter() - t0:.0f} s] "
                     f"task {task_id + 1}/{len(names)} {names[task_id]}: {len(runner_results)} measured, "
                     f"{errors} failed, best {best_s}")

    class Forward(logging.Handler):
        """Turns the scheduler's 'picks Task #i' log lines into progress lines (the search for a
        task's batch of candidates takes seconds to a minute, before any measurement)."""

        def emit(self, record):
            msg = record.getMessage()
            if "TaskScheduler picks Task #" in msg:
                task = msg.split("TaskScheduler picks Task #", 1)[1]
                log.info(f"tune [{state['done']}/{trials} trials, {time.perf_counter() - t0:.0f} s] "
                         f"searching task {int(task.split(':')[0]) + 1}/{len(names)}{task.split(':', 1)[1]}")

    return Progress(), Forward(logging.INFO), state


def tune_with_stats(mod, target, work_dir: Path, trials: int, *, board: Board | None = None,
                    rpc_tracker: str | None = None, rpc_key: str | None = None, prepared: bool = False):
    """Tune the tasks of `mod` (the Relax module from the frontend, or through `prepare` with
    prepared=True) within the trial budget `plan_trials` gives, recording into `work_dir`'s
    JSON database. Returns (database, stats) with stats = tasks, tuned_before, tuned_now,
    trials_run. `board` picks the runner and is required when there is anything to tune."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks, extracted_tasks_to_tune_contexts

    work_dir = Path(work_dir)
    db = _open_database(work_dir, target)
    tasks = [t for t in extract_tasks(mod if prepared else prepare(mod, target), target)
             if not t.mod.attrs.get("tirx.is_scheduled", False)]
    spent = _trials_spent(work_dir)
    untuned = [t for t in tasks if not _is_tuned(db, t)]
    todo, budget = plan_trials(trials, spent, tasks, untuned)
    todo = [_as_known_workload(db, t) for t in todo]
    stats = {
        "tasks": len(tasks),
        "tuned_before": len(tasks) - len(untuned),
        "trials_before": spent,
        "trials_run": 0,
    }
    log.info(
        f"MetaSchedule: {len(tasks)} tasks, {stats['tuned_before']} with records and {spent} trials spent in "
        f"{work_dir}: "
        + (f"{budget} more trials over {len(todo)} tasks" if todo and budget > 0 else "nothing to tune")
    )
    trials = budget
    if todo and trials > 0:
        if board is None:
            raise QmtganError("tuning needs the board to choose a runner")
        runner, f_export = _runner_and_export(board, rpc_tracker, rpc_key)
        builder = ms.builder.LocalBuilder(timeout_sec=BUILDER_TIMEOUT_S, f_build=_build_candidate,
                                          f_export=f_export, max_workers=os.cpu_count() or 1)
        # every task gets at least one batch before the budget runs out (the scheduler stops at
        # max_trials_global, so 64-candidate batches would starve the later tasks)
        per_iter = max(1, min(64, trials // len(todo)))
        ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
        # console: warnings only (its level becomes the console handler's in the dictConfig of
        # extracted_tasks_to_tune_contexts, which then sets DEBUG for <work_dir>/logs/)
        ms_logger.setLevel(logging.WARNING)
        search = ms.search_strategy.EvolutionarySearch(population_size=SEARCH_POPULATION)
        contexts, weights = extracted_tasks_to_tune_contexts(todo, work_dir=str(work_dir), strategy=search)
        progress, forward, state = _progress_callback([c.task_name for c in contexts], trials)
        ms_logger.addHandler(
            forward
        )  # after extracted_tasks_to_tune_contexts: its dictConfig resets handlers
        cost_model = "xgb"
        if importlib.util.find_spec("xgboost") is None:
            cost_model = "random"
            log.info(
                "MetaSchedule: xgboost is not installed (pip install xgboost-cpu); candidates are picked "
                "without a cost model, expect worse schedules for the same trials"
            )
        t0 = time.perf_counter()
        try:
            ms.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(work_dir),
                max_trials_global=trials,
                num_trials_per_iter=per_iter,
                builder=builder,
                runner=runner,
                database=db,
                cost_model=cost_model,
                measure_callbacks=[*ms.MeasureCallback.create("default"), progress],
            )
        finally:
            ms_logger.removeHandler(forward)
        stats["trials_run"] = state["done"]
        _record_trials(work_dir, spent + state["done"])
        log.info(f"MetaSchedule: {state['done']} trials in {time.perf_counter() - t0:.0f} s")
    stats["tuned_now"] = sum(_is_tuned(db, t) for t in tasks)
    return db, stats


def compile_with_database(mod, target, database, applied: dict | None = None):
    """Prepare, apply the database's best schedules (the rules of tvm_rules.py schedule the
    functions it has no record for, or whose record does not replay; `applied` counts them),
    lower and build (a relax VMExecutable)."""
    import tvm

    from qmtgan.convert.tvm_rules import pipeline

    with database:
        return tvm.compile(mod, target=target,
                           relax_pipeline=pipeline(target, apply_database=True, applied=applied))


def compile_tuned(onnx_bytes: bytes, input_shape: tuple[int, ...], board: Board, out_so: Path,
                  options: TuningOptions | None = None) -> dict:
    """ONNX -> tuned (or database-applied, trials 0) TVM module for `board`, exported to out_so.
    Returns the compile record of tvm_build.compile_onnx plus "tvm_tuning"."""
    from qmtgan.convert.tvm_build import export_module, relax_module, require_tvm

    tvm = require_tvm()
    options = options or TuningOptions()
    board.compiler()  # a missing cross compiler fails before tuning
    work_dir = options.database_dir(board)
    trials, note = options.trials, None
    if trials > 0 and not can_measure(board, options):
        note = (
            f"not tuned: {board.name} ({board.arch}) candidates cannot be measured on this "
            f"{platform.machine()} host without an RPC runner on the board "
            "(--rpc-tracker HOST:PORT --rpc-key KEY)"
        )
        log.warning(f"{note}; applying the records already in {work_dir}")
        trials = 0
    source = "board-tuned"
    if trials == 0 and not _has_records(work_dir):
        host_dir = options.database_dir(host_board())
        if host_dir != work_dir and _has_records(host_dir):
            # MetaSchedule matches records by workload, not target: the host's schedules apply
            # to the board's code too (its LLVM still emits the board's instructions)
            log.info(f"TVM: {board.name} has no tuning records; applying the host's ({host_dir})")
            work_dir, source = host_dir, "host-tuned"
    t0 = time.perf_counter()
    mod, name = relax_module(onnx_bytes, input_shape)
    target = tuning_target(board)
    prepared = prepare(mod, target)
    db, stats = tune_with_stats(prepared, target, work_dir, trials, board=board,
                                rpc_tracker=options.rpc_tracker, rpc_key=options.rpc_key, prepared=True)
    tune_s = time.perf_counter() - t0
    log.info(f"TVM: building {board.name} with {stats['tuned_now']}/{stats['tasks']} tasks from the database"
             + ("" if stats["tuned_now"] else " (none: the module is untuned)"))
    t1 = time.perf_counter()
    applied: dict = {}
    executable = compile_with_database(mod, target, db, applied)
    export_module(executable, board, out_so)
    from qmtgan.convert.tvm_rules import RULES

    return {"tvm": tvm.__version__, "target": board.tvm_target, "compile_s": time.perf_counter() - t1,
            "input_name": name,
            "tvm_schedules": {"rules": list(RULES), "database": str(work_dir),
                              "source": source if applied["database"] else None,
                              "functions_from_database": applied["database"], "functions": stats["tasks"],
                              "records_that_do_not_replay": applied["skipped"]},
            "tvm_tuning": {"trials": trials, "database": str(work_dir), "tuned_tasks": stats["tuned_now"],
                           "tasks": stats["tasks"], "tuned_before": stats["tuned_before"],
                           "trials_run": stats["trials_run"], "tune_s": round(tune_s, 1),
                           "tuning_target": str(target), **({"note": note} if note else {})}}
