"""A throwaway ``consul agent -dev`` on free loopback ports, for the tests and the bench (the same
arguments as the Rust tests' ``ConsulDev``). The agent dies with the process that started it
(``PR_SET_PDEATHSIG``), and is killed at exit and by ``stop()``.

The binary: ``$CONSUL_BIN``, else what ``scripts/install-consul.sh`` installs (its last line)."""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def consul_binary() -> str:
    env = os.environ.get("CONSUL_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise RuntimeError(f"CONSUL_BIN={env} is not an executable file")
        return env
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-consul.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class ConsulDev:
    """A running dev agent: ``addr`` (``http://127.0.0.1:PORT``) and a few raw HTTP helpers used to
    check what is left in Consul (independent of consul_lock)."""

    def __init__(self) -> None:
        binary = consul_binary()
        last: Exception | None = None
        for _ in range(3):
            try:
                self._start(binary)
                return
            except Exception as e:  # a port taken between probing and binding: try again
                last = e
        raise RuntimeError(f"cannot start a Consul dev agent with {binary}: {last}")

    def _start(self, binary: str) -> None:
        ports = _free_ports(4)
        self.dir = tempfile.mkdtemp(prefix="consul-lock-py-")
        log = open(os.path.join(self.dir, "consul.log"), "wb")  # noqa: SIM115
        self.port = ports[0]
        self.addr = f"http://127.0.0.1:{ports[0]}"
        args = [binary, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1"]
        args += ["-http-port", str(ports[0]), "-serf-lan-port", str(ports[1])]
        args += ["-serf-wan-port", str(ports[2]), "-server-port", str(ports[3])]
        args += ["-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn", "-node", f"py-{ports[0]}"]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent
        )
        atexit.register(self.stop)
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            if self.proc.poll() is not None:
                tail = Path(self.dir, "consul.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"consul agent exited early ({self.proc.returncode}):\n{tail}")
            try:
                if ":" in str(self.get("/v1/status/leader")):
                    sid = self.put("/v1/session/create", {"TTL": "10s"})["ID"]
                    self.put(f"/v1/session/destroy/{sid}")
                    return
            except (OSError, urllib.error.URLError, KeyError, TypeError, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"consul agent at {self.addr} not ready within 30 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.addr + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        try:
            return self.request("GET", path)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def put(self, path: str, body: Any = None) -> Any:
        return self.request("PUT", path, body)

    def sessions(self) -> list[dict[str, Any]]:
        return list(self.get("/v1/session/list") or [])

    def keys(self, prefix: str) -> list[str]:
        return list(self.get(f"/v1/kv/{prefix}?keys") or [])

    def kv(self, key: str) -> dict[str, Any] | None:
        got = self.get(f"/v1/kv/{key}")
        return got[0] if got else None

    def sessions_named(self, fragment: str) -> list[dict[str, Any]]:
        return [s for s in self.sessions() if fragment in str(s.get("Name", ""))]

    def wait_until(self, what: str, check: Any, timeout: float = 5.0) -> None:
        """Poll ``check()`` until true; fail with ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still not true after {timeout} s")
            time.sleep(0.02)
