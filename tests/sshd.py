"""A real OpenSSH server for tests, listening on 127.0.0.1 only, with throw-away host and
client keys (CI installs openssh-server)."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from helpers import free_port, wait_for_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class LoopbackSsh:
    user: str
    port: int
    identity: Path
    pid: int = 0     # the listening sshd
    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1"

    def flash_args(self) -> list[str]:
        return ["--host", self.host, "--port", str(self.port), "--identity", str(self.identity),
                "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
                "--ssh-option", "LogLevel=ERROR"]


@contextlib.contextmanager
def loopback_sshd(folder: Path, extra_config: tuple[str, ...] = ()):
    """`extra_config`: more sshd_config lines (e.g. a SetEnv for the sessions)."""
    assert Path(SSHD).exists(), "sshd missing: apt-get install openssh-server"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    port = free_port()
    (folder / "sshd_config").write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}", f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", *extra_config, ""]))
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "sshd.log", "w"))
    try:
        wait_for_port(port, proc, lambda: (folder / "sshd.log").read_text())
        yield LoopbackSsh(getpass.getuser(), port, folder / "client_key", proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
