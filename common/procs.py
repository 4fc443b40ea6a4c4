"""Start, probe and stop background servers; used by deploy commands and tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from common.cpus import pin_self

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """First port of the kernel's ephemeral range (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, picked below the ephemeral range.

    bind(0) hands out ports from the ephemeral range, which outgoing connections draw from too:
    a readiness probe's source port can take the number before a slow server binds it (seen in CI:
    TorchServe 'Failed to bind ... Address already in use' on its gRPC port). Ports below the
    range are only ever taken by explicit binds. Never the same port twice in one process.
    """
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(max(1024, low - 12000), low) if low > 2048 else 0
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no free TCP port found below the ephemeral range")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start_group(command: list[str], log_file: Path, cwd: Path, env: dict[str, str] | None = None,
                cpus: list[int] | None = None) -> subprocess.Popen:
    """Start `command` in its own process group (so stop_group ends every child), output to log_file.

    With `cpus`, it and everything it forks run on those CPUs only.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=(lambda: pin_self(cpus)) if cpus else None)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pgid)
            if not group_alive(pgid):
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_http_ok(url: str, timeout: float, alive=lambda: True, headers: dict[str, str] | None = None) -> bool:
    """Poll `url` until it answers 200, the deadline passes, or alive() turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.3)
    return False


def log_tail(log_file: Path, lines: int = 30) -> str:
    if not log_file.exists():
        return "(no log)"
    return "\n".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
