"""A mosquitto broker for a DDNN: generated config, password file and ACL; start, stop, restart.

:func:`mosquitto_config` writes what a deployment needs: one listener,
persistence (the queued messages of persistent sessions survive a restart),
no limit on in-flight messages per client (the tiers hold acknowledgements
while a sample is open), and optionally per-tier credentials with an ACL
(:func:`acl_text`) in which

* ``device-D`` may write only ``ddnn/SYS/device/D/#`` and read its view and the gateways' requests;
* ``gateway`` may write ``ddnn/SYS/gateway/#`` and read the devices' topics and the clouds' answers;
* ``cloud`` may write ``ddnn/SYS/cloud/#`` and read the gateways' jobs;
* ``source`` (the ``system`` command's source and sink) may write the views and read answers and status;

and anonymous clients are refused.  :class:`Mosquitto` runs it on a free
port of 127.0.0.1 (tests, benchmarks); ``kill()`` + ``start()`` restarts it
on the same port and persistence file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ...errors import ToolError
from . import wire

TIER_USERS = ("gateway", "cloud", "source")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def acl_text(system: str, devices: int) -> str:
    """The ACL of one system (see the module docstring)."""
    t = f"{wire.PREFIX}/{system}"
    lines = []
    for d in range(devices):
        lines += [
            f"user device-{d}",
            f"topic write {t}/device/{d}/#",
            f"topic read {t}/source/{d}/view",
            f"topic read {t}/gateway/+/request",
            "",
        ]
    lines += [
        "user gateway",
        f"topic write {t}/gateway/#",
        f"topic read {t}/device/#",
        f"topic read {t}/cloud/+/answer",
        "",
        "user cloud",
        f"topic write {t}/cloud/#",
        f"topic read {t}/gateway/+/job",
        f"topic read $share/{wire.cloud_group(system)}/{t}/gateway/+/job",
        "",
        "user source",
        f"topic write {t}/source/#",
        f"topic write {t}/source/+/status",
        f"topic read {t}/+/+/answer",
        f"topic read {t}/+/+/status",
        "",
    ]
    return "\n".join(lines)


def users(devices: int) -> list[str]:
    return [f"device-{d}" for d in range(devices)] + list(TIER_USERS)


def write_passwords(path: Path, passwords: dict[str, str]) -> None:
    """A mosquitto password file (hashed with mosquitto_passwd)."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise ToolError("mosquitto_passwd is missing", hint="apt-get install mosquitto")
    path.write_text("".join(f"{u}:{p}\n" for u, p in passwords.items()))
    proc = subprocess.run([tool, "-U", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"mosquitto_passwd failed: {proc.stderr.strip()}")


def mosquitto_config(
    workdir: Path,
    port: int,
    *,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    persistence: bool = True,
) -> str:
    import pwd

    lines = [
        # as root, mosquitto would switch to user "mosquitto", who cannot read a private work folder
        f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        f"listener {port} 127.0.0.1",
        f"allow_anonymous {'false' if password_file else 'true'}",
        "max_inflight_messages 0",
        "set_tcp_nodelay true",
        "max_queued_messages 100000",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {workdir}/",
        "persistence_file mosquitto.db",
        "autosave_interval 1",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
    ]
    if password_file:
        lines.append(f"password_file {password_file}")
    if acl_file:
        lines.append(f"acl_file {acl_file}")
    return "\n".join(lines) + "\n"


class Mosquitto:
    """A mosquitto process on 127.0.0.1 with a generated config."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        port: int | None = None,
        credentials: dict[str, str] | None = None,
        acl: str | None = None,
    ) -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        if exe is None:
            raise ToolError("mosquitto is missing", hint="apt-get install mosquitto")
        self.exe = exe
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        pw = acl_file = None
        if credentials:
            pw = self.dir / "passwd"
            write_passwords(pw, credentials)
        if acl is not None:
            acl_file = self.dir / "acl"
            acl_file.write_text(acl)
        self.config = self.dir / "mosquitto.conf"
        self.config.write_text(mosquitto_config(self.dir, self.port, password_file=pw, acl_file=acl_file))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        log = open(self.dir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([self.exe, "-c", str(self.config)], stdout=log, stderr=log)
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise ToolError(
                    f"mosquitto exited with {self.proc.returncode}: {(self.dir / 'mosquitto.log').read_text()[-500:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ToolError(f"mosquitto did not listen on port {self.port} within {timeout:g} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
