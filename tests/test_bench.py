"""The benchmark harness on the tiny bundles: every field present and sane, SNR equal to an
independent computation, TVM RPC on loopback (direct and through a tracker), one emulated-board
configuration, and failures that stay in their own record."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import free_port, run_cli, wait_for_port
from qmtgan.bench.records import FIELDS
from qmtgan.runtime.bundle import write_manifest



@contextlib.contextmanager
def _serve(*argv: str, port: int):
    """A TVM RPC server or tracker on exactly this loopback port."""
    argv = (*argv, "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1))
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_port(port, proc, lambda: proc.stderr.read())
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def rpc_server():
    port = free_port()
    with _serve("tvm.exec.rpc_server", port=port):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def bench_run(tiny_bundles, tiny_run, small_pair_dir, rpc_server, tmp_path_factory):
    out_dir, _ = tiny_bundles
    work = tmp_path_factory.mktemp("bench")
    broken = work / "bundles" / "onnx-altered"
    shutil.copytree(out_dir / "onnx", broken)
    (broken / "model.onnx").write_bytes((broken / "model.onnx").read_bytes()[:-3])
    manifest = json.loads((broken / "manifest.json").read_text())
    write_manifest(broken, {**manifest, "name": "onnx-altered"})  # re-signed: the model is what fails
    proc = run_cli(
        "bench",
        "--bundles",
        out_dir,
        "--bundles",
        broken,
        "--only",
        "onnx,tflite-int8,tvm-host-x86_64,onnx-altered",
        "--model",
        tiny_run[0],
        "--pair",
        small_pair_dir,
        "--boards",
        "host-x86_64,qemu-aarch64",
        "--threads",
        "1",
        "--rpc",
        rpc_server,
        "--native",
        "--tiles",
        "3",
        "--runs",
        "5",
        "--min-time",
        "0",
        "--keep-outputs",
        "--out",
        work / "report",
    )
    doc = json.loads((work / "report" / "bench.json").read_text())
    return proc, doc, work / "report"


@pytest.mark.qemu  # bench_run measures the emulated board too
def test_records_have_every_field_and_sane_values(bench_run):
    proc, doc, out = bench_run
    ok = {(r["config"]["name"], r["config"]["where"]): r for r in doc["records"]
          if r["status"] == "ok" and r["config"]["backend"] != "tvm-native"}
    native = [r for r in doc["records"] if r["config"]["backend"] == "tvm-native"]
    # the x86 TVM module is not offered to the aarch64 board
    assert set(ok) == {
        ("keras-fp32", "local"),
        ("onnx", "local"),
        ("tflite-int8", "local"),
        ("tvm-host-x86_64", "local"),
        ("tvm-host-x86_64", "rpc"),
        ("onnx", "qemu"),
        ("tflite-int8", "qemu"),
    }
    for r in ok.values():
        assert tuple(k for k in r if k in FIELDS) == FIELDS, [k for k in FIELDS if k not in r]
        lat = r["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] and lat["count"] >= 5
        assert r["tile"] == 32 and r["tiles"] == 3 and r["macs_per_tile"] > 0 and r["gflops"] > 0
        assert r["megapixels_per_s"] == pytest.approx(32 * 32 / lat["mean"] / 1000)
        if r["config"]["where"] != "rpc":
            assert r["peak_rss_mb"] > 0
    assert ok[("keras-fp32", "local")]["speedup_vs_keras"] == 1.0
    # the C++ runner: same module, same outputs, a fraction of the Python process's memory
    assert [r["status"] for r in native] == ["ok"] and native[0]["snr_vs_float_db"] > 80
    assert native[0]["peak_rss_mb"] < ok[("tvm-host-x86_64", "local")]["peak_rss_mb"]
    assert native[0]["latency_ms"]["count"] >= 5
    assert (
        ok[("onnx", "local")]["snr_vs_float_db"] > 80
        and ok[("tvm-host-x86_64", "rpc")]["snr_vs_float_db"] > 80
    )
    assert ok[("tflite-int8", "local")]["model_bytes"] < ok[("onnx", "local")]["model_bytes"]
    emulated = ok[("tflite-int8", "qemu")]
    assert emulated["device"]["arch"] == "aarch64" and emulated["fraction_of_peak"] is None
    assert emulated["memory_budget_mb"] == 2048 and emulated["within_memory_budget"] is True
    assert ok[("onnx", "local")]["within_memory_budget"] is None  # the host has no budget
    # XNNPACK int8 on the emulated Cortex-A72 reproduces the x86 result within 1 LSB of the output
    # quantization (kernels differ between CPUs: bit equality is not promised, 1 step is)
    assert _int8_steps_apart(ok[("tflite-int8", "local")], emulated) <= 1.0 + 1e-3
    assert doc["peak"]["peak_gflops"] > 0 and "cores" in doc["peak"]["formula"]
    for name in ("bench.md", "bench.csv", "pareto.png", "latency.png", "memory.png"):
        assert (out / name).stat().st_size > 0, name


def _int8_steps_apart(a: dict, b: dict) -> float:
    """Largest difference between two runs' outputs of one int8 bundle, in steps of its output
    quantization (the runs store DN; the step is taken in the generator's normalized range)."""
    from qmtgan.runtime.normalization import Normalization

    manifest = json.loads((Path(a["config"]["bundle"]) / "manifest.json").read_text())
    scale = manifest["output"]["quantization"][0]
    norm = Normalization.from_dict(manifest["normalization"])
    outputs = [
        np.stack([norm.forward(t) for t in np.load(r["outputs_file"], allow_pickle=False)]) for r in (a, b)
    ]
    return float(np.max(np.abs(outputs[0] - outputs[1])) / scale)


@pytest.mark.qemu  # bench_run measures the emulated board too
def test_snr_in_the_record_equals_an_independent_computation(bench_run, small_pair_dir):
    from qmtgan.runtime import metrics
    from qmtgan.runtime.tileset import sample_tiles
    from qmtgan.train.pair import load_pair

    _, doc, _ = bench_run
    reference, target, _, _ = load_pair(small_pair_dir)
    tiles = sample_tiles(reference.data, target.data, 32, 3)
    checked = [x for x in doc["records"] if x["status"] == "ok"]
    assert len(checked) == 8
    for r in checked:
        pred = np.load(r["outputs_file"], allow_pickle=False)
        num = sum(float(np.sum(tiles.target[i][:, tiles.valid[i]].astype(np.float64) ** 2)) for i in range(3))
        den = sum(
            float(
                np.sum(
                    (tiles.target[i][:, tiles.valid[i]].astype(np.float64) - pred[i][:, tiles.valid[i]]) ** 2
                )
            )
            for i in range(3)
        )
        assert r["snr_vs_target_db"] == pytest.approx(10 * np.log10(num / den), abs=1e-6), r["label"]
    # an error of exactly 1 DN everywhere: the SNR is the target's mean power in dB
    x = tiles.target[0].astype(np.float64)
    assert metrics.snr_db(x, x + 1.0) == pytest.approx(10 * np.log10(np.mean(x**2)), abs=1e-9)


@pytest.mark.qemu  # bench_run measures the emulated board too
def test_a_broken_bundle_fails_alone_and_the_exit_code_says_so(bench_run):
    proc, doc, out = bench_run
    failed = [r for r in doc["records"] if r["status"] != "ok"]
    assert sorted((r["config"]["name"], r["config"]["where"]) for r in failed) == [("onnx-altered", "local"),
                                                                                  ("onnx-altered", "qemu")]
    assert all("fails its sha256 check" in r["error"] for r in failed)
    assert proc.returncode == 1 and "2 of 10 configurations failed" in proc.stderr
    assert "onnx-altered" in (out / "bench.md").read_text()


def test_rpc_through_a_tracker_with_a_device_key_and_an_unreachable_server(
    tiny_bundles, small_pair_dir, tmp_path
):
    from qmtgan.bench.records import Config, Timing
    from qmtgan.bench.rpc import RpcRunner
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.runtime.tileset import sample_tiles
    from qmtgan.train.pair import load_pair

    out_dir, _ = tiny_bundles
    reference, target, _, _ = load_pair(small_pair_dir)
    tiles = sample_tiles(reference.data, target.data, 32, 2)
    config = Config(
        "tvm-host-x86_64", str(out_dir / "tvm-host-x86_64"), "tvm", "fp32", "host-x86_64", "rpc", None
    )
    tracker_port, server_port = free_port(), free_port()
    with _serve("tvm.exec.rpc_tracker", port=tracker_port), \
         _serve("tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{tracker_port}", "--key", "qmtgan-test",
                port=server_port):
        time.sleep(1.0)  # the server registers its key with the tracker
        record, pred = RpcRunner(tiles, tracker=f"127.0.0.1:{tracker_port}", key="qmtgan-test").run(
            config, Timing(warmup=1, runs=3), tiles.reference.shape)
    assert pred.shape == tiles.reference.shape and len(record["latencies_s"]) >= 3
    with pytest.raises(QmtganError, match="cannot reach the TVM RPC"):
        RpcRunner(tiles, server=f"127.0.0.1:{free_port()}").run(config, Timing(runs=1), tiles.reference.shape)


def test_unknown_target_is_refused_before_anything_runs(tiny_bundles, tiny_run, small_pair_dir, tmp_path):
    out_dir, _ = tiny_bundles
    proc = run_cli("bench", "--bundles", out_dir, "--model", tiny_run[0], "--pair", small_pair_dir,
                   "--boards", "host-x86_64,pi9", "--out", tmp_path / "r")
    assert proc.returncode == 1 and "unknown target 'pi9'" in proc.stderr and not (tmp_path / "r").exists()


def test_unreachable_board_and_timeouts_become_error_records(
    tiny_bundles, tiny_run, small_pair_dir, tmp_path
):
    out_dir, _ = tiny_bundles
    proc = run_cli(
        "bench",
        "--bundles",
        out_dir,
        "--only",
        "onnx,tflite-fp32",
        "--model",
        tiny_run[0],
        "--pair",
        small_pair_dir,
        "--host",
        "host-x86_64=nobody@127.0.0.1",
        "--port",
        str(free_port()),
        "--timeout",
        "1",
        "--out",
        tmp_path / "r",
    )
    doc = json.loads((tmp_path / "r" / "bench.json").read_text())
    errors = {r["config"]["name"]: r["error"] for r in doc["records"]}
    assert all(r["status"] == "error" for r in doc["records"]) and len(errors) == 3
    assert errors["keras-fp32"] == "timed out after 1 s"  # TensorFlow alone takes longer to import
    assert "cannot reach nobody@127.0.0.1 over ssh" in errors["onnx"]
    assert proc.returncode == 1 and "3 of 3 configurations failed" in proc.stderr
    assert "## Failed configurations" in (tmp_path / "r" / "bench.md").read_text()
    assert all("stderr" in r for r in doc["records"])


def test_a_failed_worker_keeps_its_whole_stderr():
    """The message carries the end of a failed command's stderr; the error keeps all of it."""
    from qmtgan.runtime.errors import QmtganError
    from qmtgan.targets.devices import last_json_line

    script = "import sys; sys.stderr.write('start ' + 'x' * 5000 + ' end'); sys.exit(3)"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    with pytest.raises(QmtganError) as caught:
        last_json_line(proc, "the worker")
    assert "failed (exit 3)" in str(caught.value) and str(caught.value).endswith(" end")
    assert "start" not in str(caught.value) and caught.value.detail.startswith("start ")
    assert len(caught.value.detail) == 5010


@pytest.mark.ssh
def test_a_board_over_ssh(tiny_bundles, tiny_run, small_pair_dir, tmp_path):
    from sshd import loopback_sshd

    out_dir, _ = tiny_bundles
    with loopback_sshd(tmp_path / "sshd") as ssh:
        proc = run_cli(
            "bench",
            "--bundles",
            out_dir,
            "--only",
            "tflite-int8",
            "--model",
            tiny_run[0],
            "--pair",
            small_pair_dir,
            "--host",
            f"host-x86_64={ssh.host}",
            *ssh.flash_args()[2:],
            "--python",
            sys.executable,
            "--workdir",
            tmp_path / "board",
            "--runs",
            "3",
            "--min-time",
            "0",
            "--out",
            tmp_path / "r",
        )
    assert proc.returncode == 0, proc.stderr
    records = json.loads((tmp_path / "r" / "bench.json").read_text())["records"]
    remote = [r for r in records if r["config"]["where"] == "ssh"]
    assert len(remote) == 1 and remote[0]["status"] == "ok" and remote[0]["peak_rss_mb"] > 0
    assert remote[0]["snr_vs_float_db"] > 30
    assert (tmp_path / "board" / "bundles" / "tflite-int8" / "model.tflite").is_file()


def _demo_structure_macs(ngf: int, tile: int, bands: int = 12, depth: int = 5, k: int = 5) -> int:
    """The MultiTempGAN's convolution MACs per tile, counted from its definition (linear residual,
    3x3 spectral map): conv_i at tile / 2^i, deconv_i from tile / 2^(depth + 1 - i)."""
    down = [ngf * min(2**i, 8) for i in range(depth)]
    up = down[-2::-1] + [bands]
    macs, cin = 0, bands
    for i, w in enumerate(down, start=1):
        macs += (tile // 2**i) ** 2 * k * k * cin * w
        cin = w
    for i, w in enumerate(up, start=1):
        cin = up[i - 2] + down[depth - i] if i > 1 else down[-1]
        macs += (tile // 2 ** (depth + 1 - i)) ** 2 * k * k * cin * w
    return macs + tile * tile * 9 * bands * bands


def test_the_width_benchmark_counts_the_work_and_times_every_runtime(small_pair_dir, tmp_path):
    """The demo's generator and one twice as wide, through TFLite and ONNX Runtime: each row's
    MACs match the generator's definition and its GFLOP/s and fraction of peak follow from them."""
    out = tmp_path / "width"
    refused = subprocess.run([sys.executable, "-m", "qmtgan", "bench", "width", "--pair", str(small_pair_dir),
                              "--generators", "demo,huge", "--out", str(out)], capture_output=True, text=True)
    assert refused.returncode == 1 and "unknown generator or runtime: huge" in refused.stderr
    assert not out.exists()
    proc = subprocess.run(
        [sys.executable, "-m", "qmtgan", "bench", "width", "--pair", str(small_pair_dir),
         "--generators", "demo,ngf8", "--runtimes", "tflite,onnxruntime", "--threads", "1",
         "--patch-size", "32", "--tiles", "2", "--runs", "3", "--min-time", "0", "--out", str(out)],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "width.json").read_text())
    rows = result["rows"]
    assert [(r["generator"], r["runtime"]) for r in rows] == [
        ("demo", "tflite"), ("demo", "onnxruntime"), ("ngf8", "tflite"), ("ngf8", "onnxruntime")]
    for row in rows:
        assert row["macs_per_tile"] == _demo_structure_macs(row["ngf"], 32)
        assert row["latency_ms"]["count"] >= 3 and row["latency_ms"]["min"] > 0
        mean_s = row["latency_ms"]["mean"] / 1000
        assert row["gflops"] == pytest.approx(2 * row["macs_per_tile"] / mean_s / 1e9)
        assert row["fraction_of_peak"] == pytest.approx(row["gflops"] / result["peak"]["peak_gflops"])
    assert result["sgemm_gflops"] > 0 and (out / "width.png").stat().st_size > 0
    assert (out / "width.md").read_text().count("| ngf8 | 8 |") == 2


def test_every_bench_record_field_and_report_column_is_documented():
    import re

    from qmtgan.bench.records import HARNESS_FIELDS
    from qmtgan.bench.report import COLUMNS

    schema = (Path(__file__).resolve().parents[1] / "docs" / "bench-schema.md").read_text()
    record_table = schema.split("A record (schema `qmtgan.bench/1`)")[1].split("\n# ")[0]
    documented = {key for row in record_table.splitlines() if row.startswith("| `")
                  for key in re.findall(r"`([a-z_0-9]+)`", row.split(" | ")[0])}
    missing = [k for k in (*FIELDS, *HARNESS_FIELDS) if k not in documented and k != "schema"]
    assert not missing, f"bench record fields not in docs/bench-schema.md: {missing}"
    assert all(key.split(".")[0] in (*FIELDS, *HARNESS_FIELDS) for key, _ in COLUMNS)


def test_the_demo_stage_table_reads_a_demo_report_and_refuses_one_without_timings(tmp_path):
    """`qmtgan bench demo-stages`: every stage of report.json's timings with its share of the
    total and the CPU the demo ran on; a report without timings is one clear error, and nothing
    is written."""
    report = {"timings": {"prepare_s": 30.0, "train_s": 90.0, "total_s": 120.0},
              "host": {"cpu": "Some CPU", "cpus": 2}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    proc = run_cli("bench", "demo-stages", "--report", tmp_path / "report.json", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "out" / "demo_stages.json").read_text())["stages"]
    assert [(r["stage"], r["seconds"]) for r in rows] == [("prepare", 30.0), ("train", 90.0),
                                                          ("total", 120.0)]
    assert rows[1]["share"] == 0.75 and "Some CPU" in (tmp_path / "out" / "demo_stages.md").read_text()
    (tmp_path / "bad.json").write_text(json.dumps({"timings": {"train_s": 1.0}}))
    proc = run_cli("bench", "demo-stages", "--report", tmp_path / "bad.json", "--out", tmp_path / "bad")
    assert proc.returncode != 0 and "no stage timings" in proc.stderr and not (tmp_path / "bad").exists()
