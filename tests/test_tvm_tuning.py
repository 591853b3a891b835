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
