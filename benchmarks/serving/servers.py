"""Servers under test as child processes: free loopback ports, readiness, memory, CPU, stop.

Only processes this benchmark started are ever signalled, and only by PID: the server's own
PID first (SIGTERM, a graceful stop), then, if it outlives the grace period, each PID of the
process tree recorded while it ran (SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from common import free_port

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int

    @classmethod
    def pick(cls) -> Ports:
        http = free_port()
        grpc = free_port()
        while grpc == http:
            grpc = free_port()
        return cls(http, grpc)

    def url(self, protocol: str) -> str:
        """The address perf_analyzer's ``-u`` takes for ``protocol`` (grpc, http, grpc-shm)."""
        return f"{LOOPBACK}:{self.http if protocol == 'http' else self.grpc}"


def http_status(
    url: str,
    timeout: float = 1.0,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> int | None:
    """The HTTP status of GET ``url``, or None when nothing answers."""
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class ServerProcess:
    """One server under test; ``start`` returns once it is ready (or raises)."""

    name: str
    command: list[str]
    ports: Ports
    model: str
    log_path: Path
    env: dict[str, str] | None = None
    tls_context: ssl.SSLContext | None = None  # the server speaks HTTPS; readiness uses this
    headers: dict[str, str] | None = None  # sent with the readiness checks (an API key)
    startup_s: float | None = None
    _proc: subprocess.Popen | None = None
    _known: dict[int, float] = field(default_factory=dict)  # pid -> create_time

    def start(self, timeout_s: float = 180.0) -> float:
        """Start the process; seconds from spawn to health-ready and model-ready both 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, **(self.env or {})}
        t0 = time.perf_counter()
        self._proc = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
        log.close()
        scheme = "http" if self.tls_context is None else "https"
        base = f"{scheme}://{self.ports.url('http')}/v2"
        urls = (f"{base}/health/ready", f"{base}/models/{self.model}/ready")
        polls = 0
        while time.perf_counter() - t0 < timeout_s:
            if self._proc.poll() is not None:
                self._kill_leftovers()
                raise RuntimeError(
                    f"{self.name} exited with {self._proc.returncode}; see {self.log_path}"
                )
            if all(
                http_status(u, context=self.tls_context, headers=self.headers) == 200 for u in urls
            ):
                self.startup_s = time.perf_counter() - t0
                self.tree()
                return self.startup_s
            if polls % 10 == 0:
                self.tree()  # learn child PIDs early: a failed start may leave them behind
            polls += 1
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.name} not ready within {timeout_s:.0f} s; see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def tree(self) -> list[psutil.Process]:
        """The server process and all its descendants that are alive now."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            self._known.setdefault(p.pid, _safe(p.create_time, 0.0))
        return procs

    def rss_bytes(self) -> int:
        """Sum of the resident set sizes of the process tree (shared pages counted per process)."""
        return sum(_safe(lambda p=p: p.memory_info().rss, 0) for p in self.tree())

    def pss_bytes(self) -> int | None:
        """Sum of proportional set sizes (shared pages split between processes), if readable."""
        values = [_safe(lambda p=p: p.memory_full_info().pss, None) for p in self.tree()]
        return None if any(v is None for v in values) else sum(values)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds consumed so far by the live process tree."""
        total = 0.0
        for p in self.tree():
            times = _safe(p.cpu_times, None)
            if times is not None:
                total += times.user + times.system
        return total

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM the server, wait up to ``grace_s``, then SIGKILL what is left of its tree."""
        if self._proc is None:
            return None
        self.tree()
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._kill_leftovers()
        return self._proc.returncode

    def _kill_leftovers(self) -> None:
        """SIGKILL descendants that outlived the server (re-parented, so found by PID)."""
        for pid, created in self._known.items():
            if pid == self.pid:
                continue
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created:  # the same process, not a reused PID
                    proc.kill()


def _safe(fn, default):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return default
