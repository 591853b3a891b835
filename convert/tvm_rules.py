"""CPU schedules for TVM modules that have no tuning record: two dlight rules applied by the
Relax pipeline after legalization. TVM 0.27's default CPU pipeline schedules nothing, so every
convolution compiles to serial, unvectorized loops; `s_tir.dlight.cpu` only has GEMV and
reduction rules.

  Convolution   a function whose main block reduces (conv2d after legalization, with its padding
                and fused epilogue): the padded copy made in parallel (a condition in the inner
                loop would stop vectorization), the epilogue inlined, the output channels taken
                CHANNEL_BLOCK at a time (each input vector feeds that many sums), the channel, row and
                column tile loops fused and parallel, the columns split by the vector width with
                the inner part vectorized under the reduction loops, and the accumulator
                initialised separately (decompose_reduction) so the update is a plain
                multiply-add over vectors.
  Elementwise   a function of spatial blocks only: blocks inlined into the last one, its outer
                loops fused and parallel, the innermost vectorized.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

RULES = ("convolution", "elementwise")
CHANNEL_BLOCK = 4  # output channels computed together by the convolution rule (0: one at a time)


def _vector_lanes(target) -> int:
    """float32 lanes of the target's SIMD registers (16 with AVX-512, 8 with AVX2, 4 with NEON)."""
    from tvm.target.codegen import llvm_get_vector_width

    try:
        return max(4, llvm_get_vector_width(target) // 32)
    except Exception:
        return 4


def _rules():
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis import normalize_prim_func
    from tvm.s_tir.dlight.base import try_inline
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    def extent(sch, loop) -> int | None:
        value = sch.get(loop).extent
        return int(value) if isinstance(value, tirx.IntImm) else None

    def parallel_vectorize(sch, block, lanes: int) -> None:
        """Fuse the spatial loops but the last into one parallel loop; vectorize the last."""
        loops = sch.get_loops(block)
        if not loops:
            return
        last = loops[-1]
        n = extent(sch, last)
        if n and n >= lanes and n % lanes == 0:
            outer, inner = sch.split(last, [None, lanes])
            sch.vectorize(inner)
            loops = [*loops[:-1], outer]
        if len(loops) > 1:
            sch.parallel(sch.fuse(*loops[:-1]))
        else:
            sch.parallel(loops[0])

    def rule(schedule):
        """A dlight rule's apply(): for a PrimFunc on a CPU target, `schedule(sch, blocks, target)`
        on its normalized blocks. A rule whose primitives TVM refuses for this function does not
        apply (None): the function keeps its default, unscheduled loops."""
        def apply(self, func, target, _tunable):
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            try:
                sch = s_tir.Schedule(func)
                infos = normalize_prim_func(sch)
                return schedule(sch, infos, target) if infos else None
            except (s_tir.ScheduleError, RuntimeError) as exc:  # TVM raises its errors as RuntimeError too
                log.debug(f"{type(self).__name__} does not apply: {exc}")
                return None
        return apply

    class Elementwise(CPUScheduleRule):
        @staticmethod
        def _schedule(sch, infos, target):
            if any(not info.is_injective() for info in infos):
                return None
            for block in try_inline(sch, [info.block_rv for info in infos]):
                parallel_vectorize(sch, block, _vector_lanes(target))
            return sch

        apply = rule(_schedule)

    class Convolution(CPUScheduleRule):
        @staticmethod
        def _schedule(sch, infos, target):
            reductions = [info for info in infos if not info.is_injective()]
            if len(reductions) != 1:
                return None
            main = reductions[0]
            kinds = main.dom_kind()
            spatial = len(kinds) - len(kinds.lstrip("S"))
            if spatial < 3 or set(kinds[spatial:]) != {"R"}:
                return None
            for info in infos[:infos.index(main)]:  # padding: materialized, so the conv reads no condition
                parallel_vectorize(sch, info.block_rv, _vector_lanes(target))
            after = [info.block_rv for info in infos[infos.index(main) + 1:]]
            for block in reversed(after):  # bias, activation: applied as each output is finished
                try:
                    sch.reverse_compute_inline(block)
                except Exception:
                    parallel_vectorize(sch, block, _vector_lanes(target))
            block = main.block_rv
            loops = sch.get_loops(block)
            reductions_n = len(kinds) - spatial  # unit loops (the batch) may add spatial loops
            space, reduce = loops[:-reductions_n], loops[-reductions_n:]
            lanes = _vector_lanes(target)
            columns = extent(sch, space[-1])
            if not columns or columns < lanes:
                sch.parallel(sch.fuse(*space[:-1]) if len(space) > 2 else space[0])
                return sch
            outer, inner = sch.split(space[-1], [None, lanes])
            channels = extent(sch, space[-3]) if len(space) >= 3 else None
            if CHANNEL_BLOCK and channels and channels % CHANNEL_BLOCK == 0 and channels > CHANNEL_BLOCK:
                # several output channels per input load: each vector read feeds CHANNEL_BLOCK sums
                c_outer, c_inner = sch.split(space[-3], [None, CHANNEL_BLOCK])
                sch.reorder(*space[:-3], c_outer, space[-2], outer, *reduce, c_inner, inner)
                sch.parallel(sch.fuse(*space[:-3], c_outer, space[-2]))
                sch.unroll(c_inner)
            else:
                sch.reorder(*space[:-1], outer, *reduce, inner)
                sch.parallel(sch.fuse(*space[:-1]))
            sch.vectorize(inner)
            init = sch.decompose_reduction(block, reduce[0])  # last: the update is then no reduction block
            sch.vectorize(sch.get_loops(init)[-1])
            return sch

        apply = rule(_schedule)

    return Convolution(), Elementwise()


def cpu_passes(target):
    """The CPU backend's pass lists (relax.pipeline.dataflow_lower_passes fails for llvm in 0.27:
    cpu_generic does not export it)."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from qmtgan.runtime.errors import QmtganError

    if target.kind.name != "llvm":
        raise QmtganError(f"TVM modules here are built for llvm (CPU) targets, not {target.kind.name}")
    return cpu


def prepare_passes(target) -> list:
    """Everything of the default CPU pipeline up to fused TIR; tuning and builds share it."""
    from tvm import relax

    cpu = cpu_passes(target)
    return [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
            *cpu.library_dispatch_passes(target), *cpu.legalize_passes(target)]


def database_pass(target, applied: dict | None = None):
    """MetaScheduleApplyDatabase (the current database's best schedule for every PrimFunc it has
    a record for; a record replays on the workload it was tuned on, so it also serves a function
    equal to it up to names) that keeps going where a record does not replay: the rules then
    schedule that function. `applied` counts "database" and "skipped"."""
    import tvm
    from tvm import tirx
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    counts = applied if applied is not None else {}
    for key in ("database", "skipped"):
        counts.setdefault(key, 0)

    def best_schedule(db, func, name: str):
        try:
            sch = db.query_schedule(_normalize_mod(func), target, name)
        except Exception as exc:  # TVM reports a failed replay as one of its errors
            counts["skipped"] += 1
            log.warning(f"TVM: the tuning record of {name} does not replay ({type(exc).__name__}); "
                        "the rules schedule it")
            return None
        counts["database"] += sch is not None
        return sch

    @tvm.transform.module_pass(opt_level=0, name="ApplyDatabaseTolerant")
    def _apply(mod, _ctx):
        db = ms.database.Database.current()
        mod = mod.clone()  # the caller's module stays as it was
        for gv, func in list(mod.functions.items()):
            if not isinstance(func, tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
                continue
            sch = best_schedule(db, func, gv.name_hint)
            if sch is None:
                continue
            scheduled = sch.mod["main"]
            for key, value in (func.attrs or {}).items():  # the original attributes, as TVM keeps them
                scheduled = scheduled.with_attr(key, value)
            mod[gv] = scheduled.with_attr("tirx.is_scheduled", True)
        return mod

    return _apply


def pipeline(target, apply_database: bool = False, applied: dict | None = None):
    """Prepare, [apply the current MetaSchedule database's records (`applied` counts them),]
    schedule every function left without one by the rules, lower and finalize."""
    import tvm
    from tvm.s_tir import dlight

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        cpu = cpu_passes(target)
        with target:
            passes = prepare_passes(target)
            if apply_database:
                passes.append(database_pass(target, applied))
            passes += [dlight.ApplyDefaultSchedule(*_rules())]
            return tvm.transform.Sequential(passes + cpu.dataflow_lower_passes(target)
                                            + cpu.finalize_passes(target))(mod)

    return _pipeline
