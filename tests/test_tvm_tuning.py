"""The MetaSchedule tuning database's bookkeeping (no tuning runs here: it takes minutes)."""

from __future__ import annotations

import json

import pytest


def test_the_trial_budget_is_the_database_total():
    from qmtgan.convert.tvm_tune import plan_trials

    tasks, untuned = ["a", "b", "c"], ["c"]
    assert plan_trials(100, 0, tasks, untuned) == (tasks, 100)        # a new database: everything
    assert plan_trials(300, 100, tasks, untuned) == (tasks, 200)      # a larger budget: the difference
    assert plan_trials(100, 100, tasks, untuned) == (["c"], 100)      # spent: only tasks without a record
    assert plan_trials(100, 100, tasks, []) == ([], 0)                # spent and all recorded: nothing
    assert plan_trials(0, 100, tasks, untuned) == ([], 0)             # --trials 0: only apply the records


def test_trial_count_survives_and_a_damaged_one_is_refused(tmp_path):
    from qmtgan.convert.tvm_tune import _record_trials, _trials_spent
    from qmtgan.runtime.errors import QmtganError

    assert _trials_spent(tmp_path) == 0
    _record_trials(tmp_path, 640)
    assert _trials_spent(tmp_path) == 640
    assert json.loads((tmp_path / "trials.json").read_text()) == {"trials": 640}
    (tmp_path / "trials.json").write_text('{"trials": "many"}')
    with pytest.raises(QmtganError, match="unreadable trial count"):
        _trials_spent(tmp_path)


def test_a_database_tuned_for_another_target_is_reused_with_a_warning(tmp_path, caplog):
    from qmtgan.convert.tvm_tune import _open_database, tuning_target
    from qmtgan.targets.registry import board

    _open_database(tmp_path, tuning_target(board("host-x86_64")))
    assert caplog.records == [] and (tmp_path / "target.json").exists()
    _open_database(tmp_path, tuning_target(board("rpi4")))
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "records are reused" in warnings[0].getMessage()
    assert "cortex-a72" in (tmp_path / "target.json").read_text()


def test_the_schedule_rules_apply_to_every_convolution_and_keep_the_function():
    """A generator-like ONNX graph (3x3 and stride-2 convolutions, bias, activation, an
    elementwise tail) built with the rules: every convolution function is scheduled by them, and
    the module computes what ONNX Runtime does (within float rounding)."""
    import numpy as np
    import onnxruntime as ort
    import tvm
    from onnx import TensorProto, helper, numpy_helper
    from tvm import relax

    from qmtgan.convert.tvm_build import relax_module
    from qmtgan.convert.tvm_rules import _rules, pipeline, prepare_passes

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.2, (8, 12, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.2, (12, 8, 3, 3)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.normal(0, 0.1, (12,)).astype(np.float32), "b2")
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["a", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("LeakyRelu", ["c1"], ["r1"], alpha=0.2),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Tanh", ["c2"], ["t"]),
             helper.make_node("Transpose", ["t"], ["y"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 64, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 12])],
        [w1, w2, b2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    mod, _ = relax_module(model, (1, 64, 64, 12))
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    with target:
        prepared = tvm.transform.Sequential(prepare_passes(target))(mod)
    convolution, _ = _rules()
    convs = [gv.name_hint for gv, f in prepared.functions_items() if "conv2d" in gv.name_hint]
    assert len(convs) == 2 and all(
        convolution.apply(prepared[name], target, False) is not None for name in convs
    )
    x = rng.uniform(-1, 1, (1, 64, 64, 12)).astype(np.float32)
    vm = relax.VirtualMachine(tvm.compile(mod, target=target, relax_pipeline=pipeline(target)), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x))
    got = (got[0] if not hasattr(got, "numpy") else got).numpy()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, session.run(None, {"x": x})[0], atol=1e-5)


def _doubling_workload(prefix: str):
    """A small PrimFunc whose buffers and block are named after `prefix`: two prefixes give
    functions equal in structure, with other block names (the same layer in two graphs)."""
    from tvm import te
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    a = te.placeholder((64, 64), name=f"{prefix}_a")
    b = te.compute((64, 64), lambda i, j: a[i, j] * 2.0 + 1.0, name=f"{prefix}_b")
    return _normalize_mod(te.create_prim_func([a, b]).with_attr("global_symbol", "fused_double"))


