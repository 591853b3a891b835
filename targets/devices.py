"""How commands and files reach a board: one small class per way (this machine, the emulated
qemu board, a board over ssh). Flash and the benchmark harness drive every board through the
same three calls: `arch()`, `put(folder)`, `run(argv)`."""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

from qmtgan.runtime.errors import QmtganError
from qmtgan.runtime.names import relative_path
from qmtgan.targets.registry import Board, require_tool

RUNTIME_DIR = "runtime"   # where flash and bench stage the device runtime, relative to workdir


def bounded(call, timeout: float | None):
    """call(); a command that outlives `timeout` becomes one clear error."""
    try:
        return call()
    except subprocess.TimeoutExpired:
        raise QmtganError(f"timed out after {timeout:.0f} s") from None


def last_json_line(proc: subprocess.CompletedProcess, what: str, ok_codes: tuple[int, ...] = (0,)) -> dict:
    """The JSON record a worker prints last; a clear error naming how it ended otherwise."""
    lines = [line for line in (proc.stdout or "").splitlines() if line.startswith("{")]
    if proc.returncode in ok_codes and lines:
        return json.loads(lines[-1])
    stderr = (proc.stderr or "").strip()
    # the message ends with stderr's last lines; the error record keeps all of it
    if proc.returncode < 0:
        raise QmtganError(f"{what} crashed (signal {-proc.returncode}): {stderr[-800:]}", detail=stderr)
    raise QmtganError(f"{what} failed (exit {proc.returncode}): {stderr[-800:]}", detail=stderr)


