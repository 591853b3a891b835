"""TVM RPC: the board runs `python -m tvm.exec.rpc_server` (it needs cloudpickle and psutil);
this side uploads the bundle's module, runs the real tiles through a Relax VM on the board's
CPU, and times it with the VM's time_evaluator (the board's own clock, so the network is not
timed). Either a direct server (--rpc host:port) or a tracker with a device key
(--rpc-tracker host:port --rpc-key rpi4), which is how a farm of boards is driven.
Peak RSS is not measured over RPC (the server process serves many sessions)."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np

from qmtgan.bench.records import Config, Timing
from qmtgan.bench.runners import Runner
from qmtgan.runtime.backends import BACKENDS
from qmtgan.runtime.bundle import load_bundle
from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.probe import ProbeRecord
from qmtgan.runtime.tileset import TileSet


_UPLOADS = itertools.count()


def host_port(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise QmtganError(f"{what} must be host:port, got '{text}'")
    return host, int(port)


class RpcRunner(Runner):
    def __init__(
        self,
        tiles: TileSet,
        server: str | None = None,
        tracker: str | None = None,
        key: str | None = None,
        session_timeout: int = 0,
    ):
        if bool(server) == bool(tracker):
            raise QmtganError(
                "give exactly one of --rpc host:port or --rpc-tracker host:port (with --rpc-key)"
            )
        if tracker and not key:
            raise QmtganError("--rpc-tracker needs --rpc-key (the device key the boards registered with)")
        self.tiles, self.server, self.tracker, self.key, self.timeout = (
            tiles,
            server,
            tracker,
            key,
            session_timeout,
        )

    def describe(self) -> str:
        return f"rpc {self.server}" if self.server else f"rpc tracker {self.tracker} key {self.key}"

    def _session(self):
        from tvm import rpc

        try:
            if self.server:
                return rpc.connect(*host_port(self.server, "--rpc"), session_timeout=self.timeout)
            return rpc.connect_tracker(*host_port(self.tracker, "--rpc-tracker")).request(
                self.key, session_timeout=self.timeout)
        except Exception as exc:  # TVMError / OSError / RuntimeError: no server there
            raise QmtganError(
                f"cannot reach the TVM RPC {self.describe()}: {str(exc).strip().splitlines()[-1]}"
            ) from None

    def run(self, config: Config, timing: Timing, expected_shape) -> tuple[dict, np.ndarray]:
        return measure_on_session(self._session, config, self.tiles, timing, self.describe())


def measure_on_session(open_session, config: Config, tiles: TileSet, timing: Timing,
                       where: str) -> tuple[dict, np.ndarray]:
    """The probe record and predicted tiles of ``config`` (a TVM bundle) on the board RPC
    session ``open_session()`` returns once the bundle checks out. ``config.threads`` sets the
    board's thread pool (None: its default)."""
    import tvm
    from tvm import relax

    bundle = load_bundle(config.bundle)
    if not BACKENDS[bundle.manifest.backend].built_for_a_board:
        raise QmtganError(
            f"{config.bundle}: TVM RPC runs TVM modules, this bundle is {bundle.manifest.backend}"
        )
    t0 = time.perf_counter()
    session = open_session()
    if config.threads:
        session.get_function("runtime.config_threadpool")(1, config.threads)
    model = bundle.path / bundle.manifest.model_file
    remote_name = f"qmtgan-{config.name}-{next(_UPLOADS)}.so"  # a session may load several modules
    session.upload(str(model), target=remote_name)
    device = session.cpu()
    try:
        vm = relax.VirtualMachine(session.load_module(remote_name), device)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise QmtganError(f"{where}: the board cannot load {model.name} ({reason})") from None
    init_s = time.perf_counter() - t0
    x = tiles.normalized(bundle.normalization)
    out, per_tile = np.empty_like(x), []
    for i in range(len(x)):
        t = time.perf_counter()
        out[i] = vm["main"](tvm.runtime.tensor(x[i : i + 1], device)).numpy()[0]
        per_tile.append(time.perf_counter() - t)
    vm.set_input("main", tvm.runtime.tensor(x[:1], device))
    for _ in range(timing.warmup):
        vm.invoke_stateful("main")
    repeat = max(timing.runs, math.ceil(timing.min_time_s / max(min(per_tile), 1e-6)))
    result = vm.time_evaluator("invoke_stateful", device, number=1, repeat=repeat)("main")
    session_info = {"arch": None, "system": None, "cpus": None, "rpc": where}
    latencies = [float(r) for r in result.results]
    record = ProbeRecord(bundle.tile, len(x), config.threads, init_s, per_tile[0], latencies, None,
                         session_info, {"apache-tvm (client)": tvm.__version__},
                         {"tile_pass_s": per_tile}).to_dict()
    return record, TileSet.denormalized(out, bundle.normalization)