def _record(db, workload, traced, prefix: str, target):
    """A tuning record (made by hand: two schedule primitives) whose trace names `prefix`'s block,
    filed under `workload`."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    sch = s_tir.Schedule(traced)
    loops = sch.get_loops(sch.get_sblock(f"{prefix}_b"))
    sch.parallel(loops[0])
    sch.vectorize(loops[1])
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(workload), [1e-3], target,
                                                     ms.arg_info.ArgInfo.from_prim_func(workload["main"])))


def test_records_whose_trace_names_other_blocks_are_set_aside_and_the_rest_load(tmp_path, caplog):
    """MetaSchedule files a record of a function structurally equal to a known workload under
    that workload, and then refuses to load the whole database when the trace names other
    blocks. Such records are set aside; the database loads with the others."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from qmtgan.convert.tvm_tune import _open_database

    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    old, renamed = _doubling_workload("lv1"), _doubling_workload("lv2")
    tvm.ir.assert_structural_equal(old, renamed)
    db = ms.database.JSONDatabase(work_dir=str(tmp_path), module_equality="structural")
    _record(db, old, old, "lv1", target)
    _record(db, old, renamed, "lv2", target)  # what a tuning run of the renamed function leaves
    with pytest.raises(Exception):  # TVM's own error type
        ms.database.JSONDatabase(work_dir=str(tmp_path), module_equality="structural")

    db = _open_database(tmp_path, target)
    assert len(db) == 1 and db.query_schedule(old, target, "main") is not None
    assert len((tmp_path / "database_tuning_record.rejected.json").read_text().splitlines()) == 1
    assert any("1 of 2 tuning records do not replay" in r.getMessage() for r in caplog.records)


def test_records_apply_to_functions_equal_up_to_names_and_one_that_does_not_replay_is_left_to_the_rules(
        tmp_path):
    import numpy as np
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.extracted_task import ExtractedTask

    from qmtgan.convert.tvm_rules import database_pass
    from qmtgan.convert.tvm_tune import _as_known_workload

    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    old, renamed = _doubling_workload("lv1"), _doubling_workload("lv2")
    db = ms.database.JSONDatabase(work_dir=str(tmp_path), module_equality="structural")
    _record(db, old, old, "lv1", target)

    applied: dict = {}
    mod = tvm.IRModule({"fused_double": renamed["main"]})
    with db, target:
        scheduled = database_pass(target, applied)(mod)
    assert applied == {"database": 1, "skipped": 0}
    func = scheduled["fused_double"]
    assert func.attrs["tirx.is_scheduled"]
    assert "T.parallel" in func.script() and "T.vectorized" in func.script()
    x = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    y = tvm.runtime.tensor(np.zeros_like(x))
    tvm.compile(scheduled, target=target)["fused_double"](tvm.runtime.tensor(x), y)
    np.testing.assert_allclose(y.numpy(), 2 * x + 1)

    # a record whose trace names other blocks than its workload's (in memory: a database on disk
    # with one is repaired when opened) is skipped, and the function keeps its own loops
    (tmp_path / "broken").mkdir()
    broken = ms.database.JSONDatabase(work_dir=str(tmp_path / "broken"), module_equality="structural")
    _record(broken, old, renamed, "lv2", target)
    applied = {}
    with broken, target:
        unscheduled = database_pass(target, applied)(mod)
    assert applied == {"database": 0, "skipped": 1}
    assert "tirx.is_scheduled" not in unscheduled["fused_double"].attrs

    task = ExtractedTask("fused_double", renamed, target, [renamed], 1)
    assert "lv1_b" in _as_known_workload(db, task).dispatched[0].script()
    fresh = ExtractedTask("other", _doubling_workload("lv3"), target, [_doubling_workload("lv3")], 1)
    (tmp_path / "empty").mkdir()
    empty = ms.database.JSONDatabase(work_dir=str(tmp_path / "empty"), module_equality="structural")
    assert _as_known_workload(empty, fresh) is fresh
