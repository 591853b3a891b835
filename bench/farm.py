"""A farm of boards behind one TVM RPC tracker.

`Farm` starts the tracker and one RPC server per board slot: on this machine for a local board,
under qemu for the emulated one. Each server registers with its board's name as the device key.
Boards reached over ssh run their own server against the tracker's address.

`farm_bench` spreads a bench matrix (TVM bundles x thread counts) over every free board of a
key. It holds one tracker session per board, and each board takes the next configuration as
soon as it is done with one. Records are scored like every other bench record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qmtgan.bench.records import Config, Timing, error_record, latency_stats
from qmtgan.bench.rpc import host_port, measure_on_session
from qmtgan.runtime.errors import QmtganError

log = logging.getLogger(__name__)

FARM_SCHEMA = "qmtgan.farm/1"
# Ports a server may take from its first one when that one is busy.
PORTS_PER_SERVER = 20
REGISTER_TIMEOUT_S = 300.0  # an emulated server imports TVM under qemu: slow on the first start


def free_boards(tracker: str) -> dict[str, int]:
    """Free servers per device key, as the tracker counts them."""
    from tvm import rpc

    where = host_port(tracker, "--tracker")
    try:
        socket.create_connection(where, timeout=5).close()  # TVM's own client retries for a minute
        summary = rpc.connect_tracker(*where).summary()
    except Exception as exc:  # OSError / RuntimeError / TVMError: no tracker there
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise QmtganError(f"cannot reach the TVM RPC tracker at {tracker}: {reason}") from None
    return {key: int(info.get("free", 0)) for key, info in summary["queue_info"].items()}


def _wait_listening(host: str, port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if proc.poll() is not None:
            raise QmtganError(f"{what} exited with code {proc.returncode} before listening on {host}:{port}")
        time.sleep(0.1)
    raise QmtganError(f"{what} does not listen on {host}:{port} after {timeout:.0f} s")


# Runs TVM's RPC server in an emulated guest whose sys.executable is a host launcher of the
# guest's python (the server forks its workers through sys.executable).
_GUEST_SERVER = (
    "import runpy, sys; sys.executable = sys.argv.pop(1); "
    "runpy.run_module('tvm.exec.rpc_server', run_name='__main__', alter_sys=True)"
)


def _server_argv(board, tracker: str, host: str, port: int, folder: Path) -> list[str]:
    """The command of one RPC server of ``board``, registered under its name as the key."""
    args = [
        "--tracker",
        tracker,
        "--key",
        board.name,
        "--host",
        host,
        "--port",
        str(port),
        "--port-end",
        str(port + PORTS_PER_SERVER),
    ]
    if board.reach.method == "local":
        return [sys.executable, "-m", "tvm.exec.rpc_server", *args]
    if board.reach.method == "qemu":
        from qmtgan.targets.emulate import emulated_argv, guest_python_launcher

        launcher = guest_python_launcher(board, folder / f"{board.name}-python")
        return emulated_argv(board, ["python3", "-c", _GUEST_SERVER, str(launcher), *args])
    raise QmtganError(
        f"board {board.name} is reached over {board.reach.method}: start its server there with "
        f"python3 -m tvm.exec.rpc_server --tracker {tracker} --key {board.name}"
    )


@dataclass
class Farm:
    """A tracker on host:port and ``slots`` servers per board name, started on entry and
    stopped on exit; entry returns once every server is registered."""

    slots: dict[str, int]
    host: str = "127.0.0.1"
    port: int = 9190
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def tracker(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> "Farm":
        from qmtgan.targets.registry import board

        self._folder = Path(tempfile.mkdtemp(prefix="qmtgan-farm-"))
        boards = {name: board(name) for name in self.slots}  # unknown boards: an error before anything starts
        try:
            argv = ["-m", "tvm.exec.rpc_tracker", "--host", self.host, "--port", str(self.port)]
            tracker = self._start([sys.executable, *argv, "--port-end", str(self.port + 1)])
            _wait_listening(self.host, self.port, tracker, "the TVM RPC tracker")
            port = self.port + 2
            for name, count in self.slots.items():
                for _ in range(count):
                    self._start(_server_argv(boards[name], self.tracker, self.host, port, self._folder))
                    port += PORTS_PER_SERVER + 1
            self._wait_registered()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self, argv: list[str]) -> subprocess.Popen:
        """A process in a session of its own: stopping it stops the workers it forks too."""
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.processes.append(proc)
        return proc

    def _wait_registered(self) -> None:
        end = time.monotonic() + REGISTER_TIMEOUT_S
        while True:
            with contextlib.suppress(QmtganError):
                free = free_boards(self.tracker)
                if all(free.get(name, 0) >= n for name, n in self.slots.items()):
                    return
            dead = [p for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > end:
                raise QmtganError(
                    f"the farm's servers did not all register with {self.tracker} "
                    f"({'a server exited' if dead else f'after {REGISTER_TIMEOUT_S:.0f} s'})"
                )
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        # TVM's tracker and servers serve from child processes: stop each whole process group
        for p in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(20)
        self.processes.clear()
        shutil.rmtree(self._folder, ignore_errors=True)


def request_board(tracker: str, key: str, session_timeout: int = 0):
    """A session on a free board of ``key`` and that board's address (host:port): what the
    tracker client's own request does, keeping the address it is given."""
    from tvm import rpc
    from tvm.rpc import base

    sock = socket.create_connection(host_port(tracker, "--tracker"), timeout=30)
    try:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
            raise QmtganError(f"{tracker} is not a TVM RPC tracker")
        sock.settimeout(None)  # the tracker answers when a board of the key is free
        base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", 1])
        value = base.recvjson(sock)
    finally:
        sock.close()
    if value[0] != base.TrackerCode.SUCCESS:
        raise QmtganError(f"the tracker at {tracker} refused a {key} board: {value}")
    host, port, matchkey = value[1]
    return rpc.connect(host, port, matchkey, session_timeout), f"{host}:{port}"