class Device:
    """A board reached some way. `workdir` is where files land on it (a posix path there)."""

    def __init__(self, board: Board, workdir: str, python: str | None = None):
        self.board, self.workdir = board, workdir
        self.python = python or board.python

    def describe(self) -> str:
        return f"{self.board.name} ({self.board.reach.method})"

    def run(self, argv: list[str], env: dict[str, str] | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess:  # pragma: no cover - abstract
        raise NotImplementedError

    def put(self, folder: Path, dest: str) -> None:  # pragma: no cover - abstract
        """Copy a local folder to workdir/dest, replacing it. Commands run in workdir, so
        they name it by the relative `dest`."""
        raise NotImplementedError

    def fetch(self, file: str) -> bytes:  # pragma: no cover - abstract
        """The bytes of a file on the board (relative to workdir)."""
        raise NotImplementedError

    def sha256(self, files: list[str]) -> dict[str, str]:
        """sha256 of files (relative to workdir) computed on the board."""
        for f in files:
            self.path(f)
        proc = self.run(["sha256sum", "--", *files], timeout=600)
        found = dict(reversed(line.split(None, 1)) for line in proc.stdout.splitlines() if line.strip())
        return {f: found.get(f, "") for f in files}

    def path(self, *parts: str) -> str:
        """A place under workdir: every part a plain relative name, so nothing a bundle or a
        label says can reach outside it."""
        for part in parts:
            relative_path(part, f"{self.describe()}: a path under the workdir")
        return str(PurePosixPath(self.workdir, *parts))

    def _python_argv(self, argv: list[str]) -> list[str]:
        return [self.python, *argv[1:]] if argv[0] == "python3" else argv

    def probe(self, bundle_folder: str, tiles: str, args: list[str], threads: int | None = None,
              timeout: float | None = None, ok_codes: tuple[int, ...] = (0,)) -> dict:
        """The device-side worker (runtime/probe.py, staged under RUNTIME_DIR) on a bundle staged
        at bundle_folder: its JSON record. Threads and XNNPACK follow the board unless given."""
        argv = ["python3", "-m", "qmtgan.runtime.probe", "--bundle", bundle_folder, "--tiles-file", tiles,
                *args]
        if threads:
            argv += ["--threads", str(threads)]
        if not self.board.tflite.xnnpack:
            argv.append("--no-xnnpack")
        proc = bounded(lambda: self.run(argv, env={"PYTHONPATH": RUNTIME_DIR}, timeout=timeout), timeout)
        return last_json_line(proc, f"the probe on {self.describe()}", ok_codes)

    def arch(self) -> str:
        proc = self.run(["uname", "-m"], timeout=60)
        if proc.returncode != 0:
            raise QmtganError(f"{self.describe()}: 'uname -m' failed: {proc.stderr.strip()}")
        return proc.stdout.strip()


class _HostFiles(Device):
    """Devices that see this machine's file system (local, emulated)."""

    def put(self, folder: Path, dest: str) -> None:
        from qmtgan.runtime.atomic import atomic_dir

        with atomic_dir(Path(self.path(dest))) as tmp:  # a killed copy leaves the previous folder
            shutil.copytree(folder, tmp, dirs_exist_ok=True)

    def fetch(self, file: str) -> bytes:
        return Path(self.path(file)).read_bytes()

    def sha256(self, files: list[str]) -> dict[str, str]:
        from qmtgan.runtime.digest import sha256_file

        return {f: sha256_file(self.path(f)) if Path(self.path(f)).is_file() else "" for f in files}


class LocalDevice(_HostFiles):
    def __init__(self, board: Board, workdir: str, python: str | None = None):
        super().__init__(board, workdir, python or sys.executable)

    def run(self, argv, env=None, timeout=None):
        import os

        return subprocess.run(
            self._python_argv(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
            env={**os.environ, **(env or {})},
        )


class QemuDevice(_HostFiles):
    """The emulated aarch64 board: real aarch64 code under qemu-aarch64 user mode."""

    def run(self, argv, env=None, timeout=None):
        from qmtgan.targets.emulate import run_emulated

        return run_emulated(self.board, argv, env=env, timeout=timeout, cwd=self.workdir)

    def arch(self) -> str:
        proc = self.run(["python3", "-c", "import platform; print(platform.machine())"], timeout=300)
        if proc.returncode != 0:
            raise QmtganError(
                f"{self.describe()}: the emulated python did not start: {proc.stderr.strip()[-500:]}"
            )
        return proc.stdout.strip()


_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def ssh_destination(value: str) -> str:
    """`[user@]host` with host a name, an IPv4 or an IPv6 address (bare or in brackets): the
    destination as ssh takes it; one clear error for anything else (a leading '-', spaces,
    shell characters, an empty part)."""
    user, at, host = str(value).rpartition("@")
    if at and not _USER.fullmatch(user):
        raise QmtganError(f"ssh destination {value!r}: {user!r} is not a user name")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        return f"{user}@{host}" if at else host
    except ValueError:
        pass
    if not (0 < len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in host.split("."))):
        raise QmtganError(f"ssh destination {value!r}: {host!r} is not a host name or an IP address "
                          "(expected [user@]host)")
    return f"{user}@{host}" if at else host


class SshDevice(Device):
    """A board over ssh (BatchMode: keys only, never a password prompt)."""

    def __init__(
        self,
        board: Board,
        host: str,
        workdir: str,
        python: str | None = None,
        port: int | None = None,
        identity: str | None = None,
        options: tuple[str, ...] = (),
    ):
        super().__init__(board, workdir, python)
        require_tool("ssh", "openssh-client", "reaching a board over ssh")
        self.host = ssh_destination(host)
        self.ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if port:
            self.ssh += ["-p", str(port)]
        if identity:
            self.ssh += ["-i", identity]
        for opt in options:
            self.ssh += ["-o", opt]

    def describe(self) -> str:
        return f"{self.board.name} at {self.host}"

    def _remote(self, command: str, timeout: float | None, stdin=None) -> subprocess.CompletedProcess:
        # "--": the destination is never read as an option, whatever it looks like
        proc = subprocess.run([*self.ssh, "--", self.host, command], capture_output=True, text=stdin is None,
                              timeout=timeout, stdin=stdin)
        if proc.returncode == 255:  # ssh's own failure: the command never ran
            err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
            raise QmtganError(
                f"cannot reach {self.host} over ssh: "
                f"{err.strip().splitlines()[-1] if err.strip() else 'no reply'}"
            )
        return proc

    def run(self, argv, env=None, timeout=None):
        argv = self._python_argv(argv)
        for key in env or {}:
            if not _ENV_NAME.fullmatch(key):
                raise QmtganError(f"{key!r} is not an environment variable name")
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        workdir = shlex.quote(self.workdir)
        command = f"mkdir -p {workdir} && cd {workdir} && {prefix} {shlex.join(argv)}"
        return self._remote(command, timeout)

    def fetch(self, file: str) -> bytes:
        proc = self._remote(f"cat {shlex.quote(self.path(file))}", timeout=600, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise QmtganError(
                f"{self.host}: cannot read {self.path(file)}: {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout

    def put(self, folder: Path, dest: str) -> None:
        target = self.path(dest)
        with tempfile.TemporaryFile() as archive:
            subprocess.run(["tar", "-C", str(folder), "-czf", "-", "."], stdout=archive, check=True)
            archive.seek(0)
            q = shlex.quote(target)
            # unpacked beside the target and moved into place only once complete: a dropped
            # connection leaves the previous folder (and a temporary the next copy removes)
            tmp = shlex.quote(f"{target}.tmp-copy")
            proc = self._remote(
                f"rm -rf {tmp} && mkdir -p {tmp} && tar -xzf - -C {tmp} && rm -rf {q} && mv {tmp} {q}",
                timeout=600,
                stdin=archive,
            )
        if proc.returncode != 0:
            raise QmtganError(
                f"copy to {self.host}:{target} failed: {proc.stderr.decode(errors='replace').strip()}"
            )


def connect(board: Board, host: str | None = None, workdir: str | None = None, python: str | None = None,
            port: int | None = None, identity: str | None = None, options: tuple[str, ...] = ()) -> Device:
    """The device for a board: ssh when a host is given (or the board is reached by ssh),
    qemu for the emulated board, this machine otherwise."""
    method = "ssh" if host else board.reach.method
    if method == "ssh":
        host = host or board.reach.host or None
        if not host:
            raise QmtganError(f"board {board.name} is reached over ssh: give --host user@addr")
        return SshDevice(board, host, workdir or board.reach.workdir, python, port, identity, options)
    local_dir = workdir or tempfile.mkdtemp(prefix=f"qmtgan-{board.name}-")
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    return (QemuDevice if method == "qemu" else LocalDevice)(board, local_dir, python)
