"""The board farm: a real TVM RPC tracker with two local servers (qmtgan farm up), and the bench
matrix spread over both (qmtgan farm bench), one report row per board."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time

import pytest

from helpers import free_port, run_cli

pytestmark = pytest.mark.slow


def _farm_up(port: int, *boards: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "qmtgan", "farm", "up", "--tracker-port", str(port)]
    for b in boards:
        argv += ["--slots", b]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _farm_bench(port: int, key: str, bundles, pair, threads: str, out):
    return run_cli("farm", "bench", "--tracker", f"127.0.0.1:{port}", "--key", key, "--bundles", bundles,
                   "--pair", pair, "--threads", threads, "--tiles", "2", "--warmup", "1", "--runs", "3",
                   "--min-time", "0", "-o", out)


@contextlib.contextmanager
def _farm(*slots: str):
    """`qmtgan farm up` with these slots on a free port, once every server is registered; its port."""
    port = free_port()
    farm = _farm_up(port, *slots)
    try:
        line = farm.stderr.readline()  # printed once every server is registered
        assert "registered" in line, line + farm.stderr.read() if farm.poll() is not None else line
        yield port
    finally:
        farm.terminate()
        farm.wait(60)


def test_the_bench_matrix_is_spread_over_every_free_board_of_a_key(tiny_bundles, small_pair_dir, tmp_path):
    out_dir, _ = tiny_bundles
    with _farm("host-x86_64=2") as port:
        status = run_cli("farm", "status", "--tracker", f"127.0.0.1:{port}")
        assert status.returncode == 0 and "host-x86_64: 2 free" in status.stdout, status.stderr
        proc = _farm_bench(port, "host-x86_64", out_dir, small_pair_dir, "1,2,1,2", tmp_path / "farm")
        assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "farm" / "farm.json").read_text())
    boards = report["boards"]
    # one row per board; both boards took work; every configuration ran once, somewhere
    assert len(boards) == 2 and len({b["board"] for b in boards}) == 2
    assert all(b["configs"] >= 1 and b["failed"] == 0 for b in boards)
    assert sum(b["configs"] for b in boards) == len(report["records"]) == 4
    snrs = [r["snr_vs_target_db"] for r in report["records"]]
    assert max(snrs) - min(snrs) < 1e-3  # the same module on either board, at 1 or 2 threads
    assert all(r["latency_ms"]["count"] >= 3 for r in report["records"])
    md = (tmp_path / "farm" / "farm.md").read_text()
    assert all(b["board"] in md for b in boards) and (tmp_path / "farm" / "farm.png").stat().st_size > 1000
    # the servers are gone with the farm
    time.sleep(1)
    gone = run_cli("farm", "status", "--tracker", f"127.0.0.1:{port}")
    assert gone.returncode == 1 and "cannot reach the TVM RPC tracker" in gone.stderr


def test_a_farm_of_an_unknown_or_remote_board_is_one_clear_error():
    proc = run_cli("farm", "up", "--tracker-port", str(free_port()), "--slots", "pi9=1", "--for", "1")
    assert proc.returncode == 1 and "pi9" in proc.stderr
    proc = run_cli("farm", "up", "--tracker-port", str(free_port()), "--slots", "rpi4=1", "--for", "1")
    assert proc.returncode == 1 and "tvm.exec.rpc_server --tracker" in proc.stderr


@pytest.mark.qemu
def test_a_farm_of_emulated_boards_runs_their_modules(tiny_bundles, small_pair_dir, tmp_path):
    out_dir, _ = tiny_bundles
    with _farm("qemu-aarch64=2") as port:
        proc = _farm_bench(port, "qemu-aarch64", out_dir, small_pair_dir, "1,2", tmp_path / "farm")
        assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "farm" / "farm.json").read_text())
    assert len(report["boards"]) == 2 and all(b["ok"] >= 1 and b["failed"] == 0 for b in report["boards"])
    # the aarch64 modules (the Raspberry Pi and Jetson builds) run there, the host's does not
    names = {r["config"]["name"] for r in report["records"]}
    assert "tvm-rpi4" in names and "tvm-host-x86_64" not in names
    assert len(report["records"]) == 2 * len(names)
    snrs = [r["snr_vs_target_db"] for r in report["records"]]
    assert max(snrs) - min(snrs) < 1e-3 and min(snrs) > 5