def farm_bench(
    tracker: str,
    key: str,
    configs: list[Config],
    tiles,
    timing: Timing,
    boards: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Every configuration on the next free board of ``key`` (``boards`` of them at once,
    default: all free now); one record each, with the board's address in "board"."""
    from tqdm import tqdm

    free = free_boards(tracker).get(key, 0)
    if free < 1:
        raise QmtganError(
            f"no free board of key '{key}' at the tracker {tracker} (free: "
            f"{free_boards(tracker) or 'none registered'})"
        )
    boards = min(boards or free, free, len(configs))
    todo: queue.Queue = queue.Queue()
    for c in configs:
        todo.put(c)
    records: list[dict] = []
    lock = threading.Lock()
    bar = tqdm(total=len(configs), desc=f"farm {key} x{boards}", unit="config", disable=not progress)

    def work() -> None:
        try:
            session, where = request_board(tracker, key, session_timeout=int(timing.timeout_s))
        except Exception as exc:  # the board went away: what is left goes to the other boards
            log.warning(f"no session on a {key} board: {exc}")
            return
        while True:
            try:
                config = todo.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            try:
                probe, predicted = measure_on_session(lambda: session, config, tiles, timing, where)
                row = {
                    "schema": FARM_SCHEMA,
                    "label": config.label,
                    "config": asdict(config),
                    "status": "ok",
                    "error": None,
                    "board": where,
                    "key": key,
                    "latency_ms": latency_stats(probe["latencies_s"]),
                    "init_ms": 1000 * probe["init_s"],
                    "snr_vs_target_db": tiles.scores(predicted)["snr_db"],
                }
            except Exception as exc:  # one broken configuration stays in its record
                row = {**error_record(config, str(exc)), "board": where, "key": key}
            row["busy_s"] = time.perf_counter() - t0
            with lock:
                records.append(row)
                bar.update(1)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(boards)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    while not todo.empty():  # every board failed before taking these
        config = todo.get_nowait()
        records.append(
            {**error_record(config, f"no {key} board could run it"), "board": None, "key": key, "busy_s": 0.0}
        )
    return records
